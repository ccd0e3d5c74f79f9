//! Account linking: the OAuth 2.0 authorization-code flow with PKCE (S256)
//! towards an upstream, for a signed-in user, ending with the upstream
//! refresh token sealed in the store; and unlinking.

use crate::app::{unix_now, Vault};
use crate::oauth_error::OAuthError;
use crate::seal::{link_aad, row_aad};
use crate::store::{CachedAccess, Link, PendingLink, TokenWrite};
use crate::subject::{SubjectError, User};
use crate::upstream::UpstreamError;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Default lifetime assumed for an upstream access token without `expires_in`.
pub const DEFAULT_EXPIRES_IN: i64 = 3600;

/// Query of `GET /connect/{connection}`.
#[derive(Debug, Deserialize)]
pub struct ConnectQuery {
    /// An opaque connect ticket, instead of a bearer token.
    pub ticket: Option<String>,
}

/// Query of `GET /connect/callback`, as the upstream sends it.
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

fn random_b64(bytes: usize) -> Result<String, OAuthError> {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).map_err(|_| OAuthError::server_error())?;
    Ok(B64.encode(buf))
}

/// The bearer token of a request, if any (read as every agentward
/// component reads it: `agentward_core::bearer::token`).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    agentward_core::bearer::token(value)
}

/// The signed-in user (issuer and subject), from a bearer JWT issued for
/// the vault itself (`Config::user_audience`): a token for an API the
/// gateway guards does not open the vault's user endpoints.
pub async fn bearer_user(vault: &Vault, headers: &HeaderMap) -> Result<User, OAuthError> {
    let token =
        bearer(headers).ok_or_else(|| OAuthError::invalid_token("a bearer token is required"))?;
    match vault.users.verify(token).await {
        Ok(subject) => Ok(subject.user()),
        Err(SubjectError::Rejected { description, .. }) => {
            Err(OAuthError::invalid_token(description))
        }
        Err(SubjectError::KeysUnavailable) => Err(OAuthError::unavailable(
            "the issuer's signing keys are unavailable",
        )),
    }
}

/// `GET /connect/{connection}`: with `?ticket=…`, the page that asks the
/// user to confirm (see [`crate::consent`]; nothing is spent); with a
/// bearer token for the vault's audience, starts linking for that user at
/// once (302 to the upstream authorize URL).
pub async fn connect(
    State(vault): State<Arc<Vault>>,
    Path(connection): Path<String>,
    Query(query): Query<ConnectQuery>,
    headers: HeaderMap,
) -> Result<Response, OAuthError> {
    if !vault.config.connections.contains_key(&connection) {
        return Err(no_such_connection());
    }
    match &query.ticket {
        Some(ticket) => crate::consent::page(&vault, &connection, ticket, &headers).await,
        None => {
            let user = bearer_user(&vault, &headers).await?;
            start_linking(&vault, &connection, &user, StatusCode::FOUND).await
        }
    }
}

/// `404 invalid_target`.
pub(crate) fn no_such_connection() -> OAuthError {
    OAuthError::new(
        StatusCode::NOT_FOUND,
        "invalid_target",
        "no such connection",
    )
}

/// Starts an authorization-code flow for `user` at `connection`: stores the
/// pending state (sealed PKCE verifier) and answers `status` (302, or 303
/// after a POST) to the upstream authorize URL, with the cookie that binds
/// the flow to this browser.
pub(crate) async fn start_linking(
    vault: &Vault,
    connection: &str,
    user: &User,
    status: StatusCode,
) -> Result<Response, OAuthError> {
    let conn = vault
        .config
        .connections
        .get(connection)
        .ok_or_else(no_such_connection)?;
    let state = random_b64(32)?;
    let verifier = random_b64(32)?;
    let challenge = B64.encode(Sha256::digest(verifier.as_bytes()));
    let sealed = vault
        .keys
        .seal(verifier.as_bytes(), &verifier_aad(&state, user, connection))
        .map_err(|_| OAuthError::server_error())?;
    let pending = PendingLink {
        state: state.clone(),
        user: user.clone(),
        connection: connection.to_string(),
        verifier: sealed,
        expires_at: unix_now() + i64::try_from(vault.config.state_ttl_seconds).unwrap_or(600),
    };
    vault.store.put_pending(&pending).await.map_err(|e| {
        tracing::error!(error = %e, "cannot store linking state");
        OAuthError::server_error()
    })?;
    let mut url =
        reqwest::Url::parse(&conn.authorize_url).map_err(|_| OAuthError::server_error())?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &conn.client_id)
            .append_pair("redirect_uri", &vault.redirect_uri())
            .append_pair("state", &state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if !conn.scopes.is_empty() {
            q.append_pair("scope", &conn.scopes.join(" "));
        }
        for (k, v) in &conn.authorize_params {
            q.append_pair(k, v);
        }
    }
    tracing::info!(issuer = %user.issuer, sub = %user.sub, connection = %connection, "account linking started");
    let (name, value) = vault.tickets.browser_binding(&state);
    let binding = binding_cookie(vault, &name, &value, vault.config.state_ttl_seconds);
    Ok((
        status,
        [
            (header::LOCATION, url.to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
            (header::SET_COOKIE, binding),
        ],
    )
        .into_response())
}

/// The AAD of a pending flow's sealed PKCE verifier: its `state`, user and
/// connection, so the verifier opens only for the row it was stored with.
fn verifier_aad(state: &str, user: &User, connection: &str) -> Vec<u8> {
    row_aad(
        "pkce_verifier",
        &[state, &user.issuer, &user.sub, connection],
    )
}

/// A `Set-Cookie` for the browser binding of a flow: only ever sent to the
/// callback, not readable by scripts, sent on the provider's top-level
/// redirect back (`SameSite=Lax`), `Secure` when the vault is served over
/// HTTPS. `max_age` 0 clears it.
fn binding_cookie(vault: &Vault, name: &str, value: &str, max_age: u64) -> String {
    let secure = if vault.config.public_base().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{name}={value}; Path=/connect/callback; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    )
}

/// `GET /connect/callback`: the upstream's redirect back. Consumes the
/// single-use `state`, redeems the code and seals the tokens.
pub async fn callback(
    State(vault): State<Arc<Vault>>,
    Query(query): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Result<Response, OAuthError> {
    let state = query
        .state
        .ok_or_else(|| OAuthError::invalid_request("state is missing"))?;
    let now = unix_now();
    let pending = vault.store.take_pending(&state, now).await.map_err(|e| {
        tracing::error!(error = %e, "cannot read linking state");
        OAuthError::server_error()
    })?;
    let Some(pending) = pending else {
        vault.metrics.link("failed");
        return Err(OAuthError::invalid_request(
            "unknown, used or expired state; start linking again",
        ));
    };
    let connection = pending.connection.clone();
    let cookies = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    if !vault.tickets.browser_bound(cookies, &state) {
        // The state is spent either way: a flow someone else started cannot
        // be finished in this browser, nor retried.
        vault.metrics.link("failed");
        tracing::warn!(issuer = %pending.user.issuer, sub = %pending.user.sub, connection = %connection, "account linking finished in another browser than it started in; refused");
        return Err(OAuthError::invalid_request(
            "this linking flow was started in another browser; open the connect link again in this one",
        ));
    }
    let conn = vault
        .config
        .connections
        .get(&connection)
        .ok_or_else(OAuthError::server_error)?;
    if query.error.is_some() {
        vault.metrics.link("failed");
        tracing::info!(issuer = %pending.user.issuer, sub = %pending.user.sub, connection = %connection, "upstream denied account linking");
        return Err(OAuthError::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            "the upstream did not grant access",
        ));
    }
    let code = query
        .code
        .ok_or_else(|| OAuthError::invalid_request("code is missing"))?;
    let verifier = vault
        .keys
        .open_string(
            &pending.verifier,
            &verifier_aad(&state, &pending.user, &connection),
        )
        .map_err(|_| OAuthError::server_error())?;
    let tokens = match vault
        .upstream
        .redeem_code(conn, &code, &verifier, &vault.redirect_uri())
        .await
    {
        Ok(tokens) => tokens,
        Err(e) => {
            vault.metrics.link("failed");
            tracing::warn!(issuer = %pending.user.issuer, sub = %pending.user.sub, connection = %connection, upstream = ?e, "code redemption failed");
            return Err(match e {
                UpstreamError::Unavailable(_) => {
                    OAuthError::unavailable("the upstream is unreachable; try again")
                }
                _ => OAuthError::new(
                    StatusCode::BAD_GATEWAY,
                    "server_error",
                    "the upstream refused the authorization code; start linking again",
                ),
            });
        }
    };
    let Some(refresh) = tokens.refresh_token.as_deref() else {
        vault.metrics.link("failed");
        return Err(OAuthError::new(
            StatusCode::BAD_GATEWAY,
            "server_error",
            "the upstream issued no refresh token; the connection must request offline access",
        ));
    };
    let seal = |purpose: &str, value: &str| {
        vault
            .keys
            .seal(
                value.as_bytes(),
                &link_aad(purpose, &pending.user, &connection),
            )
            .map_err(|_| OAuthError::server_error())
    };
    let write = TokenWrite {
        refresh: Some(seal("refresh_token", refresh)?),
        access: CachedAccess {
            sealed: seal("access_token", &tokens.access_token)?,
            expires_at: now + tokens.expires_in.unwrap_or(DEFAULT_EXPIRES_IN),
        },
        scope: tokens.scope.clone(),
    };
    let saved = vault
        .store
        .save_link(&pending.user, &connection, &write, now)
        .await;
    vault.link_changed(&pending.user, &connection).await;
    saved.map_err(|e| {
        tracing::error!(error = %e, "cannot store link");
        OAuthError::server_error()
    })?;
    vault.metrics.link("linked");
    vault
        .audit(Some(&pending.user), None, Some(&connection), "linked")
        .await;
    tracing::info!(issuer = %pending.user.issuer, sub = %pending.user.sub, connection = %connection, "account linked");
    let (name, _) = vault.tickets.browser_binding(&state);
    let cleared = binding_cookie(&vault, &name, "", 0);
    Ok((
        [
            (header::CACHE_CONTROL, "no-store".to_string()),
            (header::SET_COOKIE, cleared),
        ],
        Html(format!(
            "<!doctype html><title>Account linked</title><h1>Account linked</h1>\
             <p>Your {} account is connected. You can close this window.</p>",
            crate::consent::html_escape(&connection)
        )),
    )
        .into_response())
}

/// `DELETE /connections/{connection}`: the bearer-authenticated user unlinks.
pub async fn unlink(
    State(vault): State<Arc<Vault>>,
    Path(connection): Path<String>,
    headers: HeaderMap,
) -> Result<Response, OAuthError> {
    let user = bearer_user(&vault, &headers).await?;
    if !vault.config.connections.contains_key(&connection) {
        return Err(no_such_connection());
    }
    let gate = vault.flights.gate(&user, &connection);
    let _held = gate.lock().await;
    let database_error = |e: crate::store::StoreError| {
        tracing::error!(error = %e, "cannot unlink");
        OAuthError::server_error()
    };
    let link = vault
        .store
        .find_link(&user, &connection)
        .await
        .map_err(database_error)?;
    let removed = vault.store.delete_link(&user, &connection).await;
    vault.link_changed(&user, &connection).await;
    let removed = removed.map_err(database_error)?;
    let Some(link) = link.filter(|_| removed) else {
        return Err(OAuthError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no linked account for this connection",
        ));
    };
    vault.metrics.link("unlinked");
    vault
        .audit(Some(&user), None, Some(&connection), "unlinked")
        .await;
    tracing::info!(issuer = %user.issuer, sub = %user.sub, connection = %connection, "account unlinked");
    revoke_upstream(&vault, &link).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Revokes an unlinked account's refresh token at the upstream (RFC 7009),
/// when the connection names a `revocation_url`. The link is gone whatever
/// happens here; a failure is logged and counted, for the operator.
async fn revoke_upstream(vault: &Vault, link: &Link) {
    let Some(conn) = vault.config.connections.get(&link.connection) else {
        return;
    };
    if conn.revocation_url.is_none() || link.broken {
        return;
    }
    let aad = link_aad("refresh_token", &link.user, &link.connection);
    let refresh_token = match vault.keys.open_string(&link.refresh, &aad) {
        Ok(token) => token,
        Err(e) => {
            tracing::error!(error = %e, connection = %link.connection, "cannot open the refresh token to revoke");
            vault.metrics.link("revoke_failed");
            return;
        }
    };
    match vault.upstream.revoke(conn, &refresh_token).await {
        Ok(_) => {
            vault.metrics.link("revoked");
            tracing::info!(issuer = %link.user.issuer, sub = %link.user.sub, connection = %link.connection, "refresh token revoked upstream");
        }
        Err(e) => {
            vault.metrics.link("revoke_failed");
            tracing::warn!(issuer = %link.user.issuer, sub = %link.user.sub, connection = %link.connection, error = ?e, "upstream revocation failed; the refresh token stays valid there until it expires");
        }
    }
}
