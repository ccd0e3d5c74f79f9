//! A route's (or an MCP tool's) `approval` sub-object, and the pure decision
//! on one request: does it need an approval, and with which binding message
//! and `authorization_details`.
//!
//! ```json
//! "approval": {
//!   "when": {"field": "body.amount", "gt": 1000},
//!   "binding_message": "Buy {body.qty} {body.ticker}",
//!   "authorization_details": [{"type": "stock_trade", "ticker": "{body.ticker}", "qty": "{body.qty}"}],
//!   "mode": "hold",
//!   "max_body_bytes": 65536,
//!   "expiry_seconds": 300
//! }
//! ```

use super::canonical::{parse_strict, BodyError};
use super::digest::DigestBody;
use super::field::{Facts, Root};
use super::predicate::{Predicate, WrongType};
use super::template::{
    binding_message_char, DetailsTemplate, FillError, Template, BINDING_MESSAGE_MAX,
};
use crate::policy::PolicyError;
use crate::response::{invalid_request, LocalResponse};
use serde::Deserialize;
use serde_json::{json, Value};

/// When a request needs the user's approval, and how it is described.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ApprovalRule {
    /// Which requests need approval (absent: every request of the route or
    /// tool); see [`Predicate`].
    #[serde(default)]
    pub when: Option<Predicate>,
    /// The message shown to the user (`Buy {body.qty} {body.ticker}`): at
    /// most 64 characters of letters, digits, space and `+-_.,:#` once filled.
    pub binding_message: Template,
    /// RFC 9396 `authorization_details` template (JSON with placeholders).
    #[serde(default)]
    pub authorization_details: Option<DetailsTemplate>,
    /// `hold` (the request waits for the decision) or `deferred` (202 and
    /// an approval id to retry with).
    #[serde(default)]
    pub mode: Mode,
    /// The largest body read to decide (413 beyond).
    #[serde(default = "default_max_body_bytes")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 8388608)))]
    pub max_body_bytes: usize,
    /// `requested_expiry`: how long the user has to decide, in seconds.
    #[serde(default = "default_expiry_seconds")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 604800)))]
    pub expiry_seconds: u64,
}

/// What happens to a request while the user decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Mode {
    /// Held (paused) until approved, denied or expired: seconds to minutes.
    #[default]
    Hold,
    /// Answered at once (202, or the MCP forms) with an approval id the
    /// agent retries with: hours.
    Deferred,
}

fn default_max_body_bytes() -> usize {
    64 * 1024
}
fn default_expiry_seconds() -> u64 {
    300
}

/// Largest `max_body_bytes`.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Longest `expiry_seconds` (a week).
pub const MAX_EXPIRY_SECONDS: u64 = 7 * 24 * 3600;

/// What the user is asked to approve.
#[derive(Debug, Clone, PartialEq)]
pub struct Needed {
    /// The filled, checked binding message.
    pub binding_message: String,
    /// The filled `authorization_details`.
    pub authorization_details: Option<Value>,
}

/// A request the rule cannot decide safely: answered, never forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The body is larger than `max_body_bytes` (413).
    TooLarge,
    /// The rule reads the body and it is not JSON, or names a key twice.
    Body(BodyError),
    /// A field compared has the wrong type.
    WrongType(WrongType),
    /// A template cannot be filled.
    Fill(FillError),
    /// A number in the body the digest cannot write canonically.
    Number,
}

impl Refusal {
    /// The answer: 413, or 400 `invalid_request` naming the policy field
    /// (never the request's value).
    pub fn response(&self) -> LocalResponse {
        match self {
            Refusal::TooLarge => LocalResponse::json(
                413,
                json!({
                    "error": "invalid_request",
                    "reason": "body_too_large",
                    "error_description": "the body is larger than this route reads to decide on an approval",
                }),
            ),
            Refusal::Body(BodyError::NotJson) => invalid_request(
                "approval_body_not_json",
                "this route's approval rule reads a JSON body; the body is not JSON",
            ),
            Refusal::Body(BodyError::DuplicateKey) => invalid_request(
                "duplicate_json_key",
                "the JSON body names a key twice in one object",
            ),
            Refusal::WrongType(w) => invalid_request(
                "approval_rule_type",
                &format!("`{}` must be {} for this route's approval rule", w.field, w.expected),
            ),
            Refusal::Fill(f) => invalid_request(
                "approval_template",
                &format!(
                    "the approval request cannot be described from this request: `{}`: {}",
                    f.field, f.why
                ),
            ),
            Refusal::Number => invalid_request(
                "approval_body_number",
                "the body holds a number outside what request digests support (magnitude 1e-6 to 1e21, or an integer)",
            ),
        }
    }
}

/// A request body as an approval rule reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestBody {
    /// No body.
    Empty,
    /// A JSON body (parsed strictly).
    Json(Value),
    /// Another body (only for rules that do not read it).
    Other,
}

impl RequestBody {
    /// Reads a body of at most `max_bytes`; a body that looks like JSON
    /// (or that the rule reads) must parse strictly.
    pub fn read(
        bytes: &[u8],
        max_bytes: usize,
        rule_reads_it: bool,
    ) -> Result<RequestBody, Refusal> {
        if bytes.len() > max_bytes {
            return Err(Refusal::TooLarge);
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(RequestBody::Empty);
        }
        match parse_strict(bytes) {
            Ok(value) => Ok(RequestBody::Json(value)),
            Err(BodyError::DuplicateKey) => Err(Refusal::Body(BodyError::DuplicateKey)),
            Err(BodyError::NotJson) if rule_reads_it => Err(Refusal::Body(BodyError::NotJson)),
            Err(BodyError::NotJson) => Ok(RequestBody::Other),
        }
    }

    /// The parsed JSON, when there is one.
    pub fn json(&self) -> Option<&Value> {
        match self {
            RequestBody::Json(v) => Some(v),
            _ => None,
        }
    }

    /// The body as the request digest reads it (`raw`: the bytes read).
    pub fn digest_body<'a>(&'a self, raw: &'a [u8]) -> DigestBody<'a> {
        match self {
            RequestBody::Empty => DigestBody::Empty,
            RequestBody::Json(v) => DigestBody::Json(v),
            RequestBody::Other => DigestBody::Bytes(raw),
        }
    }
}

impl ApprovalRule {
    /// Whether the decision reads the body (then it waits for the body;
    /// otherwise it is decided from the headers).
    pub fn reads_body(&self) -> bool {
        let predicate = self
            .when
            .as_ref()
            .is_some_and(|p| p.fields().iter().any(|f| f.root == Root::Body));
        let message = self.binding_message.fields().any(|f| f.root == Root::Body);
        let details = self
            .authorization_details
            .as_ref()
            .is_some_and(|d| d.fields().iter().any(|f| f.root == Root::Body));
        predicate || message || details
    }

    /// Whether this request needs approval, and what the user is asked.
    pub fn evaluate(&self, facts: &Facts<'_>) -> Result<Option<Needed>, Refusal> {
        if let Some(when) = &self.when {
            if !when.holds(facts).map_err(Refusal::WrongType)? {
                return Ok(None);
            }
        }
        let binding_message = self
            .binding_message
            .fill_binding_message(facts)
            .map_err(Refusal::Fill)?;
        let authorization_details = match &self.authorization_details {
            Some(t) => Some(t.fill(facts).map_err(Refusal::Fill)?),
            None => None,
        };
        Ok(Some(Needed {
            binding_message,
            authorization_details,
        }))
    }

    /// Checks the rule; `at` is its field path, `has_param` says whether
    /// the route's path template captures a parameter.
    pub fn validate(&self, at: &str, has_param: impl Fn(&str) -> bool) -> Result<(), PolicyError> {
        let error = |field: &str, message: String| PolicyError {
            field: format!("{at}.{field}"),
            message,
        };
        if let Some(c) = self
            .binding_message
            .literal_chars()
            .find(|c| !binding_message_char(*c))
        {
            return Err(error(
                "binding_message",
                format!(
                    "`{}` is not allowed in a binding message (letters, digits, space and +-_.,:# only)",
                    c.escape_default()
                ),
            ));
        }
        if self.binding_message.literal_chars().count() > BINDING_MESSAGE_MAX {
            return Err(error(
                "binding_message",
                format!("longer than {BINDING_MESSAGE_MAX} characters before it is even filled"),
            ));
        }
        if self.binding_message.fields().next().is_none()
            && self.binding_message.literal_chars().all(|c| c == ' ')
        {
            return Err(error("binding_message", "must not be empty".into()));
        }
        let mut fields: Vec<(&str, super::field::FieldRef)> = self
            .binding_message
            .fields()
            .map(|f| ("binding_message", f.clone()))
            .collect();
        if let Some(d) = &self.authorization_details {
            fields.extend(d.fields().into_iter().map(|f| ("authorization_details", f)));
        }
        if let Some(w) = &self.when {
            fields.extend(w.fields().into_iter().map(|f| ("when", f.clone())));
        }
        for (name, field) in fields {
            if field.root == Root::Path {
                let param = field.path.first().map(String::as_str).unwrap_or_default();
                if !has_param(param) {
                    return Err(error(
                        name,
                        format!("`{field}`: the route's path template has no `{{{param}}}`"),
                    ));
                }
            }
        }
        if self.max_body_bytes == 0 || self.max_body_bytes > MAX_BODY_BYTES {
            return Err(error(
                "max_body_bytes",
                format!("from 1 to {MAX_BODY_BYTES}"),
            ));
        }
        if self.expiry_seconds == 0 || self.expiry_seconds > MAX_EXPIRY_SECONDS {
            return Err(error(
                "expiry_seconds",
                format!("from 1 to {MAX_EXPIRY_SECONDS}"),
            ));
        }
        Ok(())
    }
}

/// The deferred answer: 202 `approval_pending` with the approval id to
/// retry with (in `x-agentward-approval`) and `Retry-After`.
pub fn approval_pending(approval_id: &str, expires_in: u64, interval: u64) -> LocalResponse {
    LocalResponse::json(
        202,
        json!({
            "status": "approval_pending",
            "approval_id": approval_id,
            "expires_in": expires_in,
            "interval": interval,
            "error_description": "the user must approve this request on their device; retry the same request with the header x-agentward-approval: <approval_id>",
        }),
    )
    .with_header("retry-after", interval.to_string())
}

/// The header a deferred retry carries its approval id in.
pub const APPROVAL_HEADER: &str = "x-agentward-approval";

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(v: Value) -> Result<ApprovalRule, String> {
        let r: ApprovalRule = serde_json::from_value(v).map_err(|e| e.to_string())?;
        r.validate("routes[0].approval", |p| p == "account")
            .map_err(|e| format!("{}: {}", e.field, e.message))?;
        Ok(r)
    }

    fn trade() -> ApprovalRule {
        rule(json!({
            "when": {"field": "body.amount", "gt": 1000},
            "binding_message": "Buy {body.qty} {body.ticker} on {path.account}",
            "authorization_details": [{"type": "stock_trade", "ticker": "{body.ticker}", "qty": "{body.qty}"}],
            "mode": "deferred",
            "expiry_seconds": 600
        }))
        .unwrap()
    }

    fn facts(body: &Value) -> Facts<'_> {
        Facts {
            body: Some(body),
            ..Facts::for_tests()
        }
    }

    #[test]
    fn a_large_order_needs_approval_a_small_one_does_not() {
        let r = trade();
        assert_eq!(r.mode, Mode::Deferred);
        assert!(r.reads_body());
        let big = json!({"amount": 5000, "qty": 50, "ticker": "ACME"});
        assert_eq!(
            r.evaluate(&facts(&big)).unwrap(),
            Some(Needed {
                binding_message: "Buy 50 ACME on acc-7".into(),
                authorization_details: Some(
                    json!([{"type": "stock_trade", "ticker": "ACME", "qty": 50}])
                ),
            })
        );
        let small = json!({"amount": 50, "qty": 1, "ticker": "ACME"});
        assert_eq!(r.evaluate(&facts(&small)).unwrap(), None);
    }

    #[test]
    fn a_message_that_cannot_be_made_refuses_with_400() {
        let r = trade();
        for body in [
            json!({"amount": 5000, "qty": 50}),
            json!({"amount": 5000, "qty": 50, "ticker": "<b>ACME</b>"}),
            json!({"amount": "5000", "qty": 50, "ticker": "ACME"}),
        ] {
            let e = r.evaluate(&facts(&body)).unwrap_err();
            let answer = e.response();
            assert_eq!(answer.status, 400, "{body}");
            assert!(answer.body.contains("invalid_request"));
            assert!(!answer.body.contains("<b>"), "values are not echoed");
        }
    }

    #[test]
    fn without_when_every_request_needs_approval() {
        let r = rule(json!({"binding_message": "Delete repository {path.account}"})).unwrap();
        assert_eq!(r.mode, Mode::Hold);
        assert!(!r.reads_body());
        assert_eq!(r.max_body_bytes, 64 * 1024);
        assert_eq!(r.expiry_seconds, 300);
        let needed = r.evaluate(&Facts::for_tests()).unwrap().unwrap();
        assert_eq!(needed.binding_message, "Delete repository acc-7");
        assert_eq!(needed.authorization_details, None);
    }

    #[test]
    fn bad_rules_name_the_field() {
        for (v, field) in [
            (
                json!({"binding_message": "Buy <b>"}),
                "routes[0].approval.binding_message",
            ),
            (
                json!({"binding_message": "x".repeat(65)}),
                "routes[0].approval.binding_message",
            ),
            (
                json!({"binding_message": " "}),
                "routes[0].approval.binding_message",
            ),
            (
                json!({"binding_message": "Buy {path.nope}"}),
                "routes[0].approval.binding_message",
            ),
            (
                json!({"binding_message": "x", "when": {"field": "path.nope", "eq": "a"}}),
                "routes[0].approval.when",
            ),
            (
                json!({"binding_message": "x", "authorization_details": [{"type": "t", "a": "{path.nope}"}]}),
                "routes[0].approval.authorization_details",
            ),
            (
                json!({"binding_message": "x", "max_body_bytes": 0}),
                "routes[0].approval.max_body_bytes",
            ),
            (
                json!({"binding_message": "x", "expiry_seconds": 0}),
                "routes[0].approval.expiry_seconds",
            ),
            (
                json!({"binding_message": "x", "expiry_seconds": 700000}),
                "routes[0].approval.expiry_seconds",
            ),
        ] {
            let e = rule(v.clone()).unwrap_err();
            assert!(e.starts_with(&format!("{field}:")), "{v}: {e}");
        }
        for (v, says) in [
            (
                json!({"binding_message": "Buy {secret}"}),
                "unknown placeholder root",
            ),
            (json!({}), "missing field `binding_message`"),
            (
                json!({"binding_message": "x", "mode": "later"}),
                "unknown variant",
            ),
            (
                json!({"binding_message": "x", "timeout": 1}),
                "unknown field",
            ),
        ] {
            let e = rule(v.clone()).unwrap_err();
            assert!(e.contains(says), "{v}: {e}");
        }
    }

    #[test]
    fn bodies_are_bounded_and_strict() {
        assert_eq!(RequestBody::read(b"{}", 1, true), Err(Refusal::TooLarge));
        assert_eq!(RequestBody::read(b"  ", 10, true), Ok(RequestBody::Empty));
        assert_eq!(
            RequestBody::read(b"a=1", 10, true),
            Err(Refusal::Body(BodyError::NotJson))
        );
        assert_eq!(RequestBody::read(b"a=1", 10, false), Ok(RequestBody::Other));
        assert_eq!(
            RequestBody::read(br#"{"a":1,"a":2}"#, 100, false),
            Err(Refusal::Body(BodyError::DuplicateKey))
        );
        let body = RequestBody::read(br#"{"a":1}"#, 100, true).unwrap();
        assert_eq!(body.json(), Some(&json!({"a": 1})));
        assert_eq!(Refusal::TooLarge.response().status, 413);
        assert_eq!(Refusal::Number.response().status, 400);
        assert_eq!(
            Refusal::Body(BodyError::DuplicateKey).response().status,
            400
        );
    }

    #[test]
    fn the_deferred_answer_is_202_with_retry_after() {
        let r = approval_pending("h4ndle", 300, 5);
        assert_eq!(r.status, 202);
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["status"], "approval_pending");
        assert_eq!(body["approval_id"], "h4ndle");
        assert_eq!(body["expires_in"], 300);
        assert_eq!(body["interval"], 5);
        assert!(r.headers.contains(&("retry-after".into(), "5".into())));
    }
}
