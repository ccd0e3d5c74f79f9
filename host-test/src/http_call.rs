//! Callouts (`proxy_http_call`): what the plugin asked for, and a small
//! blocking HTTP/1.1 client for clusters that forward to a real local server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::headers::HeaderMap;

/// Where a cluster's callouts go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cluster {
    /// The test answers with [`Host::answer_http_call`](crate::Host::answer_http_call).
    Manual,
    /// The host sends the request to this address and feeds the answer back.
    Forward(SocketAddr),
}

/// Where a callout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallState {
    /// Dispatched, not answered yet.
    Pending,
    /// Answered with this HTTP status.
    Answered(u16),
    /// Failed (reset, timeout, unreachable): the plugin saw no headers.
    Failed,
    /// The calling HTTP context finished first; nothing was delivered.
    Cancelled,
}

/// One `proxy_http_call`, as the plugin made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCall {
    /// The token returned to the plugin.
    pub token: u32,
    /// The context that made the call (1 is the root context).
    pub context_id: u32,
    /// The upstream cluster name.
    pub cluster: String,
    /// Request headers, pseudo-headers included.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Vec<u8>,
    /// Request trailers.
    pub trailers: HeaderMap,
    /// The timeout the plugin asked for.
    pub timeout: Duration,
    /// Where the call stands.
    pub state: CallState,
}

impl HttpCall {
    /// A request header (or pseudo-header such as `:path`).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
}

/// The answer to a callout, as the plugin reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpCallResponse {
    /// Response headers, `:status` included.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Vec<u8>,
    /// Response trailers.
    pub trailers: HeaderMap,
}

impl HttpCallResponse {
    /// An answer with `status`, `headers` and `body`.
    pub fn new(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Self {
        let mut map = HeaderMap::from_pairs(&[(":status", status.to_string())]);
        for (name, value) in headers {
            map.add(name, value);
        }
        Self {
            headers: map,
            body: body.to_vec(),
            trailers: HeaderMap::default(),
        }
    }

    /// The `:status`, when it is a number.
    pub fn status(&self) -> Option<u16> {
        self.headers.get(":status")?.parse().ok()
    }
}

/// Sends `call` to `address` over HTTP/1.1 and reads the whole answer;
/// `None` on any failure, as Envoy reports a reset or a timeout.
pub(crate) fn forward(address: SocketAddr, call: &HttpCall) -> Option<HttpCallResponse> {
    let timeout = if call.timeout.is_zero() {
        Duration::from_secs(30)
    } else {
        call.timeout
    };
    let mut stream = TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    stream.write_all(&request_bytes(call)).ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    parse_response(&answer)
}

fn request_bytes(call: &HttpCall) -> Vec<u8> {
    let method = call.header(":method").unwrap_or("GET");
    let path = call.header(":path").unwrap_or("/");
    let authority = call.header(":authority").unwrap_or(&call.cluster);
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {authority}\r\n");
    for (name, value) in call.headers.pairs() {
        let framing = ["host", "content-length", "connection", "transfer-encoding"];
        if !name.starts_with(':') && !framing.contains(&name.as_str()) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        call.body.len()
    ));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&call.body);
    bytes
}

/// Parses a whole HTTP/1.1 response (the server closed the connection).
pub(crate) fn parse_response(bytes: &[u8]) -> Option<HttpCallResponse> {
    let head_end = bytes.windows(4).position(|window| window == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = HeaderMap::from_pairs(&[(":status", status.to_string())]);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        headers.add(name.trim(), value.trim());
    }
    let rest = &bytes[head_end + 4..];
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|value| value.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(length) = headers.get("content-length") {
        rest.get(..length.parse::<usize>().ok()?)?.to_vec()
    } else {
        rest.to_vec()
    };
    Some(HttpCallResponse {
        headers,
        body,
        trailers: HeaderMap::default(),
    })
}

fn dechunk(mut bytes: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = bytes.windows(2).position(|window| window == b"\r\n")?;
        let size_text = std::str::from_utf8(&bytes[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(bytes.get(..size)?);
        bytes = bytes.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_with_content_length_is_parsed() {
        let response =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nhiEXTRA")
                .unwrap();
        assert_eq!(response.status(), Some(200));
        assert_eq!(response.headers.get("x-a"), Some("b"));
        assert_eq!(response.body, b"hi");
    }

    #[test]
    fn chunked_response_is_reassembled() {
        let response = parse_response(
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(response.status(), Some(404));
        assert_eq!(response.body, b"abcde");
    }

    #[test]
    fn request_carries_method_path_host_and_body() {
        let call = HttpCall {
            token: 1,
            context_id: 1,
            cluster: "idp".into(),
            headers: HeaderMap::from_pairs(&[
                (":method", "POST"),
                (":path", "/token"),
                (":authority", "idp.example"),
                ("content-length", "99"),
                ("accept", "application/json"),
            ]),
            body: b"a=b".to_vec(),
            trailers: HeaderMap::default(),
            timeout: Duration::from_secs(1),
            state: CallState::Pending,
        };
        let text = String::from_utf8(request_bytes(&call)).unwrap();
        assert!(text.starts_with("POST /token HTTP/1.1\r\nhost: idp.example\r\n"));
        assert!(text.contains("accept: application/json\r\n"));
        assert!(text.ends_with("content-length: 3\r\nconnection: close\r\n\r\na=b"));
    }
}
