//! Approval pending, as an MCP client understands it (a `tools/call` on an
//! MCP route is answered in the protocol, not with an HTTP 202):
//!
//! - `MCP-Protocol-Version` 2026-07-28 and later: an `input_required`
//!   result (Multi Round-Trip Requests) whose input request is a URL-mode
//!   elicitation telling the user where to approve, with the approval handle
//!   as `requestState`. The client retries with `requestState` echoed (and
//!   an `inputResponses` answer to our elicitation); both are checked and
//!   removed before the upstream server sees the call.
//! - earlier versions (2025-11-25): the JSON-RPC error `-32042` (URL
//!   elicitation required); the client's retry carries nothing, so the
//!   gate matches it by digest ([`remembered_key`]: the sealed handle kept
//!   in the VM's shared data under the digest).
//!
//! Every refusal on the way is a JSON-RPC error too ([`refusal`]).
//!
//! A tool call's digest covers its method and `params` without `_meta`,
//! `requestState` and `inputResponses`: the JSON-RPC `id` differs between a
//! call and its retry, and `_meta` carries client bookkeeping.

use super::digest::RequestDigest;
use crate::response::LocalResponse;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// The JSON-RPC error code for "URL elicitation required" (2025-11-25).
pub const URL_ELICITATION_REQUIRED: i64 = -32042;
/// The first protocol version with Multi Round-Trip Requests.
pub const MRTR_VERSION: &str = "2026-07-28";
/// The key of the gateway's input request in `inputRequests`.
pub const INPUT_KEY: &str = "agentward_approval";
/// JSON-RPC error code of a refused approval (denied, expired, used, for
/// another call or user, declined): in MCP's implementation-defined band
/// (-32000 to -32019), clear of the SDKs' own -32000 and -32001.
pub const APPROVAL_REFUSED: i64 = -32010;
/// Prefix of the shared-data key under which a pending approval's handle
/// waits for a 2025-11-25 client's retry (see [`remembered_key`]).
pub const REMEMBERED_PREFIX: &str = "agentward.approval.mcp.";

/// How a client of this protocol version is told an approval is pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingForm {
    /// `input_required` with `requestState` (2026-07-28 and later).
    InputRequired,
    /// JSON-RPC error -32042 (2025-11-25 and earlier).
    UrlElicitationError,
}

impl PendingForm {
    /// The form for an `MCP-Protocol-Version` header (versions are dates,
    /// so they compare as text; a client without the header is an old one).
    pub fn for_version(version: Option<&str>) -> PendingForm {
        match version.map(str::trim) {
            Some(v) if v.len() == 10 && v >= MRTR_VERSION => PendingForm::InputRequired,
            _ => PendingForm::UrlElicitationError,
        }
    }
}

fn elicitation(url: &str, message: &str, elicitation_id: Option<&str>) -> Value {
    let mut params = json!({"mode": "url", "url": url, "message": message});
    // 2025-11-25 names each elicitation; 2026-07-28's URL mode has no id.
    if let (Some(id), Some(p)) = (elicitation_id, params.as_object_mut()) {
        p.insert("elicitationId".into(), Value::String(id.to_string()));
    }
    params
}

fn jsonrpc(body: Value) -> LocalResponse {
    LocalResponse::json(200, body)
}

/// The 2026-07-28 answer: an `input_required` result asking the user (by a
/// URL-mode elicitation) to approve, with the handle as `requestState`.
pub fn input_required(id: &Value, handle: &str, url: &str, message: &str) -> LocalResponse {
    jsonrpc(json!({
        "jsonrpc": "2.0",
        "id": id,
        "result": {
            "resultType": "input_required",
            "inputRequests": {
                INPUT_KEY: {
                    "method": "elicitation/create",
                    "params": elicitation(url, message, None),
                }
            },
            "requestState": handle,
        }
    }))
}

/// The 2025-11-25 answer: JSON-RPC error -32042 with one URL-mode elicitation.
pub fn url_elicitation_required(
    id: &Value,
    url: &str,
    message: &str,
    elicitation_id: &str,
) -> LocalResponse {
    jsonrpc(json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {
            "code": URL_ELICITATION_REQUIRED,
            "message": "This tool call needs the user's approval.",
            "data": {"elicitations": [elicitation(url, message, Some(elicitation_id))]},
        }
    }))
}

/// A refusal in the HTTP form (an OAuth-style JSON `error`, `reason`,
/// `error_description`) as the JSON-RPC error an MCP client reads, for
/// request `id`. An approval refused (HTTP 401 or 403: denied, expired,
/// used, another call's or user's) is error [`APPROVAL_REFUSED`] at HTTP
/// 200, the call's outcome rather than a failure of the client's
/// authorization; a bad request keeps its 400 (`-32602`) or 413
/// (`-32600`); the authority down keeps its 503 (`-32603`). The HTTP
/// form's `error` and `reason` go in `data`; its headers (`retry-after`)
/// are kept.
pub fn refusal(id: &Value, answer: &LocalResponse) -> LocalResponse {
    let body: Value = serde_json::from_str(&answer.body).unwrap_or_default();
    let (status, code) = match answer.status {
        401 | 403 => (200, APPROVAL_REFUSED),
        400 => (400, crate::mcp::INVALID_PARAMS),
        413 => (413, crate::mcp::INVALID_REQUEST),
        status => (status, INTERNAL_ERROR),
    };
    let message = body
        .get("error_description")
        .and_then(Value::as_str)
        .unwrap_or("the gateway refused this call");
    let mut data = Map::new();
    for name in ["error", "reason"] {
        if let Some(v) = body.get(name) {
            data.insert(name.into(), v.clone());
        }
    }
    let mut out = jsonrpc(json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": code, "message": message, "data": data},
    }));
    out.status = status;
    for (name, value) in &answer.headers {
        if name != "content-type" && name != "cache-control" {
            out.headers.push((name.clone(), value.clone()));
        }
    }
    out
}

/// JSON-RPC error: the gateway failed (the authority down).
const INTERNAL_ERROR: i64 = -32603;

/// The shared-data key of the pending approval of a 2025-11-25 tool call
/// with this digest. The digest covers the user, issuer and agent, so
/// another caller's identical call never finds it; what is kept there is
/// the sealed handle, checked again when found.
pub fn remembered_key(digest: &RequestDigest) -> String {
    format!("{REMEMBERED_PREFIX}{}", URL_SAFE_NO_PAD.encode(digest.0))
}

/// An elicitation id for a handle (2025-11-25 names elicitations): a hash
/// of the handle, so retries are told the same id and nothing is revealed.
pub fn elicitation_id(handle: &str) -> String {
    let hash = Sha256::digest(handle.as_bytes());
    format!("agentward-{}", URL_SAFE_NO_PAD.encode(&hash[..12]))
}

/// The client's answer to the gateway's elicitation in a retry's
/// `inputResponses`, when it is not `accept` (`decline`, `cancel`): the
/// user refused to go to the approval page.
pub fn declined(message: &Value) -> Option<&str> {
    message
        .get("params")?
        .get("inputResponses")?
        .get(INPUT_KEY)?
        .get("action")?
        .as_str()
        .filter(|action| *action != "accept")
}

/// What a retried tool call carried for the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Retry {
    /// The echoed `requestState` (the approval handle), if any.
    pub request_state: Option<String>,
    /// Whether anything was removed (the body must be replaced).
    pub changed: bool,
}

/// Removes what the upstream must not see from a tool call: `requestState`
/// (the gateway's) and the `inputResponses` answer to the gateway's input
/// request (`inputResponses` itself when nothing else is left in it).
/// A `requestState` that is not a string is removed and not returned.
pub fn strip_retry(message: &mut Value) -> Retry {
    let mut retry = Retry::default();
    let Some(params) = message.get_mut("params").and_then(Value::as_object_mut) else {
        return retry;
    };
    if let Some(state) = params.remove("requestState") {
        retry.changed = true;
        retry.request_state = state.as_str().map(str::to_string);
    }
    if let Some(Value::Object(responses)) = params.get_mut("inputResponses") {
        if responses.remove(INPUT_KEY).is_some() {
            retry.changed = true;
        }
        if responses.is_empty() {
            params.remove("inputResponses");
        }
    }
    retry
}

/// What a tool call's digest covers: `{"method", "params"}` with `params`
/// stripped of `_meta`, `requestState` and `inputResponses`.
pub fn digest_view(message: &Value) -> Value {
    let mut params: Map<String, Value> = message
        .get("params")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for name in ["_meta", "requestState", "inputResponses"] {
        params.remove(name);
    }
    json!({
        "method": message.get("method").cloned().unwrap_or(Value::Null),
        "params": params,
    })
}

/// A tool call's `arguments`: what `body.` names in a tool's approval rule.
pub fn arguments(message: &Value) -> Option<&Value> {
    message.get("params")?.get("arguments")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(extra: Value) -> Value {
        let mut params = json!({"name": "place_order", "arguments": {"ticker": "ACME", "qty": 50}});
        if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                p.insert(k.clone(), v.clone());
            }
        }
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params})
    }

    #[test]
    fn versions_choose_the_form() {
        assert_eq!(
            PendingForm::for_version(Some("2026-07-28")),
            PendingForm::InputRequired
        );
        assert_eq!(
            PendingForm::for_version(Some("2027-01-01")),
            PendingForm::InputRequired
        );
        assert_eq!(
            PendingForm::for_version(Some("2025-11-25")),
            PendingForm::UrlElicitationError
        );
        assert_eq!(
            PendingForm::for_version(Some("garbage")),
            PendingForm::UrlElicitationError
        );
        assert_eq!(
            PendingForm::for_version(None),
            PendingForm::UrlElicitationError
        );
    }

    #[test]
    fn input_required_has_the_mrtr_shape() {
        let r = input_required(&json!(7), "H", "https://vault/ciba", "Approve: Buy 50 ACME");
        assert_eq!(r.status, 200);
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(
            body,
            json!({"jsonrpc": "2.0", "id": 7, "result": {
                "resultType": "input_required",
                "inputRequests": {"agentward_approval": {
                    "method": "elicitation/create",
                    "params": {"mode": "url", "url": "https://vault/ciba",
                               "message": "Approve: Buy 50 ACME"}}},
                "requestState": "H"}})
        );
    }

    #[test]
    fn url_elicitation_required_is_error_32042() {
        let r = url_elicitation_required(&json!("a"), "https://vault/ciba", "Approve", "e1");
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["id"], "a");
        assert_eq!(body["error"]["code"], -32042);
        assert_eq!(
            body["error"]["data"]["elicitations"],
            json!([{"mode": "url", "elicitationId": "e1", "url": "https://vault/ciba", "message": "Approve"}])
        );
    }

    #[test]
    fn refusals_become_json_rpc_errors() {
        let denied = refusal(
            &json!(3),
            &crate::response::access_denied("approval_denied", "the user denied"),
        );
        assert_eq!(denied.status, 200);
        let body: Value = serde_json::from_str(&denied.body).unwrap();
        assert_eq!(
            body,
            json!({"jsonrpc": "2.0", "id": 3, "error": {"code": -32010, "message": "the user denied",
                   "data": {"error": "access_denied", "reason": "approval_denied"}}})
        );
        let down = refusal(
            &Value::Null,
            &crate::response::unavailable("x", "down").with_header("retry-after", "5".into()),
        );
        assert_eq!(down.status, 503);
        assert!(down.headers.contains(&("retry-after".into(), "5".into())));
        let body: Value = serde_json::from_str(&down.body).unwrap();
        assert_eq!(body["error"]["code"], -32603);
        let bad = refusal(
            &json!(1),
            &crate::response::invalid_request("approval_template", "t"),
        );
        assert_eq!(bad.status, 400);
    }

    #[test]
    fn a_declined_elicitation_is_seen_and_ids_are_stable() {
        let m = call(json!({"inputResponses": {"agentward_approval": {"action": "decline"}}}));
        assert_eq!(declined(&m), Some("decline"));
        let m = call(json!({"inputResponses": {"agentward_approval": {"action": "accept"}}}));
        assert_eq!(declined(&m), None);
        assert_eq!(declined(&call(json!({}))), None);
        assert_eq!(elicitation_id("H"), elicitation_id("H"));
        assert_ne!(elicitation_id("H"), elicitation_id("I"));
        assert!(remembered_key(&RequestDigest([0; 32])).starts_with(REMEMBERED_PREFIX));
    }

    #[test]
    fn a_retry_loses_what_the_gateway_answered() {
        let mut retry = call(json!({
            "requestState": "H",
            "inputResponses": {"agentward_approval": {"action": "accept"}},
        }));
        let r = strip_retry(&mut retry);
        assert_eq!(
            r,
            Retry {
                request_state: Some("H".into()),
                changed: true
            }
        );
        assert_eq!(retry, call(json!({})));
        // Responses to the upstream's own input requests stay.
        let mut mixed = call(json!({
            "inputResponses": {"agentward_approval": {"action": "accept"}, "theirs": {"action": "accept"}},
        }));
        strip_retry(&mut mixed);
        assert_eq!(
            mixed,
            call(json!({"inputResponses": {"theirs": {"action": "accept"}}}))
        );
        let mut plain = call(json!({}));
        assert_eq!(strip_retry(&mut plain), Retry::default());
        let mut odd = call(json!({"requestState": 5}));
        assert_eq!(
            strip_retry(&mut odd),
            Retry {
                request_state: None,
                changed: true
            }
        );
    }

    #[test]
    fn the_digest_view_ignores_id_meta_and_retry_fields() {
        let first = call(json!({"_meta": {"progressToken": 1}}));
        let mut retry = call(json!({"requestState": "H", "_meta": {"progressToken": 2}}));
        retry["id"] = json!(8);
        assert_eq!(digest_view(&first), digest_view(&retry));
        let mut other = call(json!({}));
        other["params"]["arguments"]["qty"] = json!(51);
        assert_ne!(digest_view(&first), digest_view(&other));
        assert_eq!(
            arguments(&first),
            Some(&json!({"ticker": "ACME", "qty": 50}))
        );
    }
}
