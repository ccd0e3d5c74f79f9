//! Options of the jwt-identity plugin: where else a token may come from,
//! which claims become headers, and the bounds of its caches and holds.

use super::{invalid, is_header_name, PolicyError};
use serde::Deserialize;

/// Options of the jwt-identity plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct IdentityOptions {
    /// Another header that may carry the bare token (for clients that cannot
    /// set `Authorization`, such as browsers opening a websocket).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[a-z0-9._-]+$")))]
    pub token_header: Option<String>,
    /// A query parameter that may carry the token (websocket clients).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[a-z0-9._-]+$")))]
    pub token_query_param: Option<String>,
    /// Extra headers filled from verified claims.
    #[serde(default)]
    pub claim_to_headers: Vec<ClaimToHeader>,
    /// Replaced by `routes[*].forward_token` (the token is now removed by
    /// default); present only to refuse it with a message that says so.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(skip))]
    pub remove_authorization: Option<serde::de::IgnoredAny>,
    /// Bound of the verified-token cache (0 disables it).
    #[serde(default = "default_cache_entries")]
    pub cache_max_entries: usize,
    /// Largest accepted token, in bytes.
    #[serde(default = "default_max_token_bytes")]
    #[cfg_attr(feature = "schema", schemars(range(min = 64, max = 65536)))]
    pub max_token_bytes: usize,
    /// Largest accepted JOSE header, in bytes (decoded); at most `max_token_bytes`.
    #[serde(default = "default_max_header_bytes")]
    #[cfg_attr(feature = "schema", schemars(range(min = 16, max = 65536)))]
    pub max_header_bytes: usize,
    /// Most requests held per VM while keys are fetched; beyond it, 503.
    #[serde(default = "default_max_held_requests")]
    #[cfg_attr(feature = "schema", schemars(range(max = 100000)))]
    pub max_held_requests: usize,
}

impl Default for IdentityOptions {
    fn default() -> Self {
        Self {
            token_header: None,
            token_query_param: None,
            claim_to_headers: Vec::new(),
            remove_authorization: None,
            cache_max_entries: default_cache_entries(),
            max_token_bytes: default_max_token_bytes(),
            max_header_bytes: default_max_header_bytes(),
            max_held_requests: default_max_held_requests(),
        }
    }
}

/// Copies a claim (a dotted path into nested objects) into a request header.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ClaimToHeader {
    /// Claim path, e.g. `org.id` or `roles`.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[^.]+(\.[^.]+)*$")))]
    pub claim: String,
    /// Header name (lower case), neither `authorization` nor an `x-agentward-*` header.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[a-z0-9._-]+$")))]
    pub header: String,
}

impl IdentityOptions {
    /// Checks what the types cannot; errors name fields under `identity`.
    pub(super) fn validate(&self) -> Result<(), PolicyError> {
        for (name, field) in [
            (&self.token_header, "identity.token_header"),
            (&self.token_query_param, "identity.token_query_param"),
        ] {
            if let Some(name) = name {
                if name.is_empty() || !is_header_name(name) {
                    return Err(invalid(field, "must be a lower-case token"));
                }
            }
        }
        for (i, c) in self.claim_to_headers.iter().enumerate() {
            if c.claim.is_empty() || c.claim.split('.').any(str::is_empty) {
                return Err(invalid(
                    format!("identity.claim_to_headers[{i}].claim"),
                    "must be a dotted claim path like `org.id`",
                ));
            }
            if !is_header_name(&c.header)
                || c.header == "authorization"
                || c.header.starts_with(':')
            {
                return Err(invalid(
                    format!("identity.claim_to_headers[{i}].header"),
                    "must be a lower-case header name other than authorization",
                ));
            }
            let spelled = c.header.replace(['_', '.'], "-");
            if spelled.starts_with(crate::identity::HEADER_PREFIX) {
                return Err(invalid(
                    format!("identity.claim_to_headers[{i}].header"),
                    "must not be an `x-agentward-*` header: jwt-identity sets those itself",
                ));
            }
        }
        if self.remove_authorization.is_some() {
            return Err(invalid(
                "identity.remove_authorization",
                "removed: the user's token is now removed before every upstream \
                 unless its route sets `forward_token`; delete this field",
            ));
        }
        if self.max_token_bytes < 64 || self.max_token_bytes > 64 * 1024 {
            return Err(invalid("identity.max_token_bytes", "between 64 and 65536"));
        }
        if self.max_header_bytes < 16 || self.max_header_bytes > self.max_token_bytes {
            return Err(invalid(
                "identity.max_header_bytes",
                "between 16 and identity.max_token_bytes",
            ));
        }
        if self.max_held_requests > 100_000 {
            return Err(invalid("identity.max_held_requests", "at most 100000"));
        }
        Ok(())
    }
}

fn default_cache_entries() -> usize {
    10_000
}
fn default_max_token_bytes() -> usize {
    8192
}
fn default_max_header_bytes() -> usize {
    1024
}
fn default_max_held_requests() -> usize {
    1000
}

#[cfg(test)]
mod tests {
    use super::super::testing::{base, parse};

    #[test]
    fn identity_options_get_safe_defaults() {
        let p = parse(base()).unwrap();
        assert_eq!(p.identity.cache_max_entries, 10_000);
        assert_eq!(p.identity.max_held_requests, 1000);
    }

    #[test]
    fn a_claim_cannot_be_copied_into_an_identity_header() {
        for header in ["x-agentward-sub", "x_agentward_proof", "x.agentward.agent"] {
            let mut v = base();
            v["identity"] = serde_json::json!({
                "claim_to_headers": [{"claim": "org.id", "header": header}]
            });
            let e = parse(v).unwrap_err();
            assert_eq!(e.field, "identity.claim_to_headers[0].header", "{header}");
        }
    }

    #[test]
    fn remove_authorization_is_refused_naming_forward_token() {
        for value in [true, false] {
            let mut v = base();
            v["identity"] = serde_json::json!({"remove_authorization": value});
            let e = parse(v).unwrap_err();
            assert_eq!(e.field, "identity.remove_authorization");
            assert!(e.message.contains("forward_token"), "{e}");
        }
    }
}
