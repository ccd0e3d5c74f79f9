//! The policy document: one JSON document describes a deployment, and every
//! plugin reads the part it needs. Parsing is strict (unknown fields are
//! errors) and every error names the field, so a typo never silently weakens
//! a policy.

use crate::secret::Secret;
use serde::{Deserialize, Deserializer};
use std::fmt;

/// A deployment's policy, as written in the plugin configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The protected resource's identifier (RFC 9728 `resource`), an absolute URL.
    pub resource: String,
    /// Authorization servers advertised in the protected resource metadata.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// Scopes advertised in the metadata; when empty, the scopes named by routes.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// Trusted token issuers.
    pub issuers: Vec<Issuer>,
    /// Leeway for `exp`/`nbf`, in seconds.
    #[serde(default = "default_clock_skew")]
    pub clock_skew_seconds: u64,
    /// Options of the jwt-identity plugin.
    #[serde(default)]
    pub identity: IdentityOptions,
    /// Routes with their requirements; the first that matches applies.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// What a request that no route matches gets.
    #[serde(default)]
    pub unmatched: Unmatched,
    /// How the gateway reaches the vault (token exchange).
    #[serde(default)]
    pub vault: Option<VaultClient>,
}

/// A trusted issuer and how to find its keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Issuer {
    /// Exact `iss` value.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one.
    pub audiences: Vec<String>,
    /// Allowed signature algorithms (RFC 8725 §3.1): only these verify.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<Algorithm>,
    /// Inline JWKS (`{"keys": [...]}`).
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// Where the JWKS is fetched from (path and authority are taken from it).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// The Envoy cluster that reaches `jwks_uri`.
    #[serde(default)]
    pub jwks_cluster: Option<String>,
    /// Period of JWKS refreshes, in seconds.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_seconds: u64,
    /// At most one refetch per this many seconds when a token names an unknown `kid`.
    #[serde(default = "default_jwks_min_refetch")]
    pub jwks_min_refetch_seconds: u64,
    /// How long a JWKS fetch (and a request waiting for it) may take.
    #[serde(default = "default_jwks_timeout_ms")]
    pub jwks_timeout_ms: u64,
    /// Required JOSE `typ` (e.g. `at+jwt`), compared case-insensitively.
    #[serde(default)]
    pub typ: Option<String>,
    /// Accept tokens without `sub` (OAuth client credentials): the agent's
    /// own identity, forwarded with `x-agentward-principal: agent`.
    #[serde(default)]
    pub client_credentials: bool,
}

/// Options of the jwt-identity plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityOptions {
    /// Another header that may carry the bare token (for clients that cannot
    /// set `Authorization`, such as browsers opening a websocket).
    #[serde(default)]
    pub token_header: Option<String>,
    /// A query parameter that may carry the token (websocket clients).
    #[serde(default)]
    pub token_query_param: Option<String>,
    /// Extra headers filled from verified claims.
    #[serde(default)]
    pub claim_to_headers: Vec<ClaimToHeader>,
    /// Replaced by `routes[*].forward_token` (the token is now removed by
    /// default); present only to refuse it with a message that says so.
    #[serde(default)]
    pub remove_authorization: Option<serde::de::IgnoredAny>,
    /// Bound of the verified-token cache (0 disables it).
    #[serde(default = "default_cache_entries")]
    pub cache_max_entries: usize,
    /// Largest accepted token, in bytes.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Largest accepted JOSE header, in bytes (decoded).
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Most requests held per VM while keys are fetched; beyond it, 503.
    #[serde(default = "default_max_held_requests")]
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
pub struct ClaimToHeader {
    /// Claim path, e.g. `org.id` or `roles`.
    pub claim: String,
    /// Header name (lower case).
    pub header: String,
}

/// A route and what it requires.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Which requests the route covers.
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// No token needed; a token that is sent is still verified.
    #[serde(default)]
    pub public: bool,
    /// Scopes the route needs (advertised in the metadata).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Vault connection whose upstream token replaces the user's token.
    #[serde(default)]
    pub connection: Option<String>,
    /// Audience (RFC 8693 `audience`) requested for the upstream token.
    #[serde(default)]
    pub audience: Option<String>,
    /// Scopes requested for the upstream token (empty: the connection's defaults).
    #[serde(default)]
    pub upstream_scopes: Vec<String>,
    /// Send the user's token (`Authorization`, the token header, the token
    /// query parameter) on to the upstream; otherwise it is removed.
    #[serde(default)]
    pub forward_token: bool,
}

/// What a request that matches no route gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unmatched {
    /// 403 `access_denied`: only what the routes list is reachable.
    #[default]
    Deny,
    /// A valid token is needed, nothing more.
    Authenticated,
    /// No token needed (a token that is sent is still verified).
    Public,
}

/// Request matching: every given condition must hold. Paths are compared
/// after normalisation ([`crate::path::normalize`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// HTTP methods (upper case); empty matches any, and `HEAD` matches
    /// wherever `GET` does.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Exact path (query excluded), with or without one trailing `/`.
    #[serde(default)]
    pub path: Option<String>,
    /// Path prefix, on segment boundaries (`/api` matches `/api/x`, not `/apix`).
    #[serde(default)]
    pub path_prefix: Option<String>,
}

impl RouteMatch {
    /// Whether a request with this method and normalised path (query
    /// excluded) matches.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        // A server answers HEAD as it answers GET, handler included.
        let method_matches = |m: &String| m == method || (method == "HEAD" && m == "GET");
        if !self.methods.is_empty() && !self.methods.iter().any(method_matches) {
            return false;
        }
        if let Some(exact) = &self.path {
            // Many frameworks serve `/x/` as `/x`: a rule on one covers both.
            let exact = exact.trim_end_matches('/');
            if exact != path.strip_suffix('/').unwrap_or(path) {
                return false;
            }
        }
        if let Some(prefix) = &self.path_prefix {
            let prefix = prefix.trim_end_matches('/');
            let rest = match path.strip_prefix(prefix) {
                Some(rest) => rest,
                None => return false,
            };
            if !(rest.is_empty() || rest.starts_with('/')) {
                return false;
            }
        }
        true
    }
}

/// How the token-exchange plugin reaches the vault's token endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultClient {
    /// Envoy cluster of the vault (or of Auth0's token endpoint).
    pub cluster: String,
    /// Authority sent in the callout (defaults to the cluster name).
    #[serde(default)]
    pub authority: Option<String>,
    /// Token endpoint path.
    #[serde(default = "default_token_path")]
    pub token_path: String,
    /// The gateway's client id at the vault.
    pub client_id: String,
    /// The gateway's client secret at the vault, inline: for demos only,
    /// as Envoy's admin `/config_dump` shows the plugin configuration.
    /// After [`VaultClient::resolve_secret`], the secret in use.
    #[serde(default)]
    pub client_secret: Secret,
    /// The VM environment variable that holds the client secret (Envoy:
    /// `vm_config.environment_variables.host_env_keys`); exactly one of
    /// this and `client_secret`.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// `rfc8693` or `auth0`.
    #[serde(default)]
    pub dialect: ExchangeDialect,
    /// Callout timeout.
    #[serde(default = "default_vault_timeout_ms")]
    pub timeout_ms: u64,
    /// Refresh a cached upstream token this many seconds before it expires.
    #[serde(default = "default_expiry_margin")]
    pub expiry_margin_seconds: u64,
    /// Serve a cached upstream token for at most this long, however long
    /// it lives: after an unlink the gateway stops using the old token
    /// within this time even where the provider cannot revoke it (0: ask
    /// the vault on every request).
    #[serde(default = "default_max_cache")]
    pub max_cache_seconds: u64,
}

/// Token exchange request dialect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeDialect {
    /// RFC 8693 token exchange.
    #[default]
    Rfc8693,
    /// Auth0 Token Vault (federated connection access token).
    Auth0,
}

/// JWS algorithms that may be allowed; symmetric ones and `none` cannot be named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA P-256 SHA-256.
    ES256,
    /// ECDSA P-384 SHA-384.
    ES384,
    /// RSASSA-PKCS1-v1_5 SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 SHA-512.
    RS512,
    /// RSASSA-PSS SHA-256.
    PS256,
    /// RSASSA-PSS SHA-384.
    PS384,
    /// RSASSA-PSS SHA-512.
    PS512,
    /// Ed25519.
    EdDSA,
}

impl Algorithm {
    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// Parses a JOSE name; `none` and HMAC algorithms are never accepted.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "PS256" => Algorithm::PS256,
            "PS384" => Algorithm::PS384,
            "PS512" => Algorithm::PS512,
            "EdDSA" => Algorithm::EdDSA,
            _ => return None,
        })
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Algorithm {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        if let Some(alg) = Algorithm::from_name(&name) {
            return Ok(alg);
        }
        let why = if name.eq_ignore_ascii_case("none") {
            "unsigned tokens are never accepted"
        } else if name.starts_with("HS") {
            "symmetric algorithms cannot be verified with an issuer's public keys"
        } else {
            "expected one of ES256, ES384, RS256, RS384, RS512, PS256, PS384, PS512, EdDSA"
        };
        Err(serde::de::Error::custom(format!(
            "algorithm `{name}` is not allowed: {why}"
        )))
    }
}

/// A policy that does not parse or validate; `field` is a path like `issuers[0].audiences`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// Where the problem is.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid policy at `{}`: {}", self.field, self.message)
    }
}

impl std::error::Error for PolicyError {}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError {
        field: field.into(),
        message: message.into(),
    }
}

impl Policy {
    /// Parses and validates a policy document.
    pub fn parse(json: &[u8]) -> Result<Policy, PolicyError> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let policy: Policy = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // serde_json appends "at line L column C": keep only the message.
            let message = inner.to_string();
            let message = match message.rfind(" at line ") {
                Some(at) => message[..at].to_string(),
                None => message,
            };
            invalid(
                if path == "." {
                    "(document)".into()
                } else {
                    path
                },
                message,
            )
        })?;
        policy.validate()?;
        Ok(policy)
    }

    fn validate(&self) -> Result<(), PolicyError> {
        if !is_absolute_url(&self.resource) {
            return Err(invalid("resource", "must be an absolute http(s) URL"));
        }
        if self.issuers.is_empty() {
            return Err(invalid("issuers", "at least one issuer is required"));
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            let at = |f: &str| format!("issuers[{i}].{f}");
            if issuer.issuer.is_empty() {
                return Err(invalid(at("issuer"), "must not be empty"));
            }
            if issuer.audiences.is_empty() || issuer.audiences.iter().any(|a| a.is_empty()) {
                return Err(invalid(at("audiences"), "at least one non-empty audience"));
            }
            if issuer.algorithms.is_empty() {
                return Err(invalid(at("algorithms"), "at least one algorithm"));
            }
            match (&issuer.jwks, &issuer.jwks_uri) {
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
                    if issuer.jwks_cluster.as_deref().unwrap_or("").is_empty() {
                        return Err(invalid(
                            at("jwks_cluster"),
                            "required with `jwks_uri`: the Envoy cluster that reaches it",
                        ));
                    }
                }
            }
            if issuer.jwks_refresh_seconds == 0 {
                return Err(invalid(at("jwks_refresh_seconds"), "must be positive"));
            }
            if issuer.jwks_timeout_ms == 0 {
                return Err(invalid(at("jwks_timeout_ms"), "must be positive"));
            }
        }
        if self.clock_skew_seconds > 300 {
            return Err(invalid("clock_skew_seconds", "at most 300 seconds"));
        }
        let id = &self.identity;
        for (name, field) in [
            (&id.token_header, "identity.token_header"),
            (&id.token_query_param, "identity.token_query_param"),
        ] {
            if let Some(name) = name {
                if name.is_empty() || !is_header_name(name) {
                    return Err(invalid(field, "must be a lower-case token"));
                }
            }
        }
        for (i, c) in id.claim_to_headers.iter().enumerate() {
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
        if id.remove_authorization.is_some() {
            return Err(invalid(
                "identity.remove_authorization",
                "removed: the user's token is now removed before every upstream \
                 unless its route sets `forward_token`; delete this field",
            ));
        }
        if id.max_token_bytes < 64 || id.max_token_bytes > 64 * 1024 {
            return Err(invalid("identity.max_token_bytes", "between 64 and 65536"));
        }
        if id.max_header_bytes < 16 || id.max_header_bytes > id.max_token_bytes {
            return Err(invalid(
                "identity.max_header_bytes",
                "between 16 and identity.max_token_bytes",
            ));
        }
        if id.max_held_requests > 100_000 {
            return Err(invalid("identity.max_held_requests", "at most 100000"));
        }
        for (i, route) in self.routes.iter().enumerate() {
            crate::scopes::validate_route(route)
                .map_err(|(f, m)| invalid(format!("routes[{i}].{f}"), m))?;
            let m = &route.matcher;
            for (p, field) in [(&m.path, "path"), (&m.path_prefix, "path_prefix")] {
                let Some(p) = p else { continue };
                let normal =
                    crate::path::normalize(p).is_ok_and(|t| t.was_normal() && t.query.is_none());
                if !normal {
                    return Err(invalid(
                        format!("routes[{i}].match.{field}"),
                        "a normalised path: starts with `/`, no `//`, `.` or `..` \
                         segments, no query, no percent-encoded letters or digits",
                    ));
                }
            }
            if m.methods
                .iter()
                .any(|x| x.is_empty() || x.to_uppercase() != *x)
            {
                return Err(invalid(
                    format!("routes[{i}].match.methods"),
                    "upper-case method names",
                ));
            }
            if route.connection.is_some() && route.forward_token {
                return Err(invalid(
                    format!("routes[{i}].forward_token"),
                    "a `connection` route sends the exchanged token upstream, never the user's",
                ));
            }
            if route.connection.is_some() && self.vault.is_none() {
                return Err(invalid(
                    format!("routes[{i}].connection"),
                    "a connection needs the `vault` section",
                ));
            }
        }
        if let Some(vault) = &self.vault {
            if vault.cluster.is_empty() {
                return Err(invalid("vault.cluster", "must not be empty"));
            }
            if vault.client_id.is_empty() {
                return Err(invalid("vault.client_id", "must not be empty"));
            }
            vault.check_secret()?;
            if !vault.token_path.starts_with('/') {
                return Err(invalid("vault.token_path", "must start with `/`"));
            }
            if vault.timeout_ms == 0 {
                return Err(invalid("vault.timeout_ms", "must be positive"));
            }
        }
        Ok(())
    }

    /// The first route that matches a normalised path, if any.
    pub fn route(&self, method: &str, path: &str) -> Option<&Route> {
        self.route_index(method, path).map(|i| &self.routes[i])
    }

    /// Index in `routes` of the first route that matches a normalised path
    /// ([`crate::path::normalize`]), if any.
    pub fn route_index(&self, method: &str, path: &str) -> Option<usize> {
        let path = path.split('?').next().unwrap_or(path);
        self.routes
            .iter()
            .position(|r| r.matcher.matches(method, path))
    }

    /// Scopes advertised in the protected resource metadata.
    pub fn advertised_scopes(&self) -> Vec<String> {
        if !self.scopes_supported.is_empty() {
            return self.scopes_supported.clone();
        }
        let mut scopes: Vec<String> = Vec::new();
        for s in self.routes.iter().flat_map(|r| r.scopes.iter()) {
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
        scopes
    }
}

fn is_absolute_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    matches!(rest, Some(r) if !r.is_empty() && !r.starts_with('/'))
}

fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

fn default_clock_skew() -> u64 {
    30
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
fn default_token_path() -> String {
    "/oauth/token".into()
}
fn default_vault_timeout_ms() -> u64 {
    2000
}
fn default_max_cache() -> u64 {
    300
}
fn default_expiry_margin() -> u64 {
    30
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Value {
        serde_json::json!({
            "resource": "https://api.example.com",
            "issuers": [{
                "issuer": "https://idp.example.com/",
                "audiences": ["https://api.example.com"],
                "jwks_uri": "https://idp.example.com/jwks.json",
                "jwks_cluster": "idp"
            }]
        })
    }

    fn parse(v: serde_json::Value) -> Result<Policy, PolicyError> {
        Policy::parse(v.to_string().as_bytes())
    }

    #[test]
    fn minimal_policy_gets_safe_defaults() {
        let p = parse(base()).unwrap();
        assert_eq!(p.clock_skew_seconds, 30);
        assert_eq!(
            p.issuers[0].algorithms,
            vec![Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA]
        );
        assert_eq!(p.identity.cache_max_entries, 10_000);
        assert_eq!(p.identity.max_held_requests, 1000);
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

    #[test]
    fn missing_resource_is_named() {
        let mut v = base();
        v.as_object_mut().unwrap().remove("resource");
        let e = parse(v).unwrap_err();
        assert!(e.message.contains("resource"), "{e}");
    }

    #[test]
    fn route_prefix_matches_on_segment_boundaries() {
        let m = RouteMatch {
            methods: vec!["GET".into()],
            path: None,
            path_prefix: Some("/prices".into()),
        };
        assert!(m.matches("GET", "/prices"));
        assert!(m.matches("GET", "/prices/ACME"));
        assert!(!m.matches("GET", "/pricesx"));
        assert!(!m.matches("POST", "/prices"));
    }

    #[test]
    fn head_matches_wherever_get_does() {
        let m = RouteMatch {
            methods: vec!["GET".into()],
            path: Some("/broker/portfolio".into()),
            path_prefix: None,
        };
        assert!(m.matches("HEAD", "/broker/portfolio"));
        assert!(!m.matches("POST", "/broker/portfolio"));
        let post = RouteMatch {
            methods: vec!["POST".into()],
            ..m
        };
        assert!(!post.matches("HEAD", "/broker/portfolio"));
    }

    #[test]
    fn exact_path_matches_with_or_without_a_trailing_slash() {
        let m = RouteMatch {
            methods: vec![],
            path: Some("/trades".into()),
            path_prefix: None,
        };
        assert!(m.matches("POST", "/trades"));
        assert!(m.matches("POST", "/trades/"));
        assert!(!m.matches("POST", "/trades/x"));
        assert!(!m.matches("POST", "/tradesx"));
        let root = RouteMatch {
            path: Some("/".into()),
            ..m
        };
        assert!(root.matches("GET", "/"));
        assert!(!root.matches("GET", "/x"));
    }

    #[test]
    fn unmatched_defaults_to_deny_and_names_its_values() {
        assert_eq!(parse(base()).unwrap().unmatched, Unmatched::Deny);
        for (name, value) in [
            ("deny", Unmatched::Deny),
            ("authenticated", Unmatched::Authenticated),
            ("public", Unmatched::Public),
        ] {
            let mut v = base();
            v["unmatched"] = serde_json::json!(name);
            assert_eq!(parse(v).unwrap().unmatched, value);
        }
        let mut v = base();
        v["unmatched"] = serde_json::json!("allow");
        assert_eq!(parse(v).unwrap_err().field, "unmatched");
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

    #[test]
    fn route_paths_that_are_not_normalised_are_refused() {
        for (field, path) in [
            ("path", "/a//b"),
            ("path", "/a/../b"),
            ("path_prefix", "/%61pi"),
            ("path", "/a?x=1"),
            ("path_prefix", "api"),
            ("path", "/a%2Fb"),
        ] {
            let mut v = base();
            v["routes"] = serde_json::json!([{"match": {field: path}}]);
            assert_eq!(
                parse(v).unwrap_err().field,
                format!("routes[0].match.{field}"),
                "{path}"
            );
        }
    }

    #[test]
    fn forward_token_on_a_connection_route_is_refused() {
        let mut v = base();
        v["vault"] =
            serde_json::json!({"cluster": "vault", "client_id": "g", "client_secret": "s"});
        v["routes"] = serde_json::json!([{"match": {"path": "/p"}, "connection": "c", "forward_token": true}]);
        assert_eq!(parse(v).unwrap_err().field, "routes[0].forward_token");
    }

    #[test]
    fn connection_without_vault_is_refused() {
        let mut v = base();
        v["routes"] = serde_json::json!([{"match": {"path": "/p"}, "connection": "stocktrade"}]);
        assert_eq!(parse(v).unwrap_err().field, "routes[0].connection");
    }
}
