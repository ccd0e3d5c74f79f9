//! The token endpoint's CIBA grant (`grant_type=urn:openid:params:grant-type:ciba`,
//! CIBA Core §10–11), poll mode, with a long-poll extension: `wait=N` (at
//! most `ciba.max_wait_seconds`) holds a pending answer up to N seconds and
//! answers as soon as the user decides, on any replica.
//!
//! Polls of a pending request must be `interval` seconds apart (counted
//! from the start of each; a long-poll counts as one poll): a faster one
//! gets `slow_down` and the interval grows by 5 s. The token is issued once:
//! a conditional update moves the request from approved to issued.

use super::signing::AccessClaims;
use super::Ciba;
use crate::app::{unix_now, Vault};
use crate::oauth_error::OAuthError;
use crate::store::{CibaRequest, CibaStatus};
use crate::subject::User;
use crate::ticket;
use crate::token_exchange::single;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use jwt_simple::prelude::{Claims, Duration as JwtDuration};
use std::time::Duration;

/// A poll this much earlier than `interval` is still on time (clocks and
/// networks jitter), in thousandths of the interval.
const POLL_TOLERANCE_PER_MILLE: i64 = 200;

fn grant_error(error: &'static str, description: &str) -> OAuthError {
    OAuthError::new(StatusCode::BAD_REQUEST, error, description)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The CIBA grant for the authenticated `client_id`.
pub async fn token(vault: &Vault, client_id: &str, params: &[(String, String)]) -> Response {
    let Some(ciba) = vault.ciba.as_ref() else {
        return grant_error("unsupported_grant_type", "grant_type is not supported")
            .into_response();
    };
    match poll(vault, ciba, client_id, params).await {
        Ok(response) => {
            vault.metrics.ciba("token_issued");
            response
        }
        Err((outcome, error)) => {
            vault.metrics.ciba(outcome);
            error.into_response()
        }
    }
}

type Failure = (&'static str, OAuthError);

fn internal(e: impl std::fmt::Display) -> Failure {
    tracing::error!(error = %e, "CIBA grant failed");
    ("server_error", OAuthError::server_error())
}

async fn poll(
    vault: &Vault,
    ciba: &Ciba,
    client_id: &str,
    params: &[(String, String)],
) -> Result<Response, Failure> {
    let invalid = |e: OAuthError| ("invalid_request", e);
    let auth_req_id = single(params, "auth_req_id")
        .map_err(invalid)?
        .ok_or_else(|| invalid(OAuthError::invalid_request("auth_req_id is missing")))?;
    let wait = match single(params, "wait").map_err(invalid)? {
        None => 0,
        Some(text) => match text.parse::<u64>() {
            Ok(n) if n <= ciba.config.max_wait_seconds => n,
            _ => {
                return Err(invalid(OAuthError::invalid_request(format!(
                    "wait must be a whole number of seconds from 0 to {}",
                    ciba.config.max_wait_seconds
                ))))
            }
        },
    };
    let not_valid = || {
        (
            "invalid_grant",
            grant_error("invalid_grant", "auth_req_id is not valid"),
        )
    };
    if !ticket::well_formed(auth_req_id) {
        return Err(not_valid());
    }
    let id = ticket::ticket_id(auth_req_id);
    let record = vault
        .store
        .find_ciba_request(&id)
        .await
        .map_err(internal)?
        .ok_or_else(not_valid)?;
    let user = User::new(record.issuer.clone(), record.sub.clone());
    if record.client_id != client_id {
        tracing::warn!(client_id, owner = %record.client_id, "CIBA auth_req_id presented by another client");
        vault
            .audit(
                Some(&user),
                Some(client_id),
                Some("ciba"),
                "ciba_other_client",
            )
            .await;
        return Err(not_valid());
    }
    if let Some(done) = settled(vault, &record, &user).await? {
        return done;
    }
    // Pending: too early?
    let now = now_ms();
    let interval_ms = record.interval.saturating_mul(1000);
    let early_ok = interval_ms.saturating_mul(1000 - POLL_TOLERANCE_PER_MILLE) / 1000;
    if record
        .last_poll_ms
        .is_some_and(|last| now.saturating_sub(last) < early_ok)
    {
        vault
            .store
            .note_ciba_poll(&id, now, 5)
            .await
            .map_err(internal)?;
        return Err((
            "slow_down",
            grant_error(
                "slow_down",
                "polled faster than the interval; the interval grows by 5 seconds",
            ),
        ));
    }
    vault
        .store
        .note_ciba_poll(&id, now, 0)
        .await
        .map_err(internal)?;
    let record = if wait > 0 {
        long_poll(vault, ciba, &record, wait).await?
    } else {
        record
    };
    if let Some(done) = settled(vault, &record, &user).await? {
        return done;
    }
    Err((
        "authorization_pending",
        grant_error("authorization_pending", "the user has not decided yet"),
    ))
}

/// Waits until the request is decided, expires, or `wait` seconds pass;
/// answers the request as it then stands.
async fn long_poll(
    vault: &Vault,
    ciba: &Ciba,
    record: &CibaRequest,
    wait: u64,
) -> Result<CibaRequest, Failure> {
    let waiter = ciba.waiters.watch(&record.id);
    let left = u64::try_from(record.expires_at.saturating_sub(unix_now()).max(0)).unwrap_or(0);
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(wait.min(left.saturating_add(1)));
    // Without a listener, other replicas' decisions are seen by reading.
    let step = if vault.store.backend() == "postgres" && !ciba.listening() {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(wait.max(1))
    };
    tracing::debug!(request = %record.id, wait, "CIBA long-poll waiting");
    loop {
        let notified = waiter.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Read after registering: a decision in between is not missed.
        let current = vault
            .store
            .find_ciba_request(&record.id)
            .await
            .map_err(internal)?
            .ok_or_else(|| internal("CIBA request vanished"))?;
        if current.status != CibaStatus::Pending || tokio::time::Instant::now() >= deadline {
            return Ok(current);
        }
        let until = deadline.min(tokio::time::Instant::now() + step);
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(until) => {}
        }
    }
}

/// The answer for a request that no longer waits (denied, expired, issued,
/// approved → the token), or `None` while it is pending.
async fn settled(
    vault: &Vault,
    record: &CibaRequest,
    user: &User,
) -> Result<Option<Result<Response, Failure>>, Failure> {
    let now = unix_now();
    let agent = Some(record.client_id.as_str());
    Ok(Some(match record.status {
        CibaStatus::Issued | CibaStatus::Used => {
            tracing::warn!(client_id = %record.client_id, "CIBA auth_req_id presented again after its token was issued");
            vault
                .audit(Some(user), agent, Some("ciba"), "ciba_replayed")
                .await;
            Err((
                "invalid_grant",
                grant_error("invalid_grant", "auth_req_id was already used"),
            ))
        }
        CibaStatus::Denied => Err((
            "access_denied",
            grant_error("access_denied", "the user denied the request"),
        )),
        _ if now > record.expires_at => {
            if vault
                .store
                .expire_ciba(&record.id, now)
                .await
                .map_err(internal)?
            {
                vault
                    .audit(Some(user), agent, Some("ciba"), "ciba_expired")
                    .await;
            }
            Err((
                "expired_token",
                grant_error(
                    "expired_token",
                    "the request expired before the user approved it",
                ),
            ))
        }
        CibaStatus::Expired => Err((
            "expired_token",
            grant_error("expired_token", "the request expired"),
        )),
        CibaStatus::Approved => issue(vault, record, user).await,
        CibaStatus::Pending => return Ok(None),
    }))
}

/// Issues the token of an approved request, once.
async fn issue(vault: &Vault, record: &CibaRequest, user: &User) -> Result<Response, Failure> {
    let Some(ciba) = vault.ciba.as_ref() else {
        return Err(internal("CIBA is not configured"));
    };
    let mut raw = [0u8; 16];
    getrandom::getrandom(&mut raw)
        .map_err(|e| internal(format!("no randomness for a jti: {e}")))?;
    let jti = B64.encode(raw);
    if !vault
        .store
        .issue_ciba(&record.id, &record.client_id, &jti)
        .await
        .map_err(internal)?
    {
        return Err((
            "invalid_grant",
            grant_error("invalid_grant", "auth_req_id was already used"),
        ));
    }
    let details = record
        .authorization_details
        .as_deref()
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok());
    let ttl = ciba.config.token_ttl_seconds;
    let custom = AccessClaims {
        sub_id: serde_json::json!({"format": "iss_sub", "iss": user.issuer, "sub": user.sub}),
        client_id: record.client_id.clone(),
        azp: record.client_id.clone(),
        agent_id: record.agent.clone(),
        scope: record.scope.clone(),
        binding_message: record.binding_message.clone(),
        authorization_details: details.clone(),
        request_digest: record.request_digest.clone(),
        auth_time: record.decided_at.unwrap_or(record.created_at),
    };
    let claims = Claims::with_custom_claims(custom, JwtDuration::from_secs(ttl))
        .with_issuer(super::issuer(&vault.config))
        .with_subject(&user.sub)
        .with_audience(record.audience.as_deref().unwrap_or(&record.client_id))
        .with_jwt_id(&jti);
    let token = ciba.signer.sign(claims).map_err(internal)?;
    vault
        .audit(
            Some(user),
            Some(&record.client_id),
            Some("ciba"),
            "ciba_token_issued",
        )
        .await;
    tracing::info!(client_id = %record.client_id, issuer = %user.issuer, sub = %user.sub, jti = %jti, "CIBA token issued");
    let mut answer = serde_json::json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": ttl,
        "scope": record.scope,
    });
    if let Some(details) = details {
        answer["authorization_details"] = details;
    }
    Ok((
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(answer),
    )
        .into_response())
}
