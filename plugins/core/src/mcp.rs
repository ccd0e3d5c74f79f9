//! MCP over Streamable HTTP, as a gateway sees it: which JSON-RPC method a
//! POST body calls and on what (the tool of `tools/call`, the prompt of
//! `prompts/get`, the resource of `resources/read`), the `Mcp-Method` and
//! `Mcp-Name` headers (MCP 2026-07-28) that mirror them, and whether the two
//! agree. A server must refuse a header that disagrees with the body
//! (JSON-RPC `-32020`, HTTP 400), and so must a gateway that decided from the
//! header. Clients of 2025-11-25 send no such headers: the body decides.

use crate::response::LocalResponse;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use serde_json::error::Category;
use serde_json::{json, Value};
use std::borrow::Cow;

/// The header that mirrors the JSON-RPC `method` (lower case, as HTTP/2 sends it).
pub const METHOD_HEADER: &str = "mcp-method";
/// The header that mirrors the tool, prompt or resource a request names.
pub const NAME_HEADER: &str = "mcp-name";
/// JSON-RPC error: a header does not match the body, or is missing or malformed.
pub const HEADER_MISMATCH: i64 = -32020;
/// JSON-RPC error: the body is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC error: the body is not one JSON-RPC 2.0 request or notification.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC error: the params lack the name the method needs.
pub const INVALID_PARAMS: i64 = -32602;
/// A bound for request bodies a gateway reads to decide (1 MiB, Envoy's
/// default buffer limit); tool arguments larger than that are rare.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The field of `params` that `Mcp-Name` mirrors, for the methods that name something.
pub fn name_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// One JSON-RPC request (or notification) read from a POST body.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The JSON-RPC `method`.
    pub method: String,
    /// What the method names (`params.name` or `params.uri`, see [`name_field`]).
    pub name: Option<String>,
    /// The request's `id` (absent for a notification), for an error answer.
    pub id: Option<Value>,
}

impl Message {
    /// The tool a `tools/call` calls.
    pub fn tool(&self) -> Option<&str> {
        (self.method == "tools/call")
            .then_some(self.name.as_deref())
            .flatten()
    }
}

/// Why a body is not a request the gateway can decide on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRefusal {
    /// Larger than the bound the caller gave.
    TooLarge,
    /// Not JSON.
    NotJson,
    /// Not one JSON-RPC 2.0 request object (a batch, no `method`, …).
    NotRequest,
    /// A method that names something without that name (a string).
    MissingName,
}

impl BodyRefusal {
    /// The answer: 413 for a body over the bound, else 400 with a JSON-RPC error.
    pub fn response(self) -> LocalResponse {
        let (status, code, message) = match self {
            BodyRefusal::TooLarge => (413, INVALID_REQUEST, "the request body is too large"),
            BodyRefusal::NotJson => (400, PARSE_ERROR, "the request body is not JSON"),
            BodyRefusal::NotRequest => (
                400,
                INVALID_REQUEST,
                "the request body is not one JSON-RPC 2.0 request",
            ),
            BodyRefusal::MissingName => (
                400,
                INVALID_PARAMS,
                "the request's params lack the name its method needs",
            ),
        };
        json_rpc_error(status, None, code, message)
    }
}

#[derive(Deserialize)]
struct RawMessage {
    jsonrpc: String,
    method: String,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    params: Option<RawParams>,
}

#[derive(Deserialize)]
struct RawParams {
    #[serde(default)]
    name: Option<Value>,
    #[serde(default)]
    uri: Option<Value>,
}

/// Reads a POST body of at most `max_bytes` as one JSON-RPC request.
pub fn read_message(body: &[u8], max_bytes: usize) -> Result<Message, BodyRefusal> {
    if body.len() > max_bytes {
        return Err(BodyRefusal::TooLarge);
    }
    // Arguments and metadata are skipped as they are read, not kept.
    let raw: RawMessage = serde_json::from_slice(body).map_err(|e| match e.classify() {
        Category::Data => BodyRefusal::NotRequest,
        _ => BodyRefusal::NotJson,
    })?;
    if raw.jsonrpc != "2.0" || raw.method.is_empty() {
        return Err(BodyRefusal::NotRequest);
    }
    let name = match name_field(&raw.method) {
        None => None,
        Some(field) => {
            let params = raw.params.as_ref().ok_or(BodyRefusal::MissingName)?;
            let value = if field == "uri" {
                &params.uri
            } else {
                &params.name
            };
            match value {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                _ => return Err(BodyRefusal::MissingName),
            }
        }
    };
    Ok(Message {
        method: raw.method,
        name,
        id: raw.id,
    })
}

/// The `Mcp-Method` and `Mcp-Name` headers of a request, as sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct McpHeaders<'a> {
    /// `Mcp-Method`.
    pub method: Option<&'a str>,
    /// `Mcp-Name`, possibly `=?base64?…?=`-encoded.
    pub name: Option<&'a str>,
}

impl<'a> McpHeaders<'a> {
    /// Reads both headers through `header` (a lookup by lower-case name).
    pub fn read(header: impl Fn(&str) -> Option<&'a str>) -> McpHeaders<'a> {
        McpHeaders {
            method: header(METHOD_HEADER),
            name: header(NAME_HEADER),
        }
    }

    /// `Mcp-Name`'s value: decoded when sent as `=?base64?…?=` (for names
    /// that are not plain printable ASCII); `Err` when that encoding is broken.
    pub fn decoded_name(&self) -> Result<Option<Cow<'a, str>>, Mismatch> {
        let Some(raw) = self.name else {
            return Ok(None);
        };
        match raw
            .strip_prefix("=?base64?")
            .and_then(|r| r.strip_suffix("?="))
        {
            None => Ok(Some(Cow::Borrowed(raw.trim()))),
            Some(encoded) => STANDARD
                .decode(encoded)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .map(|name| Some(Cow::Owned(name)))
                .ok_or(Mismatch::Name),
        }
    }

    /// Whether the headers agree with the body: each header that is sent
    /// must equal what the body says, and a request whose `Mcp-Method`
    /// names a method that names something must send `Mcp-Name`. No
    /// headers at all (an older client) agree with any body.
    pub fn agree_with(&self, message: &Message) -> Result<(), Mismatch> {
        if let Some(method) = self.method {
            if method.trim() != message.method {
                return Err(Mismatch::Method);
            }
        }
        let name = self.decoded_name()?;
        match (name, message.name.as_deref()) {
            (None, Some(_)) if self.method.is_some() => Err(Mismatch::Name),
            (None, _) => Ok(()),
            (Some(header), Some(body)) if header == body => Ok(()),
            (Some(_), _) => Err(Mismatch::Name),
        }
    }
}

/// Which header disagrees with the body (or is missing or malformed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// `Mcp-Method`.
    Method,
    /// `Mcp-Name`.
    Name,
}

impl Mismatch {
    /// The answer: HTTP 400 with JSON-RPC error `-32020` for request `id`;
    /// names the header, echoes neither value.
    pub fn response(self, id: Option<&Value>) -> LocalResponse {
        let message = match self {
            Mismatch::Method => "the Mcp-Method header does not match the request body",
            Mismatch::Name => {
                "the Mcp-Name header is missing, malformed or does not match the request body"
            }
        };
        json_rpc_error(400, id, HEADER_MISMATCH, message)
    }
}

/// A JSON-RPC error answer with this HTTP status (`id` `null` when unknown).
pub fn json_rpc_error(status: u32, id: Option<&Value>, code: i64, message: &str) -> LocalResponse {
    LocalResponse::json(
        status,
        json!({
            "jsonrpc": "2.0",
            "id": id.cloned().unwrap_or(Value::Null),
            "error": {"code": code, "message": message},
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: &str) -> Result<Message, BodyRefusal> {
        read_message(body.as_bytes(), MAX_BODY_BYTES)
    }

    fn headers<'a>(method: Option<&'a str>, name: Option<&'a str>) -> McpHeaders<'a> {
        McpHeaders { method, name }
    }

    #[test]
    fn a_tool_call_names_its_tool() {
        let m = read(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"place_order","arguments":{"qty":[1,2,{"x":null}]}}}"#).unwrap();
        assert_eq!(m.method, "tools/call");
        assert_eq!(m.tool(), Some("place_order"));
        assert_eq!(m.id, Some(json!(7)));
    }

    #[test]
    fn prompts_and_resources_name_theirs_and_other_methods_name_nothing() {
        let p = read(
            r#"{"jsonrpc":"2.0","id":"a","method":"prompts/get","params":{"name":"summary"}}"#,
        )
        .unwrap();
        assert_eq!((p.name.as_deref(), p.tool()), (Some("summary"), None));
        let r = read(r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a","name":"x"}}"#).unwrap();
        assert_eq!(r.name.as_deref(), Some("file:///a"));
        let l = read(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        assert_eq!(l.name, None);
        let n = read(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(n.id, None);
    }

    #[test]
    fn bodies_that_are_not_one_request_are_refused() {
        for (body, why) in [
            ("{", BodyRefusal::NotJson),
            ("[]", BodyRefusal::NotRequest),
            (
                r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#,
                BodyRefusal::NotRequest,
            ),
            (
                r#"{"jsonrpc":"1.0","id":1,"method":"tools/list"}"#,
                BodyRefusal::NotRequest,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
                BodyRefusal::NotRequest,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
                BodyRefusal::NotRequest,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
                BodyRefusal::MissingName,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":3}}"#,
                BodyRefusal::MissingName,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"name":"x"}}"#,
                BodyRefusal::MissingName,
            ),
        ] {
            assert_eq!(read(body), Err(why), "{body}");
        }
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        assert_eq!(
            read_message(body, body.len() - 1),
            Err(BodyRefusal::TooLarge)
        );
        assert_eq!(BodyRefusal::TooLarge.response().status, 413);
        assert_eq!(BodyRefusal::NotJson.response().status, 400);
    }

    #[test]
    fn headers_that_agree_with_the_body_pass() {
        let call =
            read(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"buy"}}"#)
                .unwrap();
        assert_eq!(
            headers(Some("tools/call"), Some("buy")).agree_with(&call),
            Ok(())
        );
        assert_eq!(
            headers(None, None).agree_with(&call),
            Ok(()),
            "an older client"
        );
        let encoded = format!("=?base64?{}?=", STANDARD.encode("buy"));
        assert_eq!(
            headers(Some("tools/call"), Some(&encoded)).agree_with(&call),
            Ok(())
        );
        let list = read(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        assert_eq!(headers(Some("tools/list"), None).agree_with(&list), Ok(()));
    }

    #[test]
    fn headers_that_disagree_with_the_body_get_32020_and_400() {
        let call =
            read(r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"buy"}}"#)
                .unwrap();
        for (h, why) in [
            (headers(Some("tools/list"), Some("buy")), Mismatch::Method),
            (headers(Some("tools/call"), Some("sell")), Mismatch::Name),
            (headers(Some("tools/call"), None), Mismatch::Name),
            (headers(None, Some("sell")), Mismatch::Name),
            (
                headers(Some("tools/call"), Some("=?base64?!!?=")),
                Mismatch::Name,
            ),
        ] {
            assert_eq!(h.agree_with(&call), Err(why), "{h:?}");
        }
        let list = read(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        assert_eq!(
            headers(Some("tools/list"), Some("x")).agree_with(&list),
            Err(Mismatch::Name)
        );

        let answer = Mismatch::Name.response(call.id.as_ref());
        assert_eq!(answer.status, 400);
        let body: Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(body["error"]["code"], json!(-32020));
        assert_eq!(body["id"], json!(9));
        assert!(!answer.body.contains("sell") && !answer.body.contains("buy"));
    }

    #[test]
    fn headers_are_read_by_their_lower_case_names() {
        let h = McpHeaders::read(|name| match name {
            "mcp-method" => Some("tools/call"),
            "mcp-name" => Some("buy"),
            _ => None,
        });
        assert_eq!(h, headers(Some("tools/call"), Some("buy")));
    }
}
