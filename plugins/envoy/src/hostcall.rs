//! Hostcalls that return the host's status instead of panicking.

use proxy_wasm::types::{MapType, Status};

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
}

const OK: u32 = Status::Ok as u32;
const HTTP_REQUEST_STREAM: u32 = 0;

fn check(status: u32) -> Result<(), u32> {
    if status == OK {
        Ok(())
    } else {
        Err(status)
    }
}

/// Serializes a header map as the ABI wants: count, sizes, NUL-terminated bytes.
fn serialize(headers: &[(&str, &str)]) -> Vec<u8> {
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
            let Some(i) = names.iter().position(|n| n.as_bytes() == name) else {
                continue;
            };
            if !seen[i] {
                seen[i] = true;
                found[i] = std::str::from_utf8(value).ok();
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
            .find(|(n, _)| *n == name.as_bytes())
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// The current request's headers, in one host call.
pub fn request_headers() -> Result<Headers, u32> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer and length into our two locals.
    check(unsafe {
        proxy_get_header_map_pairs(MapType::HttpRequestHeaders as u32, &mut data, &mut size)
    })?;
    if data.is_null() || size == 0 {
        return Ok(Headers::default());
    }
    // SAFETY: the host allocated `size` bytes through the SDK's
    // `proxy_on_memory_allocate` (a `Vec<u8>` of capacity `size`) and hands
    // them over to us.
    Ok(Headers::from_serialized(unsafe {
        Vec::from_raw_parts(data, size, size)
    }))
}

/// Answers the current HTTP context locally.
pub fn send_local_response(status: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), u32> {
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
pub fn resume_request() -> Result<(), u32> {
    // SAFETY: plain value arguments.
    check(unsafe { proxy_continue_stream(HTTP_REQUEST_STREAM) })
}

/// Sets (replaces) a request header on the current context.
pub fn set_request_header(name: &str, value: &str) -> Result<(), u32> {
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
pub fn remove_request_header(name: &str) -> Result<(), u32> {
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
pub fn set_effective_context(context_id: u32) -> Result<(), u32> {
    // SAFETY: plain value argument.
    check(unsafe { proxy_set_effective_context(context_id) })
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
