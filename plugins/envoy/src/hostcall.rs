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
}
