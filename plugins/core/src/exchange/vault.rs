//! The messages of a token exchange (RFC 8693, or Auth0 Token Vault's
//! federated-connection dialect): the request a gateway sends, the answer it
//! reads, the cache entry it keeps, and the errors an agent gets.

use crate::cache::{TokenCache, TokenKey};
use crate::policy::{ExchangeDialect, Route, VaultClient};
use crate::response::LocalResponse;
use crate::step::Callout;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

/// RFC 8693 grant type.
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// Auth0 Token Vault grant type.
pub const GRANT_AUTH0_FEDERATED: &str =
    "urn:auth0:params:oauth:grant-type:token-exchange:federated-connection-access-token";
/// Auth0 Token Vault requested token type.
pub const AUTH0_FEDERATED_TOKEN_TYPE: &str =
    "http://auth0.com/oauth/token-type/federated-connection-access-token";
/// RFC 8693 access token type.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// What is exchanged for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeTarget {
    /// Vault connection (e.g. `stocktrade`).
    pub connection: String,
    /// Requested audience, if the route names one.
    pub audience: Option<String>,
    /// Requested scopes, space-separated (empty: the connection's defaults).
    pub scope: String,
}

impl ExchangeTarget {
    /// The target of a route, if it has an `exchange` section.
    pub fn of(route: &Route) -> Option<ExchangeTarget> {
        let exchange = route.exchange.as_ref()?;
        Some(ExchangeTarget {
            connection: exchange.connection.clone(),
            audience: exchange.audience.clone(),
            scope: exchange.scopes.join(" "),
        })
    }

    /// Shared-data key of the cached upstream token for a user (`sub` is
    /// unique only within its issuer, so both count): a hash, so the key
    /// names neither the user nor the token.
    pub fn cache_key(&self, issuer: &str, subject: &str) -> String {
        let digest = self.digest(&[issuer, subject]);
        let mut key = String::with_capacity(24 + 40);
        key.push_str("agentward.upstream_token.");
        for b in &digest[..20] {
            key.push(char::from(HEX[usize::from(b >> 4)]));
            key.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        key
    }

    /// Key of a gateway VM's own cache of exchanges: the bearer
    /// token's signature and this target (the cache holds no bearer
    /// tokens). The signature alone tells verified tokens apart (two tokens
    /// with one signature would need a hash collision) and is a fraction of
    /// the token to hash; an entry is only ever made from the token that
    /// carried the signature, and the identity headers are still checked
    /// against it.
    pub fn local_key<V: Clone>(&self, cache: &TokenCache<V>, bearer: &str) -> TokenKey {
        let signature = bearer.rsplit_once('.').map_or(bearer, |(_, s)| s);
        cache.key(&[
            signature,
            &self.connection,
            &self.scope,
            self.audience.as_deref().unwrap_or(""),
        ])
    }

    /// SHA-256 of `first` then this target, each part length-prefixed so no
    /// choice of values collides with another.
    fn digest(&self, first: &[&str]) -> [u8; 32] {
        let mut h = Sha256::new();
        let target = [
            self.connection.as_str(),
            self.scope.as_str(),
            self.audience.as_deref().unwrap_or(""),
        ];
        for part in first.iter().chain(target.iter()) {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().into()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The token request for `subject_token` (the user's verified bearer token).
pub fn token_request(vault: &VaultClient, target: &ExchangeTarget, subject_token: &str) -> Callout {
    let mut form = Form::default();
    match vault.dialect {
        ExchangeDialect::Rfc8693 => {
            form.add("grant_type", GRANT_TOKEN_EXCHANGE);
            form.add("subject_token", subject_token);
            form.add("subject_token_type", ACCESS_TOKEN_TYPE);
            form.add("requested_token_type", ACCESS_TOKEN_TYPE);
            form.add("resource", &target.connection);
            if let Some(audience) = &target.audience {
                form.add("audience", audience);
            }
        }
        ExchangeDialect::Auth0 => {
            form.add("grant_type", GRANT_AUTH0_FEDERATED);
            form.add("client_id", &vault.client_id);
            form.add("client_secret", vault.client_secret.expose());
            form.add("subject_token", subject_token);
            form.add("subject_token_type", ACCESS_TOKEN_TYPE);
            form.add("requested_token_type", AUTH0_FEDERATED_TOKEN_TYPE);
            form.add("connection", &target.connection);
        }
    }
    if !target.scope.is_empty() {
        form.add("scope", &target.scope);
    }
    let authority = vault.authority.as_deref().unwrap_or(&vault.cluster);
    let mut call = Callout::post(
        &vault.cluster,
        authority,
        &vault.token_path,
        "application/x-www-form-urlencoded",
        form.0.into_bytes(),
    )
    .header("accept", "application/json")
    .timeout_ms(vault.timeout_ms)
    .max_answer_bytes(MAX_ANSWER_BYTES);
    if vault.dialect == ExchangeDialect::Rfc8693 {
        // RFC 6749 §2.3.1: each part form-encoded, then base64.
        let credentials = format!(
            "{}:{}",
            Form::encode(&vault.client_id),
            Form::encode(vault.client_secret.expose())
        );
        call = call.header(
            "authorization",
            &format!("Basic {}", STANDARD.encode(credentials)),
        );
    }
    call
}

/// The largest vault answer read; a larger one is a vault failure (503).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// An upstream access token with its expiry, as cached in shared data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamToken {
    /// The upstream access token.
    pub access_token: String,
    /// Expiry, Unix seconds (for the gateway: see [`UpstreamToken::cap_lifetime`]).
    pub expires_at: u64,
}

impl UpstreamToken {
    /// Shortens its expiry so that, fetched at `now`, it is served for at
    /// most `vault.max_cache_seconds` (with the margin it is usable until).
    pub fn cap_lifetime(&mut self, now: u64, vault: &VaultClient) {
        let cap = now
            .saturating_add(vault.max_cache_seconds)
            .saturating_add(vault.expiry_margin_seconds);
        self.expires_at = self.expires_at.min(cap);
    }

    /// Whether it can still be used at `now` with `margin` seconds to spare.
    pub fn usable(&self, now: u64, margin: u64) -> bool {
        now.saturating_add(margin) < self.expires_at
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
    #[serde(default)]
    connect_url: Option<String>,
}

/// What the vault's answer means for the held request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeResult {
    /// Use this token upstream (and cache it).
    Token(UpstreamToken),
    /// Answer the agent.
    Refuse(LocalResponse),
}

/// Vault errors that only the user can resolve (by linking or consenting).
const USER_ACTION_ERRORS: [&str; 5] = [
    "federated_connection_refresh_token_not_found",
    "invalid_grant",
    "consent_required",
    "interaction_required",
    "login_required",
];

/// Upstream tokens without `expires_in` are kept this long.
const DEFAULT_LIFETIME: u64 = 300;

/// Reads the vault's answer (`status` None: no answer, timeout or reset).
pub fn read_answer(status: Option<u32>, body: &[u8], now: u64, connection: &str) -> ExchangeResult {
    match status {
        Some(200) => match serde_json::from_slice::<TokenAnswer>(body) {
            Ok(a)
                if !a.access_token.is_empty()
                    && a.token_type
                        .as_deref()
                        .is_none_or(|t| t.eq_ignore_ascii_case("bearer"))
                    && !a.access_token.chars().any(|c| c.is_control()) =>
            {
                ExchangeResult::Token(UpstreamToken {
                    access_token: a.access_token,
                    expires_at: now.saturating_add(a.expires_in.unwrap_or(DEFAULT_LIFETIME)),
                })
            }
            _ => ExchangeResult::Refuse(unavailable("the vault answered with an unusable token")),
        },
        Some(429) => ExchangeResult::Refuse(unavailable("the vault is rate-limiting the gateway")),
        Some(400..=499) => match serde_json::from_slice::<ErrorAnswer>(body) {
            Ok(e) if e.connect_url.is_some() || USER_ACTION_ERRORS.contains(&e.error.as_str()) => {
                // The user must (re)link the account: say where.
                let description = e.error_description.unwrap_or_else(|| {
                    format!("the user has not linked the `{connection}` connection")
                });
                let mut body = json!({
                    "error": e.error,
                    "error_description": description,
                    "connection": connection,
                });
                if let Some(url) = e.connect_url {
                    body["connect_url"] = json!(url);
                }
                ExchangeResult::Refuse(LocalResponse::json(403, body))
            }
            // Wrong credentials, dialect or connection name: an operator problem.
            _ => ExchangeResult::Refuse(LocalResponse::json(
                502,
                json!({
                    "error": "server_error",
                    "reason": "vault_refused_gateway",
                    "error_description": "the vault refused the gateway's token request",
                }),
            )),
        },
        _ => ExchangeResult::Refuse(unavailable("the vault could not be reached")),
    }
}

/// 503 for a vault that is down or slow.
pub fn unavailable(description: &str) -> LocalResponse {
    crate::response::unavailable("vault_unavailable", description)
}

/// `application/x-www-form-urlencoded` body builder.
#[derive(Default)]
struct Form(String);

impl Form {
    fn add(&mut self, name: &str, value: &str) {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        self.0.push_str(&Form::encode(name));
        self.0.push('=');
        self.0.push_str(&Form::encode(value));
    }

    fn encode(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                    out.push(b as char)
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault(dialect: ExchangeDialect) -> VaultClient {
        VaultClient {
            cluster: "vault".into(),
            authority: None,
            token_path: "/oauth/token".into(),
            client_id: "gateway".into(),
            client_secret: "s3cr:t".into(),
            client_secret_env: None,
            dialect,
            timeout_ms: 2000,
            expiry_margin_seconds: 30,
            max_cache_seconds: 300,
        }
    }

    fn target() -> ExchangeTarget {
        ExchangeTarget {
            connection: "stocktrade".into(),
            audience: None,
            scope: "portfolio:read".into(),
        }
    }

    #[test]
    fn rfc8693_request_uses_basic_auth_and_resource() {
        let c = token_request(&vault(ExchangeDialect::Rfc8693), &target(), "eyJ.a.b");
        let body = String::from_utf8(c.body.clone()).unwrap();
        assert!(body
            .starts_with("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&"));
        assert!(body.contains("&resource=stocktrade"));
        assert!(body.contains("&scope=portfolio%3Aread"));
        assert!(!body.contains("client_secret"));
        assert_eq!(
            (c.method, c.path.as_str(), c.authority.as_str()),
            ("POST", "/oauth/token", "vault")
        );
        assert_eq!((c.timeout_ms, c.max_answer_bytes), (2000, MAX_ANSWER_BYTES));
        let auth = &c
            .headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .unwrap()
            .1;
        assert_eq!(
            auth,
            &format!("Basic {}", STANDARD.encode("gateway:s3cr%3At"))
        );
    }

    #[test]
    fn auth0_request_names_the_connection() {
        let c = token_request(&vault(ExchangeDialect::Auth0), &target(), "tok");
        let body = String::from_utf8(c.body.clone()).unwrap();
        assert!(body.contains("connection=stocktrade"));
        assert!(body.contains("requested_token_type=http%3A%2F%2Fauth0.com%2Foauth%2Ftoken-type%2Ffederated-connection-access-token"));
        assert!(body.contains("client_id=gateway"));
        assert!(c.headers.iter().all(|(n, _)| n != "authorization"));
    }

    #[test]
    fn answers_map_to_token_link_error_or_503() {
        let ok = read_answer(
            Some(200),
            br#"{"access_token":"up","token_type":"Bearer","expires_in":60}"#,
            1000,
            "c",
        );
        assert_eq!(
            ok,
            ExchangeResult::Token(UpstreamToken {
                access_token: "up".into(),
                expires_at: 1060
            })
        );
        let link = read_answer(
            Some(400),
            br#"{"error":"federated_connection_refresh_token_not_found","connect_url":"http://v/connect/c?ticket=x"}"#,
            0,
            "c",
        );
        let ExchangeResult::Refuse(r) = link else {
            panic!()
        };
        assert_eq!(r.status, 403);
        assert!(r.body.contains("connect_url"));
        let ExchangeResult::Refuse(r) = read_answer(None, b"", 0, "c") else {
            panic!()
        };
        assert_eq!(r.status, 503);
        let ExchangeResult::Refuse(r) = read_answer(Some(500), b"oops", 0, "c") else {
            panic!()
        };
        assert_eq!(r.status, 503);
        for (status, body) in [
            (401, r#"{"error":"invalid_client"}"#),
            (400, r#"{"error":"invalid_target"}"#),
            (400, r#"{"error":"unsupported_grant_type"}"#),
        ] {
            let ExchangeResult::Refuse(r) = read_answer(Some(status), body.as_bytes(), 0, "c")
            else {
                panic!()
            };
            assert_eq!(r.status, 502, "{body}");
        }
        let ExchangeResult::Refuse(r) = read_answer(Some(429), b"", 0, "c") else {
            panic!()
        };
        assert_eq!(r.status, 503);
    }

    #[test]
    fn cache_keys_separate_users_and_targets() {
        let t = target();
        assert_ne!(t.cache_key("idp", "alice"), t.cache_key("idp", "bob"));
        assert_ne!(t.cache_key("idp-a", "alice"), t.cache_key("idp-b", "alice"));
        let mut other = t.clone();
        other.scope = "trade".into();
        assert_ne!(t.cache_key("idp", "alice"), other.cache_key("idp", "alice"));
        assert!(!t.cache_key("idp", "alice").contains("alice"));
        // The shared key is stable across releases: workers of an Envoy being
        // upgraded share entries.
        assert_eq!(
            t.cache_key("idp", "alice"),
            "agentward.upstream_token.".to_string()
                + &{
                    let mut h = Sha256::new();
                    for part in ["idp", "alice", &t.connection, &t.scope, ""] {
                        h.update((part.len() as u64).to_be_bytes());
                        h.update(part.as_bytes());
                    }
                    h.finalize()[..20]
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                }
        );
    }

    #[test]
    fn local_keys_are_per_bearer_target_and_cache() {
        let t = target();
        let cache: TokenCache<()> = TokenCache::new(8);
        assert_eq!(
            t.local_key(&cache, "token-a"),
            t.local_key(&cache, "token-a")
        );
        assert_ne!(
            t.local_key(&cache, "token-a"),
            t.local_key(&cache, "token-b")
        );
        // A JWT is told apart by its signature.
        assert_ne!(
            t.local_key(&cache, "h.p.sig-1"),
            t.local_key(&cache, "h.p.sig-2")
        );
        assert_eq!(
            t.local_key(&cache, "h.p.sig-1"),
            t.local_key(&cache, "other.p.sig-1")
        );
        let mut other = t.clone();
        other.connection = "google".into();
        assert_ne!(
            t.local_key(&cache, "token-a"),
            other.local_key(&cache, "token-a")
        );
        // Another VM's cache draws another secret.
        let elsewhere: TokenCache<()> = TokenCache::new(8);
        assert_ne!(
            t.local_key(&cache, "token-a"),
            t.local_key(&elsewhere, "token-a")
        );
    }

    #[test]
    fn usable_until_the_margin() {
        let t = UpstreamToken {
            access_token: "x".into(),
            expires_at: 100,
        };
        assert!(t.usable(69, 30));
        assert!(!t.usable(70, 30));
    }

    #[test]
    fn served_for_at_most_max_cache_seconds() {
        let mut v = vault(ExchangeDialect::Rfc8693);
        let mut t = UpstreamToken {
            access_token: "x".into(),
            expires_at: 1000 + 3600,
        };
        t.cap_lifetime(1000, &v);
        assert!(t.usable(1000 + 299, v.expiry_margin_seconds));
        assert!(!t.usable(1000 + 300, v.expiry_margin_seconds));
        // A token that expires sooner keeps its own expiry.
        let mut short = UpstreamToken {
            access_token: "x".into(),
            expires_at: 1000 + 60,
        };
        short.cap_lifetime(1000, &v);
        assert_eq!(short.expires_at, 1060);
        // 0: never served from the cache.
        v.max_cache_seconds = 0;
        t.cap_lifetime(1000, &v);
        assert!(!t.usable(1000, v.expiry_margin_seconds));
    }
}
