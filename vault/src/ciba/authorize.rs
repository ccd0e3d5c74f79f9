//! `POST /bc-authorize`: the back-channel authentication request (CIBA Core
//! §7), client-authenticated as at `/oauth/token`. Checks every parameter,
//! stores the request under the hash of a fresh `auth_req_id`, answers
//! `{auth_req_id, expires_in, interval}` and notifies the user in the
//! background.

use super::notify::{self, Notification, NotifiedUser};
use super::{Ciba, LoginHint};
use crate::app::{unix_now, Vault};
use crate::oauth_error::OAuthError;
use crate::store::{CibaRequest, CibaStatus};
use crate::subject::{SubjectError, User};
use crate::ticket;
use crate::token_exchange::{client_form, single};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;

/// A checked request, before it is stored.
#[derive(Debug)]
struct Checked {
    user: User,
    scope: String,
    binding_message: String,
    authorization_details: Option<String>,
    audience: Option<String>,
    request_digest: Option<String>,
    agent: Option<String>,
    expires_in: u64,
}

fn bad(error: &'static str, description: impl Into<String>) -> OAuthError {
    OAuthError::new(StatusCode::BAD_REQUEST, error, description)
}

/// `POST /bc-authorize`.
pub async fn bc_authorize(
    State(vault): State<Arc<Vault>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match handle(&vault, &headers, body).await {
        Ok(response) => response,
        Err((outcome, error)) => {
            vault.metrics.ciba(outcome);
            error.into_response()
        }
    }
}

async fn handle(
    vault: &Arc<Vault>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, (&'static str, OAuthError)> {
    let Some(ciba) = vault.ciba.as_ref() else {
        return Err((
            "not_configured",
            bad("invalid_request", "CIBA is not configured"),
        ));
    };
    let (client_id, params) = client_form(vault, headers, body).await?;
    if !ciba.config.clients.contains(&client_id) {
        return Err((
            "unauthorized_client",
            bad(
                "unauthorized_client",
                "this client may not use the backchannel authentication endpoint",
            ),
        ));
    }
    let checked = check(vault, ciba, &params).await?;
    let now = unix_now();
    let pending = vault
        .store
        .pending_ciba_count(&checked.user.issuer, &checked.user.sub, now)
        .await
        .map_err(internal)?;
    if pending >= ciba.config.max_pending_per_user {
        vault
            .audit(
                Some(&checked.user),
                Some(&client_id),
                Some("ciba"),
                "ciba_refused_too_many",
            )
            .await;
        return Err((
            "access_denied",
            bad(
                "access_denied",
                "the user has too many approval requests waiting",
            ),
        ));
    }
    let random = |what| ticket::new_ticket().map_err(|e| internal(format!("{what}: {e}")));
    let (auth_req_id, id) = random("auth_req_id")?;
    let (approval, approval_id) = random("approval link")?;
    let expires_at = now.saturating_add(i64::try_from(checked.expires_in).unwrap_or(i64::MAX));
    let interval = i64::try_from(ciba.config.interval_seconds).unwrap_or(5);
    let record = CibaRequest {
        id,
        approval_id,
        client_id: client_id.clone(),
        issuer: checked.user.issuer.clone(),
        sub: checked.user.sub.clone(),
        agent: checked.agent.clone(),
        scope: checked.scope.clone(),
        binding_message: checked.binding_message.clone(),
        authorization_details: checked.authorization_details.clone(),
        audience: checked.audience.clone(),
        request_digest: checked.request_digest.clone(),
        created_at: now,
        expires_at,
        interval,
        last_poll_ms: None,
        status: CibaStatus::Pending,
        decided_at: None,
        jti: None,
    };
    vault
        .store
        .put_ciba_request(&record, now)
        .await
        .map_err(internal)?;
    vault.metrics.ciba("requested");
    vault
        .audit(
            Some(&checked.user),
            Some(&client_id),
            Some("ciba"),
            "ciba_requested",
        )
        .await;
    tracing::info!(
        client_id = %client_id,
        issuer = %checked.user.issuer,
        sub = %checked.user.sub,
        binding_message = %checked.binding_message,
        expires_in = checked.expires_in,
        "CIBA request received"
    );
    let notification = Notification {
        kind: "ciba_approval_requested",
        client_id: client_id.clone(),
        agent_id: checked.agent,
        user: NotifiedUser {
            iss: checked.user.issuer,
            sub: checked.user.sub,
        },
        binding_message: checked.binding_message,
        authorization_details: checked
            .authorization_details
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok()),
        approval_url: super::page::approval_url(vault, &approval),
        expires_at,
    };
    notify::deliver(
        vault.clone(),
        ciba.notifier.clone(),
        notification,
        client_id,
    );
    Ok((
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(serde_json::json!({
            "auth_req_id": auth_req_id,
            "expires_in": checked.expires_in,
            "interval": interval,
        })),
    )
        .into_response())
}

fn internal(e: impl std::fmt::Display) -> (&'static str, OAuthError) {
    tracing::error!(error = %e, "CIBA request not stored");
    ("server_error", OAuthError::server_error())
}

/// Checks the parameters (CIBA Core §7.1, Auth0's rules for
/// `binding_message`, RFC 9396 for `authorization_details`).
async fn check(
    vault: &Vault,
    ciba: &Ciba,
    params: &[(String, String)],
) -> Result<Checked, (&'static str, OAuthError)> {
    let invalid = |e: OAuthError| ("invalid_request", e);
    let get = |name: &str| single(params, name).map_err(invalid);
    let request = |d: &str| ("invalid_request", bad("invalid_request", d));
    for unsupported in ["request", "login_hint_token", "user_code"] {
        if get(unsupported)?.is_some() {
            return Err(request(&format!("{unsupported} is not supported")));
        }
    }
    let scope = get("scope")?.ok_or_else(|| request("scope is missing"))?;
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    if !scopes.contains(&"openid") {
        return Err((
            "invalid_scope",
            bad("invalid_scope", "scope must contain openid"),
        ));
    }
    if let Some(unknown) = scopes
        .iter()
        .find(|s| **s != "openid" && !ciba.config.scopes.iter().any(|k| k == *s))
    {
        return Err((
            "invalid_scope",
            bad(
                "invalid_scope",
                format!("the scope {unknown:?} is not offered"),
            ),
        ));
    }
    let login_hint = get("login_hint")?;
    let id_token_hint = get("id_token_hint")?;
    let user = match (login_hint, id_token_hint) {
        (Some(hint), None) => user_of_login_hint(vault, hint)?,
        (None, Some(token)) => user_of_id_token(vault, token).await?,
        _ => {
            return Err(request(
                "exactly one of login_hint and id_token_hint is required",
            ))
        }
    };
    let binding_message =
        get("binding_message")?.ok_or_else(|| request("binding_message is missing"))?;
    if !super::binding_message_ok(binding_message) {
        return Err((
            "invalid_binding_message",
            bad(
                "invalid_binding_message",
                "binding_message must be 1 to 64 characters: letters, digits, space and +-_.,:#",
            ),
        ));
    }
    let expires_in = match get("requested_expiry")? {
        None => ciba.config.default_expiry_seconds,
        Some(text) => match text.parse::<u64>() {
            Ok(n) if n >= 1 && n <= ciba.config.max_expiry_seconds => n,
            _ => {
                return Err(request(&format!(
                    "requested_expiry must be a whole number of seconds from 1 to {}",
                    ciba.config.max_expiry_seconds
                )))
            }
        },
    };
    let authorization_details = get("authorization_details")?
        .map(|text| {
            super::parse_authorization_details(
                text,
                &ciba.config.authorization_details_types,
                ciba.config.max_authorization_details_bytes,
            )
            .map_err(|why| {
                (
                    "invalid_authorization_details",
                    bad("invalid_authorization_details", why),
                )
            })
        })
        .transpose()?;
    let audience = get("audience")?;
    if let Some(audience) = audience {
        if !ciba.config.audiences.iter().any(|a| a == audience) {
            return Err(request("audience is not one the vault issues tokens for"));
        }
    }
    let request_digest = get("request_digest")?;
    if request_digest.is_some_and(|d| !super::request_digest_ok(d)) {
        return Err(request(
            "request_digest must be 1 to 128 characters: letters, digits and -_.:=+/",
        ));
    }
    let agent = get("agent_id")?;
    if agent.is_some_and(|a| a.len() > 255 || a.chars().any(char::is_control)) {
        return Err(request("agent_id must be at most 255 printable characters"));
    }
    Ok(Checked {
        user,
        scope: scopes.join(" "),
        binding_message: binding_message.to_string(),
        authorization_details,
        audience: audience.map(str::to_string),
        request_digest: request_digest.map(str::to_string),
        agent: agent.map(str::to_string),
        expires_in,
    })
}

fn unknown_user(description: &str) -> (&'static str, OAuthError) {
    ("unknown_user_id", bad("unknown_user_id", description))
}

/// The user a `login_hint` names: a plain subject of the one configured
/// issuer, or an `iss_sub` of any configured issuer.
fn user_of_login_hint(vault: &Vault, hint: &str) -> Result<User, (&'static str, OAuthError)> {
    let issuers: Vec<&str> = vault
        .config
        .issuers
        .iter()
        .filter_map(|i| i.get("issuer").and_then(|v| v.as_str()))
        .collect();
    match super::parse_login_hint(hint) {
        Err(why) => Err(("invalid_request", bad("invalid_request", why))),
        Ok(LoginHint::IssSub(user)) if issuers.contains(&user.issuer.as_str()) => Ok(user),
        Ok(LoginHint::IssSub(_)) => Err(unknown_user(
            "login_hint names an issuer the vault does not trust",
        )),
        Ok(LoginHint::Subject(sub)) => match issuers.as_slice() {
            [only] => Ok(User::new(*only, sub)),
            [] => Err(unknown_user("the vault trusts no issuer")),
            _ => Err((
                "invalid_request",
                bad(
                    "invalid_request",
                    "several issuers are trusted: login_hint must be an iss_sub JSON object",
                ),
            )),
        },
    }
}

/// The user an `id_token_hint` names, verified like a subject token (the
/// issuers' audiences) or a user token (the vault's audience).
async fn user_of_id_token(vault: &Vault, token: &str) -> Result<User, (&'static str, OAuthError)> {
    let verified = match vault.subjects.verify(token).await {
        Ok(subject) => Ok(subject),
        Err(SubjectError::Rejected { .. }) => vault.users.verify(token).await,
        Err(e) => Err(e),
    };
    match verified {
        Ok(subject) => Ok(subject.user()),
        Err(SubjectError::KeysUnavailable) => Err((
            "issuer_unavailable",
            OAuthError::unavailable("the id_token_hint issuer's keys are unavailable"),
        )),
        Err(SubjectError::Rejected { description, .. }) => Err((
            "invalid_request",
            bad(
                "invalid_request",
                format!("id_token_hint rejected: {description}"),
            ),
        )),
    }
}
