//! Trusted token issuers: who may sign, for which audiences, with which
//! algorithms, and where their keys come from.

use super::{invalid, is_absolute_url, Algorithm, PolicyError};
use serde::Deserialize;

/// A trusted issuer and how to find its keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Issuer {
    /// Exact `iss` value.
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one.
    #[cfg_attr(feature = "schema", schemars(length(min = 1), inner(length(min = 1))))]
    pub audiences: Vec<String>,
    /// Allowed signature algorithms (RFC 8725 §3.1): only these verify;
    /// `none` and `HS*` cannot be named.
    #[serde(default = "default_algorithms")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub algorithms: Vec<Algorithm>,
    /// Inline JWKS (`{"keys": [...]}`); give this or `jwks_uri`.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Option<super::schema::Jwks>"))]
    pub jwks: Option<serde_json::Value>,
    /// Where the JWKS is fetched from (path and authority are taken from it).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^https?://[^/]")))]
    pub jwks_uri: Option<String>,
    /// The Envoy cluster that reaches `jwks_uri` (required with it).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub jwks_cluster: Option<String>,
    /// Period of JWKS refreshes, in seconds.
    #[serde(default = "default_jwks_refresh")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub jwks_refresh_seconds: u64,
    /// At most one refetch per this many seconds when a token names an unknown `kid`.
    #[serde(default = "default_jwks_min_refetch")]
    pub jwks_min_refetch_seconds: u64,
    /// How long a JWKS fetch (and a request waiting for it) may take, in milliseconds.
    #[serde(default = "default_jwks_timeout_ms")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub jwks_timeout_ms: u64,
    /// Required JOSE `typ` (e.g. `at+jwt`), compared case-insensitively.
    #[serde(default)]
    pub typ: Option<String>,
    /// Accept tokens without `sub` (OAuth client credentials): the agent's
    /// own identity, forwarded with `x-agentward-principal: agent`.
    #[serde(default)]
    pub client_credentials: bool,
}

impl Issuer {
    /// Checks what the types cannot; `at` is the issuer's field path.
    pub(super) fn validate(&self, at: &str) -> Result<(), PolicyError> {
        let at = |f: &str| format!("{at}.{f}");
        if self.issuer.is_empty() {
            return Err(invalid(at("issuer"), "must not be empty"));
        }
        if self.audiences.is_empty() || self.audiences.iter().any(|a| a.is_empty()) {
            return Err(invalid(at("audiences"), "at least one non-empty audience"));
        }
        if self.algorithms.is_empty() {
            return Err(invalid(at("algorithms"), "at least one algorithm"));
        }
        match (&self.jwks, &self.jwks_uri) {
            (Some(_), Some(_)) => {
                return Err(invalid(at("jwks_uri"), "give either `jwks` or `jwks_uri`"))
            }
            (None, None) => return Err(invalid(at("jwks"), "give `jwks` or `jwks_uri`")),
            (Some(jwks), None) => {
                let bytes = jwks.to_string();
                crate::jwks::KeySet::parse(bytes.as_bytes())
                    .map_err(|e| invalid(at("jwks"), e.to_string()))?;
            }
            (None, Some(uri)) => {
                if !is_absolute_url(uri) {
                    return Err(invalid(at("jwks_uri"), "must be an absolute http(s) URL"));
                }
                if self.jwks_cluster.as_deref().unwrap_or("").is_empty() {
                    return Err(invalid(
                        at("jwks_cluster"),
                        "required with `jwks_uri`: the Envoy cluster that reaches it",
                    ));
                }
            }
        }
        if self.jwks_refresh_seconds == 0 {
            return Err(invalid(at("jwks_refresh_seconds"), "must be positive"));
        }
        if self.jwks_timeout_ms == 0 {
            return Err(invalid(at("jwks_timeout_ms"), "must be positive"));
        }
        Ok(())
    }
}

fn default_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA]
}
fn default_jwks_refresh() -> u64 {
    600
}
fn default_jwks_min_refetch() -> u64 {
    30
}
fn default_jwks_timeout_ms() -> u64 {
    5000
}

#[cfg(test)]
mod tests {
    use super::super::testing::{base, parse};
    use super::*;

    #[test]
    fn an_issuer_gets_safe_defaults() {
        let p = parse(base()).unwrap();
        assert_eq!(
            p.issuers[0].algorithms,
            vec![Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA]
        );
        assert!(!p.issuers[0].client_credentials);
    }

    #[test]
    fn hmac_and_none_algorithms_are_refused_with_the_field_named() {
        for alg in ["HS256", "none"] {
            let mut v = base();
            v["issuers"][0]["algorithms"] = serde_json::json!(["ES256", alg]);
            let e = parse(v).unwrap_err();
            assert_eq!(e.field, "issuers[0].algorithms[1]");
            assert!(e.message.contains(alg), "{e}");
        }
    }

    #[test]
    fn unknown_field_is_named() {
        let mut v = base();
        v["issuers"][0]["audience"] = serde_json::json!("x");
        let e = parse(v).unwrap_err();
        assert!(e.field.starts_with("issuers[0]"), "{e}");
        assert!(e.message.contains("audience"), "{e}");
    }

    #[test]
    fn jwks_uri_needs_a_cluster() {
        let mut v = base();
        v["issuers"][0]
            .as_object_mut()
            .unwrap()
            .remove("jwks_cluster");
        assert_eq!(parse(v).unwrap_err().field, "issuers[0].jwks_cluster");
    }

    #[test]
    fn bad_inline_jwks_is_refused() {
        let mut v = base();
        let i = v["issuers"][0].as_object_mut().unwrap();
        i.remove("jwks_uri");
        i.insert("jwks".into(), serde_json::json!({"keys": [{"kty": "EC"}]}));
        assert_eq!(parse(v).unwrap_err().field, "issuers[0].jwks");
    }
}
