//! Local answers: OAuth-style JSON errors with the right status and
//! `WWW-Authenticate` challenge (RFC 6750, RFC 9728). Never echoes a token.

use crate::jwt::Rejection;
use serde_json::json;

/// An answer the gateway sends itself instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status.
    pub status: u32,
    /// Headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Body (JSON).
    pub body: String,
}

impl LocalResponse {
    /// A JSON answer.
    pub fn json(status: u32, body: serde_json::Value) -> LocalResponse {
        LocalResponse {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("cache-control".into(), "no-store".into()),
            ],
            body: body.to_string(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: String) -> LocalResponse {
        self.headers.push((name.into(), value));
        self
    }
}

/// Where a resource's RFC 9728 metadata lives: the well-known path on the
/// resource's origin, followed by the resource's own path.
pub fn resource_metadata_url(resource: &str) -> String {
    let (origin, path) = split_origin(resource);
    format!(
        "{origin}/.well-known/oauth-protected-resource{}",
        path.trim_end_matches('/')
    )
}

/// Splits an absolute URL into origin and path (`""` when it has none).
pub fn split_origin(url: &str) -> (&str, &str) {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after_scheme..].find('/') {
        Some(i) => url.split_at(after_scheme + i),
        None => (url, ""),
    }
}

pub(crate) fn quoted(s: &str) -> String {
    s.replace(['"', '\\'], "")
}

/// 401 for a request without a token: a bare challenge, as RFC 6750 §3.1 asks.
pub fn missing_token(resource: &str) -> LocalResponse {
    let challenge = format!(
        "Bearer realm=\"{}\", resource_metadata=\"{}\"",
        quoted(resource),
        quoted(&resource_metadata_url(resource))
    );
    LocalResponse::json(
        401,
        json!({
            "error": "unauthorized",
            "reason": "missing_token",
            "error_description": "this resource needs a bearer token",
            "resource_metadata": resource_metadata_url(resource),
        }),
    )
    .with_header("www-authenticate", challenge)
}

/// 401 `invalid_token` with the short reason.
pub fn invalid_token(resource: &str, why: Rejection) -> LocalResponse {
    let challenge = format!(
        "Bearer realm=\"{}\", error=\"invalid_token\", error_description=\"{}\", resource_metadata=\"{}\"",
        quoted(resource),
        why.code(),
        quoted(&resource_metadata_url(resource))
    );
    LocalResponse::json(
        401,
        json!({
            "error": "invalid_token",
            "reason": why.code(),
            "error_description": why.description(),
        }),
    )
    .with_header("www-authenticate", challenge)
}

/// 401 `invalid_token`, reason `bad_claim`, with a description that names
/// the claim (never its value).
pub fn bad_claim(resource: &str, description: &str) -> LocalResponse {
    let mut answer = invalid_token(resource, Rejection::BadClaim);
    answer.body = json!({
        "error": "invalid_token",
        "reason": Rejection::BadClaim.code(),
        "error_description": description,
    })
    .to_string();
    answer
}

/// 403 `insufficient_scope` (RFC 6750 §3.1): the token is good, the route
/// needs more. The challenge names every scope the route needs (the MCP
/// step-up signal: a client asks for them and retries); the body names the
/// missing ones. Scopes are RFC 6749 scope tokens (checked in the policy),
/// so they need no escaping.
pub fn insufficient_scope(resource: &str, required: &[String], missing: &[&str]) -> LocalResponse {
    let scope = required.join(" ");
    let challenge = format!(
        "Bearer realm=\"{}\", error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{}\"",
        quoted(resource),
        quoted(&scope),
        quoted(&resource_metadata_url(resource))
    );
    LocalResponse::json(
        403,
        json!({
            "error": "insufficient_scope",
            "error_description": format!("the token lacks scopes this route needs: {}", missing.join(" ")),
            "scope": scope,
            "missing_scopes": missing,
        }),
    )
    .with_header("www-authenticate", challenge)
}

/// 503 for a request that would wait (for keys, for an approval) while the
/// gateway already holds as many as it may.
pub fn too_many_held(what: &str) -> LocalResponse {
    unavailable(
        "too_many_held_requests",
        &format!(
            "the gateway already holds as many requests as it may while {what}; retry shortly"
        ),
    )
}

/// 400 `invalid_request`: a request the gateway cannot decide safely.
pub fn invalid_request(reason: &str, description: &str) -> LocalResponse {
    LocalResponse::json(
        400,
        json!({
            "error": "invalid_request",
            "reason": reason,
            "error_description": description,
        }),
    )
}

/// 403 `access_denied`: the policy does not let this request through.
pub fn access_denied(reason: &str, description: &str) -> LocalResponse {
    LocalResponse::json(
        403,
        json!({
            "error": "access_denied",
            "reason": reason,
            "error_description": description,
        }),
    )
}

/// 503 when a dependency (JWKS, vault) cannot be reached.
pub fn unavailable(reason: &str, description: &str) -> LocalResponse {
    LocalResponse::json(
        503,
        json!({
            "error": "temporarily_unavailable",
            "reason": reason,
            "error_description": description,
        }),
    )
    .with_header("retry-after", "5".into())
}

/// 413: a request body larger than the route reads to decide (for hosts
/// that read the whole body themselves, as Spin and the playground do).
pub fn body_too_large(max_bytes: usize) -> LocalResponse {
    LocalResponse::json(
        413,
        serde_json::json!({
            "error": "invalid_request",
            "reason": "body_too_large",
            "error_description": format!("the request body is larger than the {max_bytes} bytes this route reads to decide"),
        }),
    )
}

/// 503 when the host's clock cannot be read: expiry cannot be checked, so
/// nothing is let through.
pub fn clock_unavailable() -> LocalResponse {
    unavailable("clock_unavailable", "the gateway could not read its clock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_url_keeps_the_resource_path() {
        assert_eq!(
            resource_metadata_url("https://api.example.com"),
            "https://api.example.com/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            resource_metadata_url("https://api.example.com/mcp/"),
            "https://api.example.com/.well-known/oauth-protected-resource/mcp"
        );
    }

    fn header<'a>(r: &'a LocalResponse, name: &str) -> &'a str {
        &r.headers.iter().find(|(n, _)| n == name).unwrap().1
    }

    #[test]
    fn insufficient_scope_names_the_routes_scopes_and_the_missing_ones() {
        let need = ["portfolio:read".to_string(), "trade".to_string()];
        let r = insufficient_scope("https://api/mcp", &need, &["trade"]);
        assert_eq!(r.status, 403);
        assert_eq!(
            header(&r, "www-authenticate"),
            "Bearer realm=\"https://api/mcp\", error=\"insufficient_scope\", \
             scope=\"portfolio:read trade\", \
             resource_metadata=\"https://api/.well-known/oauth-protected-resource/mcp\""
        );
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["error"], "insufficient_scope");
        assert_eq!(body["missing_scopes"], serde_json::json!(["trade"]));
        assert_eq!(body["scope"], "portfolio:read trade");
    }

    #[test]
    fn bad_claim_keeps_the_reason_in_the_challenge_and_describes_in_the_body() {
        let r = bad_claim("https://api", "the token's `sub` claim is bad");
        assert_eq!(r.status, 401);
        assert!(header(&r, "www-authenticate").contains("error_description=\"bad_claim\""));
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["reason"], "bad_claim");
        assert_eq!(body["error_description"], "the token's `sub` claim is bad");
    }

    #[test]
    fn too_many_held_is_a_503_with_its_reason() {
        let r = too_many_held("the issuer's keys are fetched");
        assert_eq!(r.status, 503);
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["error"], "temporarily_unavailable");
        assert_eq!(body["reason"], "too_many_held_requests");
    }

    #[test]
    fn invalid_token_names_the_reason_only() {
        let r = invalid_token("https://api", Rejection::Expired);
        assert_eq!(r.status, 401);
        let h = &r
            .headers
            .iter()
            .find(|(n, _)| n == "www-authenticate")
            .unwrap()
            .1;
        assert!(h.contains("error=\"invalid_token\""));
        assert!(h.contains("error_description=\"expired\""));
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["reason"], "expired");
    }
}
