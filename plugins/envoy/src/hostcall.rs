//! Hostcalls that return the host's status instead of panicking.
//!
//! The SDK's `proxy_wasm::hostcalls::*` functions (and the trait methods
//! built on them) panic on any status they do not expect, and a panic kills
//! the worker's VM in Envoy: every later request on it gets 503. The raw ABI
//! imports are declared here and every wrapper returns `Result<_, Status>`;
//! `clippy.toml` refuses the SDK's panicking functions in the plugins.

use agentward_core::bytes;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, Status};
use std::time::Duration;

#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
}

const HTTP_REQUEST_STREAM: u32 = 0;

/// The host's answer as a `Result`; a code the SDK has no name for is an
/// `InternalFailure`.
fn check(code: u32) -> Result<(), Status> {
    Err(match code {
        0 => return Ok(()),
        1 => Status::NotFound,
        2 => Status::BadArgument,
        3 => Status::SerializationFailure,
        4 => Status::ParseFailure,
        7 => Status::Empty,
        8 => Status::CasMismatch,
        _ => Status::InternalFailure,
    })
}

/// Takes over bytes the host returned: it allocated them through the SDK's
/// `proxy_on_memory_allocate` (a `Vec<u8>` of capacity `size`).
///
/// # Safety
/// `data` is null or `size` bytes the host allocated that way for this call.
unsafe fn returned(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        return None;
    }
    // SAFETY: see the function's contract.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// Serializes a header map as the ABI wants: count, sizes, NUL-terminated bytes.
pub(crate) fn serialize(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut size = 4;
    for (n, v) in headers {
        size += 8 + n.len() + v.len() + 2;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (n, v) in headers {
        out.extend_from_slice(&(n.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (n, v) in headers {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// A header map as the host serialized it, read in place: one host call
/// for the whole map instead of one per header, and no copy per header.
#[derive(Debug, Default)]
pub struct Headers {
    bytes: Vec<u8>,
}

impl Headers {
    /// Wraps a map serialized as the ABI does (see [`serialize`]).
    pub fn from_serialized(bytes: Vec<u8>) -> Headers {
        Headers { bytes }
    }

    /// The name/value pairs, in order; stops at the first malformed entry.
    pub fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let b = self.bytes.as_slice();
        let word = |at: usize| -> Option<usize> {
            let w: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
            Some(u32::from_le_bytes(w) as usize)
        };
        let count = word(0).unwrap_or(0);
        let mut data = 4usize.saturating_add(count.saturating_mul(8));
        (0..count).map_while(move |i| {
            let (n, v) = (word(4 + 8 * i)?, word(8 + 8 * i)?);
            let name = b.get(data..data.checked_add(n)?)?;
            let value_at = data.checked_add(n + 1)?;
            let value = b.get(value_at..value_at.checked_add(v)?)?;
            data = value_at + v + 1;
            Some((name, value))
        })
    }

    /// The first values of several headers (lowercase names), in one pass
    /// over the map; each when it is there and UTF-8.
    pub fn get_many<const N: usize>(&self, names: [&str; N]) -> [Option<&str>; N] {
        let mut found = [None; N];
        let mut seen = [false; N];
        let mut left = N;
        for (name, value) in self.pairs() {
            let Some(i) = names.iter().position(|n| bytes::eq(n.as_bytes(), name)) else {
                continue;
            };
            if !seen[i] {
                seen[i] = true;
                found[i] = bytes::utf8(value);
                left -= 1;
                if left == 0 {
                    break;
                }
            }
        }
        found
    }

    /// The first value of header `name` (lowercase, as Envoy keeps them),
    /// when it is there and UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs()
            .find(|(n, _)| bytes::eq(n, name.as_bytes()))
            .and_then(|(_, v)| bytes::utf8(v))
    }
}

/// The current request's headers, in one host call.
pub fn request_headers() -> Result<Headers, Status> {
    header_map(MapType::HttpRequestHeaders)
}

/// The current callout answer's headers (`:status` included), in one host call.
pub fn http_call_response_headers() -> Result<Headers, Status> {
    header_map(MapType::HttpCallResponseHeaders)
}

fn header_map(map: MapType) -> Result<Headers, Status> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer and length into our two locals.
    check(unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) })?;
    // SAFETY: the host returned these bytes for this call.
    Ok(unsafe { returned(data, size) }.map_or_else(Headers::default, Headers::from_serialized))
}

/// Answers the current HTTP context locally.
pub fn send_local_response(
    status: u32,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), Status> {
    let map = serialize(headers);
    // SAFETY: pointers and lengths describe live buffers for the call's duration.
    check(unsafe {
        proxy_send_local_response(
            status,
            std::ptr::null(),
            0,
            body.as_ptr(),
            body.len(),
            map.as_ptr(),
            map.len(),
            -1,
        )
    })
}

/// Resumes the current (held) HTTP request.
pub fn resume_request() -> Result<(), Status> {
    // SAFETY: plain value arguments.
    check(unsafe { proxy_continue_stream(HTTP_REQUEST_STREAM) })
}

/// Sets (replaces) a request header on the current context.
pub fn set_request_header(name: &str, value: &str) -> Result<(), Status> {
    // SAFETY: pointers and lengths describe live strings.
    check(unsafe {
        proxy_replace_header_map_value(
            MapType::HttpRequestHeaders as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Removes a request header on the current context.
pub fn remove_request_header(name: &str) -> Result<(), Status> {
    // SAFETY: pointer and length describe a live string.
    check(unsafe {
        proxy_remove_header_map_value(
            MapType::HttpRequestHeaders as u32,
            name.as_ptr(),
            name.len(),
        )
    })
}

/// Makes `context_id` current; fails when that context is gone (client left).
pub fn set_effective_context(context_id: u32) -> Result<(), Status> {
    // SAFETY: plain value argument.
    check(unsafe { proxy_set_effective_context(context_id) })
}

/// A value of the current callout answer's headers (`:status`, …);
/// `None` when the answer has no such header.
pub fn http_call_response_header(name: &str) -> Result<Option<String>, Status> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the name is a live string; the host writes into our two locals.
    let code = unsafe {
        proxy_get_header_map_value(
            MapType::HttpCallResponseHeaders as u32,
            name.as_ptr(),
            name.len(),
            &mut data,
            &mut size,
        )
    };
    match check(code) {
        Ok(()) => {}
        Err(Status::NotFound) => return Ok(None),
        Err(status) => return Err(status),
    }
    // SAFETY: the host returned these bytes for this call.
    let bytes = unsafe { returned(data, size) }.unwrap_or_default();
    Ok(String::from_utf8(bytes).ok())
}

/// Up to `max_size` bytes of a buffer from `start`; `None` when the host
/// has no such buffer (or it is empty).
pub fn buffer(kind: BufferType, start: usize, max_size: usize) -> Result<Option<Vec<u8>>, Status> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: plain values in; the host writes into our two locals.
    let code =
        unsafe { proxy_get_buffer_bytes(kind as u32, start, max_size, &mut data, &mut size) };
    match check(code) {
        Ok(()) => {}
        Err(Status::NotFound) => return Ok(None),
        Err(status) => return Err(status),
    }
    // SAFETY: the host returned these bytes for this call.
    Ok(unsafe { returned(data, size) })
}

/// Replaces `size` bytes of a buffer from `start` with `bytes` (Envoy:
/// `start` 0 and `size` at least the buffer's length replace it all).
pub fn set_buffer(kind: BufferType, start: usize, size: usize, bytes: &[u8]) -> Result<(), Status> {
    // SAFETY: pointer and length describe a live slice.
    check(unsafe { proxy_set_buffer_bytes(kind as u32, start, size, bytes.as_ptr(), bytes.len()) })
}

/// Writes a line to the host's log.
pub fn log(level: LogLevel, message: &str) -> Result<(), Status> {
    // SAFETY: pointer and length describe a live string.
    check(unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) })
}

/// The host's clock, in nanoseconds since the Unix epoch.
pub fn now_nanos() -> Result<u64, Status> {
    let mut nanos = 0u64;
    // SAFETY: the host writes one u64 into our local.
    check(unsafe { proxy_get_current_time_nanoseconds(&mut nanos) })?;
    Ok(nanos)
}

/// Asks the host to call `proxy_on_tick` every `period` (whole milliseconds).
pub fn set_tick_period(period: Duration) -> Result<(), Status> {
    let ms = u32::try_from(period.as_millis()).map_err(|_| Status::BadArgument)?;
    // SAFETY: plain value argument.
    check(unsafe { proxy_set_tick_period_milliseconds(ms) })
}

/// A property of the current stream or plugin, by a one-segment path (a
/// path of several segments joins them with NUL bytes); `None` when the
/// host has none. In Envoy a path that no built-in attribute claims reads
/// the filter state `wasm.<path>` that a wasm filter set on this stream.
pub fn property(path: &str) -> Result<Option<Vec<u8>>, Status> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the path is a live string; the host writes into our two locals.
    let code = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    match check(code) {
        Ok(()) => {}
        Err(Status::NotFound) => return Ok(None),
        Err(status) => return Err(status),
    }
    // SAFETY: the host returned these bytes for this call.
    Ok(unsafe { returned(data, size) })
}

/// Sets a property of the current stream (Envoy: the filter state
/// `wasm.<path>`, readable by the later filters of the same request).
pub fn set_property(path: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: pointers and lengths describe live buffers.
    check(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

/// A shared-data value and its CAS; `None` when the key is not there.
pub fn shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, Status> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    let mut cas = 0u32;
    // SAFETY: the key is a live string; the host writes into our three locals.
    let code =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match check(code) {
        Ok(()) => {}
        Err(Status::NotFound) => return Ok(None),
        Err(status) => return Err(status),
    }
    // SAFETY: the host returned these bytes for this call.
    Ok(Some((
        unsafe { returned(data, size) }.unwrap_or_default(),
        cas,
    )))
}

/// Stores a shared-data value; `cas` 0 always writes, another value fails
/// with `CasMismatch` when the entry changed since it was read.
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
    // SAFETY: pointers and lengths describe live buffers.
    check(unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

/// Starts a callout to `cluster`; its answer comes to the context that made
/// it (`on_http_call_response`) under the returned token.
///
/// This is the one call that still goes through the SDK: the SDK must record
/// the token to route the answer, and it offers no other way to record it.
/// The SDK panics on a status other than `Ok`, `BadArgument` and
/// `InternalFailure`; Envoy's `proxy_http_call` answers no other.
pub fn dispatch_http_call(
    cluster: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<u32, Status> {
    #[allow(clippy::disallowed_methods)] // see above: the SDK routes the answer
    proxy_wasm::hostcalls::dispatch_http_call(cluster, headers.to_vec(), body, vec![], timeout)
}

/// Calls the host's foreign function `name`; `NotFound` when it has none.
pub fn call_foreign_function(name: &str, arguments: &[u8]) -> Result<Option<Vec<u8>>, Status> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: pointers and lengths describe live buffers; the host writes
    // into our two locals.
    check(unsafe {
        proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            arguments.as_ptr(),
            arguments.len(),
            &mut data,
            &mut size,
        )
    })?;
    // SAFETY: the host returned these bytes for this call.
    Ok(unsafe { returned(data, size) })
}

/// Defines (or finds) a metric; returns its id.
pub fn define_metric(kind: MetricType, name: &str) -> Result<u32, Status> {
    let mut id = 0u32;
    // SAFETY: the name is a live string; the host writes into our local.
    check(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// Adds `offset` to a counter or gauge.
pub fn increment_metric(id: u32, offset: i64) -> Result<(), Status> {
    // SAFETY: plain value arguments.
    check(unsafe { proxy_increment_metric(id, offset) })
}

// The response side (scope-fga's response filtering): its own block of
// imports, so the request side can grow without touching it.
#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    #[link_name = "proxy_continue_stream"]
    fn proxy_continue_stream_response(stream_type: u32) -> u32;
    #[link_name = "proxy_remove_header_map_value"]
    fn proxy_remove_response_header(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    #[link_name = "proxy_set_buffer_bytes"]
    fn proxy_set_response_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        data: *const u8,
        data_size: usize,
    ) -> u32;
}

const HTTP_RESPONSE_STREAM: u32 = 1;

/// The current response's headers (`:status` included), in one host call.
pub fn response_headers() -> Result<Headers, Status> {
    header_map(MapType::HttpResponseHeaders)
}

/// Removes a response header on the current context (only while the
/// response headers are held: in `on_http_response_headers`).
pub fn remove_response_header(name: &str) -> Result<(), Status> {
    // SAFETY: pointer and length describe a live string.
    check(unsafe {
        proxy_remove_response_header(
            MapType::HttpResponseHeaders as u32,
            name.as_ptr(),
            name.len(),
        )
    })
}

/// Replaces the whole buffered response body of the current context.
pub fn replace_response_body(body: &[u8]) -> Result<(), Status> {
    // SAFETY: pointer and length describe a live buffer. Start 0 with a
    // size of at least the buffer's length replaces all of it.
    check(unsafe {
        proxy_set_response_buffer_bytes(
            BufferType::HttpResponseBody as u32,
            0,
            usize::MAX >> 1,
            body.as_ptr(),
            body.len(),
        )
    })
}

/// Resumes the current (held) HTTP response.
pub fn resume_response() -> Result<(), Status> {
    // SAFETY: plain value arguments.
    check(unsafe { proxy_continue_stream_response(HTTP_RESPONSE_STREAM) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_serialization_layout() {
        let bytes = serialize(&[("a", "bc")]);
        assert_eq!(
            bytes,
            [1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, b'a', 0, b'b', b'c', 0]
        );
    }

    #[test]
    fn headers_read_in_place() {
        let h = Headers::from_serialized(serialize(&[
            (":method", "GET"),
            ("x", ""),
            ("authorization", "Bearer t"),
            ("x", "second"),
        ]));
        assert_eq!(h.get(":method"), Some("GET"));
        assert_eq!(h.get("x"), Some(""));
        assert_eq!(h.get("authorization"), Some("Bearer t"));
        assert_eq!(h.get("missing"), None);
        assert_eq!(h.pairs().count(), 4);
        assert_eq!(Headers::default().get(":path"), None);
        assert_eq!(
            h.get_many(["x", "missing", ":method"]),
            [Some(""), None, Some("GET")]
        );
        assert_eq!(Headers::default().get_many(["x"]), [None]);
    }

    #[test]
    fn malformed_maps_end_early() {
        let full = serialize(&[("a", "1"), ("b", "2")]);
        // Only the last value's closing NUL may be missing.
        for cut in 0..full.len() - 1 {
            let h = Headers::from_serialized(full[..cut].to_vec());
            assert!(h.pairs().count() < 2, "cut at {cut}");
        }
        let mut huge = full.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Headers::from_serialized(huge).pairs().count(), 0);
        assert_eq!(Headers::from_serialized(full).get("b"), Some("2"));
    }
}
