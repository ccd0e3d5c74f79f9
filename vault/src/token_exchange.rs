//! `POST /oauth/token`: token exchange for a confidential client (the
//! gateway), in the RFC 8693 dialect and the Auth0 Token Vault dialect. Swaps
//! a verified user token for the user's upstream access token: from the
//! sealed cache while it has time left, else by spending the sealed refresh
//! token once (single-flight in the process, a row lock across replicas).

use crate::access_cache::Entry;
use crate::app::{unix_now, Vault};
use crate::config::ConnectionConfig;
use crate::linking::DEFAULT_EXPIRES_IN;
use crate::oauth_error::OAuthError;
use crate::seal::link_aad;
use crate::store::{CachedAccess, Link, TokenWrite};
use crate::subject::{Subject, SubjectError};
use crate::upstream::UpstreamError;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// RFC 8693 grant type.
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// Auth0 Token Vault grant type.
pub const GRANT_AUTH0_FEDERATED: &str =
    "urn:auth0:params:oauth:grant-type:token-exchange:federated-connection-access-token";
/// Auth0 Token Vault requested/issued token type.
pub const TOKEN_TYPE_FEDERATED: &str =
    "http://auth0.com/oauth/token-type/federated-connection-access-token";
/// RFC 8693 access-token type.
pub const TOKEN_TYPE_ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 8693 JWT type.
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// RFC 8693 refresh-token type.
pub const TOKEN_TYPE_REFRESH: &str = "urn:ietf:params:oauth:token-type:refresh_token";
/// Error code for a missing or broken link (as Auth0 Token Vault names it).
pub const NOT_LINKED: &str = "federated_connection_refresh_token_not_found";

/// The successful answer (RFC 8693 §2.2.1).
#[derive(Serialize)]
pub struct ExchangeResponse {
    /// The upstream access token.
    pub access_token: String,
    /// `urn:ietf:params:oauth:token-type:access_token`, or the Auth0 federated type.
    pub issued_token_type: &'static str,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds the token has left.
    pub expires_in: i64,
    /// Scope of the token, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl std::fmt::Debug for ExchangeResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeResponse")
            .field("access_token", &"[redacted]")
            .field("issued_token_type", &self.issued_token_type)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

/// A parsed exchange request.
struct ExchangeRequest {
    auth0: bool,
    subject_token: String,
    connection: String,
    scope: Option<String>,
}

/// What became of one exchange: the outcome code for audit and metrics.
struct Failure {
    outcome: &'static str,
    error: OAuthError,
    /// The user must (re)link: the answer carries a fresh connect link.
    connect: bool,
}

impl std::fmt::Debug for ExchangeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeRequest")
            .field("auth0", &self.auth0)
            .field("subject_token", &"[redacted]")
            .field("connection", &self.connection)
            .field("scope", &self.scope)
            .finish()
    }
}

fn fail(outcome: &'static str, error: OAuthError) -> Failure {
    Failure {
        outcome,
        error,
        connect: false,
    }
}

/// A failure whose answer carries a connect link (added by [`token`]).
fn fail_connect(outcome: &'static str, error: OAuthError) -> Failure {
    Failure {
        connect: true,
        ..fail(outcome, error)
    }
}

/// Gives a failure that asks for one its connect link (a stored ticket);
/// a ticket that cannot be stored makes it a `server_error`.
async fn with_connect_url(
    vault: &Vault,
    subject: &Subject,
    connection: &str,
    f: Failure,
) -> Failure {
    if !f.connect {
        return f;
    }
    match vault.connect_url(subject, connection).await {
        Ok(url) => Failure {
            error: f.error.with_connect_url(url),
            ..f
        },
        Err(e) => {
            tracing::error!(error = %e, "cannot store a connect ticket");
            fail("server_error", OAuthError::server_error())
        }
    }
}

/// `POST /oauth/token`. A client that sends HTTP Basic credentials is
/// authenticated before its body is read; the body is read within
/// `max_token_request_bytes` and `body_read_timeout_seconds`.
pub async fn token(State(vault): State<Arc<Vault>>, headers: HeaderMap, body: Body) -> Response {
    let (client_id, params) = match client_form(&vault, &headers, body).await {
        Ok(form) => form,
        Err((outcome, e)) => {
            vault.metrics.exchange(outcome);
            return e.into_response();
        }
    };
    if let Ok(Some(crate::ciba::GRANT_CIBA)) = single(&params, "grant_type") {
        return crate::ciba::grant::token(&vault, &client_id, &params).await;
    }
    let request = match parse_request(&vault, &params) {
        Ok(r) => r,
        Err(f) => {
            vault.metrics.exchange(f.outcome);
            return f.error.into_response();
        }
    };
    let subject = match vault.subjects.verify(&request.subject_token).await {
        Ok(s) => s,
        Err(e) => {
            let (outcome, error) = match e {
                SubjectError::Rejected { code, description } => {
                    tracing::info!(reason = code, connection = %request.connection, "subject token rejected");
                    (
                        "subject_rejected",
                        OAuthError::invalid_request(format!(
                            "subject_token rejected: {description}"
                        )),
                    )
                }
                SubjectError::KeysUnavailable => (
                    "issuer_unavailable",
                    OAuthError::unavailable("the subject token issuer's keys are unavailable"),
                ),
            };
            vault.metrics.exchange(outcome);
            vault
                .audit(None, None, Some(&request.connection), outcome)
                .await;
            return error.into_response();
        }
    };
    let result = match exchange(&vault, &subject, &request).await {
        Err(f) => Err(with_connect_url(&vault, &subject, &request.connection, f).await),
        ok => ok,
    };
    let outcome = match &result {
        Ok((_, outcome)) => *outcome,
        Err(f) => f.outcome,
    };
    vault.metrics.exchange(outcome);
    vault
        .audit(
            Some(&subject.user()),
            subject.agent.as_deref(),
            Some(&request.connection),
            outcome,
        )
        .await;
    tracing::info!(
        issuer = %subject.issuer,
        sub = %subject.sub,
        agent = subject.agent.as_deref().unwrap_or(""),
        connection = %request.connection,
        dialect = if request.auth0 { "auth0" } else { "rfc8693" },
        outcome,
        "token exchange"
    );
    match result {
        Ok((answer, _)) => (
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            Json(answer),
        )
            .into_response(),
        Err(f) => f.error.into_response(),
    }
}

pub(crate) fn parse_form(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<(String, String)>, OAuthError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    serde_urlencoded::from_bytes(body)
        .map_err(|_| OAuthError::invalid_request("the form body is malformed"))
}

/// The single value of a parameter; RFC 6749 §3.2 forbids repeating one.
pub(crate) fn single<'a>(
    params: &'a [(String, String)],
    name: &str,
) -> Result<Option<&'a str>, OAuthError> {
    let mut values = params
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str());
    let first = values.next();
    if values.next().is_some() {
        return Err(OAuthError::invalid_request(format!("{name} is repeated")));
    }
    Ok(first.filter(|v| !v.is_empty()))
}

fn digest_eq(a: &str, b: &str) -> bool {
    // Compare digests so the timing reveals nothing about the secret.
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn form_decode(s: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={s}"))
        .ok()
        .and_then(|mut v| v.pop())
        .map(|(_, v)| v)
}

/// A client-authenticated form POST, as the token, backchannel
/// authentication and introspection endpoints take it: HTTP Basic checked
/// before the body is read, the body read within the configured bounds, the
/// form parsed, then the client authenticated. The client id and the
/// parameters, or the metrics outcome and the answer.
pub(crate) async fn client_form(
    vault: &Vault,
    headers: &HeaderMap,
    body: Body,
) -> Result<(String, Vec<(String, String)>), (&'static str, OAuthError)> {
    let client = |e| ("invalid_client", e);
    authenticate_basic_first(vault, headers).map_err(client)?;
    let body = crate::request_body::read(
        headers,
        body,
        vault.config.max_token_request_bytes,
        std::time::Duration::from_secs(vault.config.body_read_timeout_seconds),
    )
    .await
    .map_err(|e| ("invalid_request", e))?;
    let params = parse_form(headers, &body).map_err(|e| ("invalid_request", e))?;
    let client_id = authenticate_client(vault, headers, &params).map_err(client)?;
    Ok((client_id, params))
}

/// HTTP Basic credentials, when the request carries them, checked before
/// the body is read (the form is checked again with them afterwards).
pub(crate) fn authenticate_basic_first(
    vault: &Vault,
    headers: &HeaderMap,
) -> Result<(), OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"));
    if basic {
        authenticate_client(vault, headers, &[]).map(drop)
    } else {
        Ok(())
    }
}

/// The client id, once its credentials (HTTP Basic or the form's) match.
pub(crate) fn authenticate_client(
    vault: &Vault,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<String, OAuthError> {
    let (id, secret) = client_credentials(headers, params)?;
    if client_secret_matches(vault, &id, &secret) {
        Ok(id)
    } else {
        tracing::info!(client_id = ?id, "token endpoint client authentication failed");
        Err(OAuthError::invalid_client())
    }
}

/// The client id and secret of a request: HTTP Basic (id and secret
/// form-url-encoded, RFC 6749 §2.3.1) or `client_id` + `client_secret` in
/// `params`, not both. Not checked against the configuration.
pub(crate) fn client_credentials(
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<(String, String), OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, b64)| b64.trim());
    let form_id = single(params, "client_id")?;
    let form_secret = single(params, "client_secret")?;
    match (basic, form_secret) {
        (Some(_), Some(_)) => Err(OAuthError::invalid_request(
            "use one client authentication method",
        )),
        (Some(b64), None) => {
            let raw = STANDARD
                .decode(b64)
                .map_err(|_| OAuthError::invalid_client())?;
            let raw = String::from_utf8(raw).map_err(|_| OAuthError::invalid_client())?;
            let (id, secret) = raw.split_once(':').ok_or_else(OAuthError::invalid_client)?;
            let id = form_decode(id).ok_or_else(OAuthError::invalid_client)?;
            if form_id.is_some_and(|f| f != id) {
                return Err(OAuthError::invalid_client());
            }
            Ok((
                id,
                form_decode(secret).ok_or_else(OAuthError::invalid_client)?,
            ))
        }
        (None, Some(secret)) => Ok((
            form_id.ok_or_else(OAuthError::invalid_client)?.to_string(),
            secret.to_string(),
        )),
        (None, None) => Err(OAuthError::invalid_client()),
    }
}

/// Whether `id` is a configured client and `secret` its secret (compared
/// by digest).
pub(crate) fn client_secret_matches(vault: &Vault, id: &str, secret: &str) -> bool {
    vault
        .config
        .clients
        .iter()
        .find(|c| c.client_id == id)
        .and_then(|c| c.client_secret.as_ref())
        .is_some_and(|expected| digest_eq(expected.expose(), secret))
}

fn find_connection<'a>(vault: &'a Vault, name: &str) -> Option<(&'a str, &'a ConnectionConfig)> {
    vault
        .config
        .connections
        .iter()
        .find(|(n, c)| n.as_str() == name || c.resources.iter().any(|r| r == name))
        .map(|(n, c)| (n.as_str(), c))
}

fn parse_request(vault: &Vault, params: &[(String, String)]) -> Result<ExchangeRequest, Failure> {
    let bad = |e: OAuthError| fail("invalid_request", e);
    let grant_type = single(params, "grant_type").map_err(bad)?;
    let subject_token = single(params, "subject_token")
        .map_err(bad)?
        .ok_or_else(|| bad(OAuthError::invalid_request("subject_token is missing")))?;
    let subject_type = single(params, "subject_token_type")
        .map_err(bad)?
        .ok_or_else(|| bad(OAuthError::invalid_request("subject_token_type is missing")))?;
    let requested = single(params, "requested_token_type").map_err(bad)?;
    let scope = single(params, "scope").map_err(bad)?.map(str::to_string);
    if single(params, "actor_token").map_err(bad)?.is_some() {
        return Err(bad(OAuthError::invalid_request(
            "actor_token is not supported",
        )));
    }
    let unknown_target = || {
        fail(
            "invalid_target",
            OAuthError::new(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                "no such connection",
            ),
        )
    };
    match grant_type {
        Some(GRANT_AUTH0_FEDERATED) => {
            if ![TOKEN_TYPE_ACCESS, TOKEN_TYPE_REFRESH].contains(&subject_type) {
                return Err(bad(OAuthError::invalid_request(
                    "unsupported subject_token_type",
                )));
            }
            if requested.is_some_and(|r| r != TOKEN_TYPE_FEDERATED) {
                return Err(bad(OAuthError::invalid_request(
                    "unsupported requested_token_type",
                )));
            }
            let name = single(params, "connection")
                .map_err(bad)?
                .ok_or_else(|| bad(OAuthError::invalid_request("connection is missing")))?;
            let (connection, _) = vault
                .config
                .connections
                .get_key_value(name)
                .ok_or_else(unknown_target)?;
            Ok(ExchangeRequest {
                auth0: true,
                subject_token: subject_token.into(),
                connection: connection.clone(),
                scope,
            })
        }
        Some(GRANT_TOKEN_EXCHANGE) => {
            if ![TOKEN_TYPE_ACCESS, TOKEN_TYPE_JWT].contains(&subject_type) {
                return Err(bad(OAuthError::invalid_request(
                    "unsupported subject_token_type",
                )));
            }
            if requested.is_some_and(|r| r != TOKEN_TYPE_ACCESS) {
                return Err(bad(OAuthError::invalid_request(
                    "unsupported requested_token_type",
                )));
            }
            // RFC 8693 allows several `resource`/`audience` values; they must
            // all name the same connection.
            let mut found: Option<&str> = None;
            for (_, v) in params
                .iter()
                .filter(|(k, _)| k == "resource" || k == "audience")
            {
                let (name, _) = find_connection(vault, v).ok_or_else(unknown_target)?;
                if found.is_some_and(|f| f != name) {
                    return Err(fail(
                        "invalid_target",
                        OAuthError::new(
                            StatusCode::BAD_REQUEST,
                            "invalid_target",
                            "resource and audience name different connections",
                        ),
                    ));
                }
                found = Some(name);
            }
            let connection = found.ok_or_else(|| {
                bad(OAuthError::invalid_request(
                    "resource or audience is missing",
                ))
            })?;
            Ok(ExchangeRequest {
                auth0: false,
                subject_token: subject_token.into(),
                connection: connection.into(),
                scope,
            })
        }
        _ => Err(fail(
            "unsupported_grant_type",
            OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant_type is not supported",
            ),
        )),
    }
}

fn scope_covers(granted: Option<&str>, requested: Option<&str>) -> bool {
    match (granted, requested) {
        (Some(granted), Some(requested)) => {
            let granted: Vec<&str> = granted.split_whitespace().collect();
            requested.split_whitespace().all(|s| granted.contains(&s))
        }
        _ => true,
    }
}

async fn exchange(
    vault: &Vault,
    subject: &Subject,
    request: &ExchangeRequest,
) -> Result<(ExchangeResponse, &'static str), Failure> {
    let connection = request.connection.as_str();
    let user = &subject.user();
    let conn = vault
        .config
        .connections
        .get(connection)
        .ok_or_else(|| fail("server_error", OAuthError::server_error()))?;
    let internal = |what: &str, e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "{what}");
        fail("server_error", OAuthError::server_error())
    };
    let not_linked = || {
        fail_connect(
            "not_linked",
            OAuthError::new(
                StatusCode::BAD_REQUEST,
                NOT_LINKED,
                format!("the user has not linked a {connection} account"),
            ),
        )
    };
    let broken = |outcome| {
        fail_connect(
            outcome,
            OAuthError::new(
                StatusCode::BAD_REQUEST,
                NOT_LINKED,
                format!(
                    "the {connection} account link is no longer valid; the user must reconnect"
                ),
            ),
        )
    };
    let respond =
        |scope: Option<&str>, expires_at: i64, token: String, now: i64| ExchangeResponse {
            access_token: token,
            issued_token_type: if request.auth0 {
                TOKEN_TYPE_FEDERATED
            } else {
                TOKEN_TYPE_ACCESS
            },
            token_type: "Bearer",
            expires_in: (expires_at - now).max(0),
            scope: scope.map(str::to_string).or_else(|| request.scope.clone()),
        };
    let answer = |link: &Link, access: &CachedAccess, token: String, now: i64| {
        respond(link.scope.as_deref(), access.expires_at, token, now)
    };
    let margin = i64::try_from(vault.config.refresh_margin_seconds).unwrap_or(30);
    let cached = |link: &Link, now: i64| -> Result<Option<(ExchangeResponse, String)>, Failure> {
        match &link.access {
            Some(access) if access.expires_at - now > margin => {
                let token = vault
                    .keys
                    .open_string(&access.sealed, &link_aad("access_token", user, connection))
                    .map_err(|e| internal("cannot open cached access token", &e))?;
                Ok(Some((answer(link, access, token.clone(), now), token)))
            }
            _ => Ok(None),
        }
    };

    // The in-memory copy of the row's token, while it is a few seconds old
    // (see access_cache); anything else goes to the database.
    let generation = vault.access_cache.generation();
    let now = unix_now();
    if let Some(hit) = vault.access_cache.get(user, connection) {
        if hit.expires_at - now > margin
            && scope_covers(hit.scope.as_deref(), request.scope.as_deref())
        {
            return Ok((
                respond(
                    hit.scope.as_deref(),
                    hit.expires_at,
                    hit.token.into_exposed(),
                    now,
                ),
                "issued_cached",
            ));
        }
    }

    let gate = vault.flights.gate(user, connection);
    let _held = gate.lock().await;
    let now = unix_now();
    let link = vault
        .store
        .find_link(user, connection)
        .await
        .map_err(|e| internal("cannot read link", &e))?;
    let Some(link) = link else {
        return Err(not_linked());
    };
    if link.broken {
        return Err(broken("link_broken"));
    }
    if !scope_covers(link.scope.as_deref(), request.scope.as_deref()) {
        return Err(fail_connect(
            "invalid_scope",
            OAuthError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                "the linked account was not granted the requested scope",
            ),
        ));
    }
    if let Some((hit, token)) = cached(&link, now)? {
        if let Some(access) = &link.access {
            vault.access_cache.insert(
                generation,
                user,
                connection,
                Entry::new(token, access.expires_at, link.scope.clone(), link.version),
            );
        }
        return Ok((hit, "issued_cached"));
    }

    // Refresh under the row lease: another replica may have refreshed while
    // we waited for the lock, so look at the cache again first.
    let lease = vault
        .store
        .lease_link(user, connection)
        .await
        .map_err(|e| internal("cannot lock link", &e))?;
    let Some(lease) = lease else {
        return Err(not_linked());
    };
    let link = lease.link().clone();
    let now = unix_now();
    if link.broken {
        let _ = lease.release().await;
        return Err(broken("link_broken"));
    }
    if let Some((hit, _)) = cached(&link, now)? {
        let _ = lease.release().await;
        return Ok((hit, "issued_cached"));
    }
    let refresh_token = match vault
        .keys
        .open_string(&link.refresh, &link_aad("refresh_token", user, connection))
    {
        Ok(t) => t,
        Err(e) => {
            let _ = lease.release().await;
            return Err(internal("cannot open refresh token", &e));
        }
    };
    match vault.upstream.refresh(conn, &refresh_token).await {
        Ok(tokens) => {
            vault.metrics.refresh("ok");
            let now = unix_now();
            let seal = |purpose: &str, value: &str| {
                vault
                    .keys
                    .seal(value.as_bytes(), &link_aad(purpose, user, connection))
            };
            let rotated = tokens
                .refresh_token
                .as_deref()
                .filter(|t| *t != refresh_token);
            let write = (|| {
                Ok::<_, crate::seal::SealError>(TokenWrite {
                    refresh: rotated.map(|t| seal("refresh_token", t)).transpose()?,
                    access: CachedAccess {
                        sealed: seal("access_token", &tokens.access_token)?,
                        expires_at: now + tokens.expires_in.unwrap_or(DEFAULT_EXPIRES_IN),
                    },
                    scope: tokens.scope.clone(),
                })
            })()
            .map_err(|e| internal("cannot seal tokens", &e))?;
            let generation = vault.access_cache.generation();
            let stored = lease.store_refreshed(&write, now).await;
            let link = Link {
                scope: write.scope.clone().or(link.scope),
                ..link
            };
            match stored {
                Ok(true) => vault.access_cache.insert(
                    generation,
                    user,
                    connection,
                    Entry::new(
                        tokens.access_token.clone(),
                        write.access.expires_at,
                        link.scope.clone(),
                        link.version + 1,
                    ),
                ),
                Ok(false) => {
                    vault.access_cache.invalidate(user, connection);
                    tracing::warn!(
                        issuer = %user.issuer,
                        sub = %user.sub,
                        connection,
                        "link changed during refresh; refreshed tokens not stored"
                    )
                }
                Err(e) => {
                    vault.access_cache.invalidate(user, connection);
                    return Err(internal("cannot store refreshed tokens", &e));
                }
            }
            Ok((
                answer(&link, &write.access, tokens.access_token, now),
                "issued_refreshed",
            ))
        }
        Err(UpstreamError::Refused) => {
            vault.metrics.refresh("refused");
            vault.metrics.link("broken");
            let marked = lease.mark_broken(unix_now()).await;
            vault.link_changed(user, connection).await;
            if let Err(e) = marked {
                tracing::error!(error = %e, "cannot flag link as broken");
            }
            Err(broken("refresh_refused"))
        }
        Err(UpstreamError::Unavailable(why)) => {
            vault.metrics.refresh("unavailable");
            let _ = lease.release().await;
            tracing::warn!(issuer = %user.issuer, sub = %user.sub, connection, why, "upstream unavailable for refresh");
            Err(fail(
                "upstream_unavailable",
                OAuthError::unavailable(format!("the {connection} token endpoint is unavailable")),
            ))
        }
        Err(UpstreamError::Rejected(code)) => {
            vault.metrics.refresh("error");
            let _ = lease.release().await;
            tracing::error!(issuer = %user.issuer, sub = %user.sub, connection, upstream_error = %code, "upstream rejected the refresh request");
            Err(fail(
                "upstream_error",
                OAuthError::new(
                    StatusCode::BAD_GATEWAY,
                    "server_error",
                    format!("the {connection} token endpoint rejected the vault's request"),
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_scope_must_be_granted() {
        assert!(scope_covers(Some("read write"), Some("read")));
        assert!(!scope_covers(Some("read"), Some("read write")));
        assert!(scope_covers(None, Some("read")));
        assert!(scope_covers(Some("read"), None));
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        assert_eq!(form_decode("a%3Ab+c").as_deref(), Some("a:b c"));
    }

    #[test]
    fn debug_of_requests_and_answers_shows_no_token() {
        let request = ExchangeRequest {
            auth0: false,
            subject_token: "eyJ.subject.token".into(),
            connection: "c".into(),
            scope: None,
        };
        let answer = ExchangeResponse {
            access_token: "upstream-access-token".into(),
            issued_token_type: TOKEN_TYPE_ACCESS,
            token_type: "Bearer",
            expires_in: 60,
            scope: None,
        };
        let shown = format!("{request:?} {answer:?}");
        assert!(!shown.contains("eyJ.subject"), "{shown}");
        assert!(!shown.contains("upstream-access-token"), "{shown}");
    }

    #[test]
    fn secrets_compare_by_digest() {
        assert!(digest_eq("s3cret", "s3cret"));
        assert!(!digest_eq("s3cret", "s3cret!"));
    }
}
