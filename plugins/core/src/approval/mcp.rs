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
//!   elicitation required); the client's retry carries nothing, so the glue
//!   matches it by digest.
//!
//! A tool call's digest covers its method and `params` without `_meta`,
//! `requestState` and `inputResponses`: the JSON-RPC `id` differs between a
//! call and its retry, and `_meta` carries client bookkeeping.

use crate::response::LocalResponse;
use serde_json::{json, Map, Value};

/// The JSON-RPC error code for "URL elicitation required" (2025-11-25).
pub const URL_ELICITATION_REQUIRED: i64 = -32042;
/// The first protocol version with Multi Round-Trip Requests.
pub const MRTR_VERSION: &str = "2026-07-28";
/// The key of the gateway's input request in `inputRequests`.
pub const INPUT_KEY: &str = "agentward_approval";

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

fn elicitation(url: &str, message: &str, elicitation_id: &str) -> Value {
    json!({
        "mode": "url",
        "elicitationId": elicitation_id,
        "url": url,
        "message": message,
    })
}

fn jsonrpc(body: Value) -> LocalResponse {
    LocalResponse::json(200, body)
}

/// The 2026-07-28 answer: an `input_required` result asking the user (by a
/// URL-mode elicitation) to approve, with the handle as `requestState`.
pub fn input_required(
    id: &Value,
    handle: &str,
    url: &str,
    message: &str,
    elicitation_id: &str,
) -> LocalResponse {
    jsonrpc(json!({
        "jsonrpc": "2.0",
        "id": id,
        "result": {
            "resultType": "input_required",
            "inputRequests": {
                INPUT_KEY: {
                    "method": "elicitation/create",
                    "params": elicitation(url, message, elicitation_id),
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
            "data": {"elicitations": [elicitation(url, message, elicitation_id)]},
        }
    }))
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
        let r = input_required(
            &json!(7),
            "H",
            "https://vault/ciba",
            "Approve: Buy 50 ACME",
            "e1",
        );
        assert_eq!(r.status, 200);
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(
            body,
            json!({"jsonrpc": "2.0", "id": 7, "result": {
                "resultType": "input_required",
                "inputRequests": {"agentward_approval": {
                    "method": "elicitation/create",
                    "params": {"mode": "url", "elicitationId": "e1", "url": "https://vault/ciba",
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
