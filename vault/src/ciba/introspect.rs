//! `POST /oauth/introspect` (RFC 7662) for the tokens the CIBA grant
//! issues: the API that receives an approval token (the gateway's
//! `token_header`) asks the vault whether it is good, and the first answer
//! uses it up. That is the audit trail's "token used" step
//! (`ciba_token_used`, naming the client that asked), and it makes the
//! approval of one exact action single-use at the API too: the same token
//! presented again introspects as `{"active": false}`.
//!
//! The caller authenticates as at the token endpoint. Anything that is not
//! a current, unused CIBA token of this vault (another vault's token, an
//! expired one, garbage) is `{"active": false}`, as RFC 7662 §2.2 asks,
//! with nothing else said.

use super::signing::AccessClaims;
use crate::app::Vault;
use crate::oauth_error::OAuthError;
use crate::subject::User;
use crate::token_exchange::{client_form, single};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jwt_simple::prelude::JWTClaims;
use std::sync::Arc;

/// The endpoint's path.
pub const PATH: &str = "/oauth/introspect";

fn answer(body: serde_json::Value) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

fn inactive() -> Response {
    answer(serde_json::json!({"active": false}))
}

/// `POST /oauth/introspect`: `token` (and an ignored `token_type_hint`).
pub async fn introspect(
    State(vault): State<Arc<Vault>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match run(&vault, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run(vault: &Vault, headers: &HeaderMap, body: Body) -> Result<Response, OAuthError> {
    let Some(ciba) = vault.ciba.as_ref() else {
        return Err(OAuthError::invalid_request("CIBA is not configured"));
    };
    let (client_id, params) = client_form(vault, headers, body)
        .await
        .map_err(|(_, e)| e)?;
    let token =
        single(&params, "token")?.ok_or_else(|| OAuthError::invalid_request("token is missing"))?;
    let Ok(claims) = ciba.signer.verify(token, &super::issuer(&vault.config)) else {
        vault.metrics.ciba("introspected_inactive");
        return Ok(inactive());
    };
    let Some(jti) = claims.jwt_id.as_deref() else {
        return Ok(inactive());
    };
    let record = match vault.store.use_ciba_token(jti).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            // Used before, or not a token this vault recorded.
            tracing::info!(client_id = %client_id, "CIBA token introspected again: inactive");
            vault.metrics.ciba("introspected_inactive");
            return Ok(inactive());
        }
        Err(e) => {
            tracing::error!(error = %e, "CIBA introspection failed");
            return Err(OAuthError::server_error());
        }
    };
    let user = User::new(record.issuer.clone(), record.sub.clone());
    vault
        .audit(
            Some(&user),
            Some(&client_id),
            Some("ciba"),
            "ciba_token_used",
        )
        .await;
    vault.metrics.ciba("token_used");
    tracing::info!(client_id = %client_id, issuer = %user.issuer, sub = %user.sub, jti, "CIBA token used");
    Ok(answer(active(&claims)))
}

/// The RFC 7662 answer for a good token: its claims, `active: true`.
fn active(claims: &JWTClaims<AccessClaims>) -> serde_json::Value {
    let secs = |d: Option<jwt_simple::prelude::UnixTimeStamp>| d.map(|t| t.as_secs());
    let mut body = serde_json::json!({
        "active": true,
        "token_type": "Bearer",
        "iss": claims.issuer,
        "sub": claims.subject,
        "aud": claims.audiences.as_ref().map(|a| a.clone().into_set().into_iter().collect::<Vec<_>>()),
        "jti": claims.jwt_id,
        "iat": secs(claims.issued_at),
        "exp": secs(claims.expires_at),
        "client_id": claims.custom.client_id,
        "scope": claims.custom.scope,
        "sub_id": claims.custom.sub_id,
        "binding_message": claims.custom.binding_message,
        "auth_time": claims.custom.auth_time,
    });
    let custom = &claims.custom;
    for (name, value) in [
        (
            "agent_id",
            custom.agent_id.clone().map(serde_json::Value::from),
        ),
        (
            "authorization_details",
            custom.authorization_details.clone(),
        ),
        (
            "request_digest",
            custom.request_digest.clone().map(serde_json::Value::from),
        ),
    ] {
        if let Some(value) = value {
            body[name] = value;
        }
    }
    body
}
