//! The vault as an OpenID CIBA authority (Client-Initiated Backchannel
//! Authentication Core 1.0, poll mode): the gateway asks at
//! `POST /bc-authorize` for the user's approval of one exact action, the
//! user is notified ([`notify`]) with a link to an approval page
//! ([`page`]), and the gateway polls (or long-polls) the token endpoint
//! with `grant_type=urn:openid:params:grant-type:ciba` ([`grant`]) until the
//! user decides; on approval it gets, once, an access token signed by the
//! vault ([`signing`]) that names the user, the client, the approved
//! `authorization_details` and the digest of the request it holds.
//!
//! Secrets: the `auth_req_id` (the client's handle) and the approval link
//! (the user's) are two independent 256-bit random values; the database
//! keeps only their SHA-256. The client never sees the approval link, so
//! its credentials cannot decide.

pub mod authorize;
pub mod events;
pub mod grant;
pub mod introspect;
pub mod notify;
pub mod page;
pub mod signing;

use crate::app::Vault;
use crate::secret::Secret;
use crate::store::Store;
use crate::subject::User;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

/// The CIBA grant type (CIBA Core §10.1).
pub const GRANT_CIBA: &str = "urn:openid:params:grant-type:ciba";

/// Longest `binding_message` (characters), as Auth0 requires.
pub const MAX_BINDING_MESSAGE: usize = 64;

/// The `[ciba]` section: present, the vault is a CIBA authority.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CibaConfig {
    /// `client_id`s of `[[clients]]` that may call `/bc-authorize`; any
    /// other authenticated client gets `unauthorized_client`.
    pub clients: Vec<String>,
    /// Scope values a request may carry (`openid` is always required).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// RFC 9396 `authorization_details` types a request may carry.
    #[serde(default)]
    pub authorization_details_types: Vec<String>,
    /// Largest `authorization_details` (bytes of JSON).
    #[serde(default = "default_max_details_bytes")]
    pub max_authorization_details_bytes: usize,
    /// Values the `audience` parameter may take (the token's `aud`);
    /// without one the token's `aud` is the client.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Lifetime of a request without `requested_expiry`.
    #[serde(default = "default_expiry")]
    pub default_expiry_seconds: u64,
    /// Largest `requested_expiry` accepted.
    #[serde(default = "default_max_expiry")]
    pub max_expiry_seconds: u64,
    /// The polling `interval` announced (grows by 5 s on `slow_down`).
    #[serde(default = "default_interval")]
    pub interval_seconds: u64,
    /// Longest `wait` (long-poll) at the token endpoint; must stay below
    /// `request_timeout_seconds`.
    #[serde(default = "default_max_wait")]
    pub max_wait_seconds: u64,
    /// Requests one user may have waiting at once; more: `access_denied`.
    #[serde(default = "default_max_pending")]
    pub max_pending_per_user: i64,
    /// Lifetime of the access token issued on approval.
    #[serde(default = "default_token_ttl")]
    pub token_ttl_seconds: u64,
    /// PEM (PKCS#8) P-256 private key signing the tokens; without it the
    /// vault generates one and stores it sealed in the database, shared by
    /// the replicas.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// Where users are notified; without it the link is logged (development).
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
}

/// The HTTP webhook notifier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where the notification is POSTed.
    pub url: String,
    /// HMAC-SHA256 key of `X-Agentward-Signature`; or set
    /// `AGENTWARD_VAULT_CIBA_WEBHOOK_SECRET`.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Deliveries tried before giving up.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Timeout of each delivery.
    #[serde(default = "default_webhook_timeout")]
    pub timeout_seconds: u64,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into()]
}
fn default_max_details_bytes() -> usize {
    4096
}
fn default_expiry() -> u64 {
    300
}
fn default_max_expiry() -> u64 {
    3600
}
fn default_interval() -> u64 {
    5
}
fn default_max_wait() -> u64 {
    20
}
fn default_max_pending() -> i64 {
    20
}
fn default_token_ttl() -> u64 {
    300
}
fn default_attempts() -> u32 {
    5
}
fn default_webhook_timeout() -> u64 {
    5
}

/// The webhook secret's environment variable.
pub const WEBHOOK_SECRET_ENV: &str = "AGENTWARD_VAULT_CIBA_WEBHOOK_SECRET";

impl CibaConfig {
    /// Fills the webhook secret from the environment and requires one.
    pub fn resolve_secrets(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        if let Some(hook) = &mut self.webhook {
            if let Some(secret) = env(WEBHOOK_SECRET_ENV) {
                hook.secret = Some(Secret::new(secret));
            }
            if hook.secret.as_ref().is_none_or(Secret::is_empty) {
                return Err(format!(
                    "ciba.webhook.secret: missing (or set {WEBHOOK_SECRET_ENV})"
                ));
            }
        }
        Ok(())
    }

    /// Checks the section against the rest of the configuration; the error
    /// names the field.
    pub fn check(&self, config: &crate::config::Config) -> Result<(), String> {
        if self.clients.is_empty() {
            return Err("ciba.clients: name at least one [[clients]] client_id".into());
        }
        if let Some(id) = self
            .clients
            .iter()
            .find(|id| !config.clients.iter().any(|c| &c.client_id == *id))
        {
            return Err(format!(
                "ciba.clients: `{id}` is not the client_id of any [[clients]] entry"
            ));
        }
        let positive = [
            ("ciba.default_expiry_seconds", self.default_expiry_seconds),
            ("ciba.max_expiry_seconds", self.max_expiry_seconds),
            ("ciba.interval_seconds", self.interval_seconds),
            ("ciba.token_ttl_seconds", self.token_ttl_seconds),
            (
                "ciba.max_authorization_details_bytes",
                self.max_authorization_details_bytes as u64,
            ),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{field}: must be at least 1"));
        }
        if self.default_expiry_seconds > self.max_expiry_seconds {
            return Err("ciba.default_expiry_seconds: must not exceed max_expiry_seconds".into());
        }
        if self.max_wait_seconds >= config.request_timeout_seconds {
            return Err(format!(
                "ciba.max_wait_seconds: must be below request_timeout_seconds ({})",
                config.request_timeout_seconds
            ));
        }
        if self.max_pending_per_user < 1 {
            return Err("ciba.max_pending_per_user: must be at least 1".into());
        }
        if let Some(hook) = &self.webhook {
            if hook.attempts == 0 || hook.timeout_seconds == 0 {
                return Err("ciba.webhook: attempts and timeout_seconds must be at least 1".into());
            }
        }
        Ok(())
    }
}

/// The running CIBA authority.
#[derive(Debug)]
pub struct Ciba {
    /// Its configuration.
    pub config: CibaConfig,
    /// Signs the tokens; its public key is the JWKS.
    pub signer: signing::Signer,
    /// Long-polls waiting for a decision in this process.
    pub waiters: Arc<events::Waiters>,
    /// Other replicas' decisions (PostgreSQL).
    events: Option<events::DecisionEvents>,
    /// How users are told.
    pub notifier: Arc<dyn notify::Notifier>,
}

impl Ciba {
    /// Checks the configuration, loads or makes the signing key and starts
    /// listening for other replicas' decisions.
    pub async fn start(
        config: &crate::config::Config,
        ciba: &CibaConfig,
        store: &Store,
        keys: &crate::seal::Keyring,
        http: reqwest::Client,
    ) -> Result<Ciba, String> {
        ciba.check(config)?;
        let signer = signing::Signer::load(ciba, store, keys).await?;
        let waiters = Arc::new(events::Waiters::default());
        let events = events::DecisionEvents::start(store, waiters.clone()).await;
        let notifier: Arc<dyn notify::Notifier> = match &ciba.webhook {
            Some(hook) => Arc::new(notify::Webhook::new(hook, http)?),
            None => Arc::new(notify::LogNotifier),
        };
        Ok(Ciba {
            config: ciba.clone(),
            signer,
            waiters,
            events,
            notifier,
        })
    }

    /// After a decision on request `id`: wakes the long-polls here and
    /// tells the other replicas to wake theirs.
    pub async fn decided(&self, store: &Store, id: &str) {
        self.waiters.wake(id);
        if let Err(e) = store.announce_ciba_decision(events::CHANNEL, id).await {
            tracing::warn!(error = %e, "cannot tell the other replicas of a CIBA decision");
        }
    }

    /// Whether other replicas' decisions arrive as notices (PostgreSQL
    /// with `LISTEN`).
    pub fn listening(&self) -> bool {
        self.events.is_some()
    }

    /// Stops listening.
    pub async fn shutdown(&self) {
        if let Some(events) = &self.events {
            events.shutdown().await;
        }
    }
}

/// The vault's issuer identifier (`iss` of its tokens, `issuer` of its
/// discovery document): `public_url` as a URL parser writes it, so
/// `http://host:port` gains its `/` as OpenID clients expect.
pub fn issuer(config: &crate::config::Config) -> String {
    let base = config.public_base();
    match reqwest::Url::parse(&base) {
        Ok(url) => url.to_string(),
        Err(_) => base,
    }
}

/// `GET /.well-known/openid-configuration`: the CIBA authority's metadata
/// (CIBA Core §4, RFC 8414, RFC 9396 §10).
pub async fn discovery(State(vault): State<Arc<Vault>>) -> Response {
    let Some(ciba) = vault.ciba.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let base = vault.config.public_base();
    Json(serde_json::json!({
        "issuer": issuer(&vault.config),
        "token_endpoint": format!("{base}/oauth/token"),
        "introspection_endpoint": format!("{base}{}", introspect::PATH),
        "backchannel_authentication_endpoint": format!("{base}/bc-authorize"),
        "backchannel_token_delivery_modes_supported": ["poll"],
        "backchannel_user_code_parameter_supported": false,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "grant_types_supported": [
            GRANT_CIBA,
            crate::token_exchange::GRANT_TOKEN_EXCHANGE,
            crate::token_exchange::GRANT_AUTH0_FEDERATED,
        ],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": ciba.config.scopes,
        "authorization_details_types_supported": ciba.config.authorization_details_types,
        "subject_types_supported": ["public"],
        "response_types_supported": [],
    }))
    .into_response()
}

/// `GET /.well-known/jwks.json`: the public key of the tokens' signatures.
pub async fn jwks(State(vault): State<Arc<Vault>>) -> Response {
    match vault.ciba.as_ref() {
        Some(ciba) => Json(ciba.signer.jwks()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Whether `message` is a valid `binding_message`: 1 to 64 characters,
/// each an ASCII letter or digit, a space or one of `+-_.,:#`.
pub fn binding_message_ok(message: &str) -> bool {
    let count = message.chars().count();
    (1..=MAX_BINDING_MESSAGE).contains(&count)
        && message
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " +-_.,:#".contains(c))
}

/// What a `login_hint` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginHint {
    /// A plain subject: of the one configured issuer.
    Subject(String),
    /// Auth0's `{"format":"iss_sub","iss":…,"sub":…}`.
    IssSub(User),
}

/// Parses a `login_hint`: JSON `iss_sub` (RFC 9493 subject identifier, as
/// Auth0 sends it) or a plain subject.
pub fn parse_login_hint(hint: &str) -> Result<LoginHint, &'static str> {
    if hint.len() > 1024 {
        return Err("login_hint is too long");
    }
    if !hint.trim_start().starts_with('{') {
        if hint.chars().any(char::is_control) {
            return Err("login_hint holds control characters");
        }
        return Ok(LoginHint::Subject(hint.to_string()));
    }
    #[derive(Deserialize)]
    struct IssSub {
        format: String,
        iss: Option<String>,
        sub: Option<String>,
    }
    let parsed: IssSub = serde_json::from_str(hint)
        .map_err(|_| "login_hint is not a subject or an iss_sub JSON object")?;
    if parsed.format != "iss_sub" {
        return Err("login_hint: only the iss_sub format is supported");
    }
    match (parsed.iss, parsed.sub) {
        (Some(iss), Some(sub)) if !iss.is_empty() && !sub.is_empty() => {
            Ok(LoginHint::IssSub(User::new(iss, sub)))
        }
        _ => Err("login_hint: iss_sub needs iss and sub"),
    }
}

/// Checks RFC 9396 `authorization_details`: a JSON array of objects, each
/// with a string `type` among `known`, at most `max_bytes` long. Answers
/// the compact JSON text kept and signed.
pub fn parse_authorization_details(
    text: &str,
    known: &[String],
    max_bytes: usize,
) -> Result<String, String> {
    if text.len() > max_bytes {
        return Err(format!(
            "authorization_details is larger than {max_bytes} bytes"
        ));
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|_| "authorization_details is not JSON".to_string())?;
    let items = value
        .as_array()
        .filter(|items| !items.is_empty())
        .ok_or("authorization_details must be a non-empty JSON array")?;
    for (i, item) in items.iter().enumerate() {
        let kind = item
            .as_object()
            .ok_or(format!("authorization_details[{i}] is not an object"))?
            .get("type")
            .and_then(|t| t.as_str())
            .ok_or(format!("authorization_details[{i}] has no string type"))?;
        if !known.iter().any(|k| k == kind) {
            return Err(format!(
                "authorization_details[{i}]: the type is not one the vault knows"
            ));
        }
    }
    Ok(value.to_string())
}

/// Whether a `request_digest` has the shape of one: 1 to 128 characters of
/// letters, digits and `-_.:=+/`.
pub fn request_digest_ok(digest: &str) -> bool {
    (1..=128).contains(&digest.len())
        && digest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:=+/".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_messages_follow_auth0s_rules() {
        for ok in [
            "Buy 50 ACME",
            "a",
            "Pay 1,000.50 EUR to #42: rent_2026-12+x",
        ] {
            assert!(binding_message_ok(ok), "{ok}");
        }
        let long = "x".repeat(65);
        for bad in [
            "", "<script>", "a\nb", "50%", "quote\"", &long, "tab\tx", "a/b",
        ] {
            assert!(!binding_message_ok(bad), "{bad}");
        }
        assert!(!binding_message_ok("café"), "ASCII letters only");
    }

    #[test]
    fn login_hints_are_subjects_or_iss_sub() {
        assert_eq!(
            parse_login_hint("alice"),
            Ok(LoginHint::Subject("alice".into()))
        );
        assert_eq!(
            parse_login_hint(r#"{"format":"iss_sub","iss":"https://i/","sub":"alice"}"#),
            Ok(LoginHint::IssSub(User::new("https://i/", "alice")))
        );
        for bad in [
            r#"{"format":"email","email":"a@b"}"#,
            r#"{"format":"iss_sub","sub":"alice"}"#,
            r#"{"format":"iss_sub","iss":"","sub":"alice"}"#,
            "{not json",
            "a\u{0}b",
        ] {
            assert!(parse_login_hint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn authorization_details_are_typed_bounded_arrays() {
        let known = vec!["trade".to_string()];
        let ok = parse_authorization_details(
            r#"[ {"type":"trade","ticker":"ACME","qty":50} ]"#,
            &known,
            4096,
        )
        .unwrap();
        assert_eq!(ok, r#"[{"qty":50,"ticker":"ACME","type":"trade"}]"#);
        for (bad, why) in [
            ("{}", "non-empty JSON array"),
            ("[]", "non-empty JSON array"),
            ("[1]", "is not an object"),
            (r#"[{"ticker":"ACME"}]"#, "no string type"),
            (r#"[{"type":"payment"}]"#, "not one the vault knows"),
            ("nope", "not JSON"),
        ] {
            let err = parse_authorization_details(bad, &known, 4096).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let err = parse_authorization_details(r#"[{"type":"trade"}]"#, &known, 8).unwrap_err();
        assert!(err.contains("larger than 8 bytes"), "{err}");
    }

    #[test]
    fn request_digests_are_short_tokens() {
        assert!(request_digest_ok(
            "sha-256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        ));
        assert!(!request_digest_ok(""));
        assert!(!request_digest_ok("a b"));
        assert!(!request_digest_ok(&"a".repeat(129)));
    }
}
