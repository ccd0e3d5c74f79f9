//! `GET /audit`: the audit trail, read back. A user (bearer JWT, verified as
//! at `GET /connect`) reads their own rows; a client listed in
//! `audit_readers` (HTTP Basic, checked as at the token endpoint) reads
//! everyone's. Audit rows hold no token, so neither does the answer.

use crate::app::Vault;
use crate::linking::bearer_user;
use crate::oauth_error::OAuthError;
use crate::store::{AuditEntry, AuditFilter};
use crate::subject::User;
use crate::token_exchange::{client_credentials, client_secret_matches};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use std::sync::Arc;

/// Rows returned when the query names no `limit`.
pub const DEFAULT_LIMIT: i64 = 100;
/// Most rows one answer may hold.
pub const MAX_LIMIT: i64 = 1000;
/// Longest `issuer`, `sub` or `connection` filter accepted.
const MAX_FILTER_LEN: usize = 1024;

/// Who reads the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reader {
    /// A signed-in user: their own rows (their issuer and subject) only.
    User(User),
    /// A client listed in `audit_readers`: every row.
    Client(String),
}

#[derive(Serialize)]
struct Page<'a> {
    entries: Vec<Row<'a>>,
}

/// One row as answered (the API's shape, independent of the table's).
#[derive(Serialize)]
struct Row<'a> {
    at: i64,
    issuer: &'a str,
    sub: &'a str,
    agent: Option<&'a str>,
    connection: Option<&'a str>,
    outcome: &'a str,
}

impl<'a> From<&'a AuditEntry> for Row<'a> {
    fn from(e: &'a AuditEntry) -> Self {
        Row {
            at: e.at,
            issuer: &e.issuer,
            sub: &e.sub,
            agent: e.agent.as_deref(),
            connection: e.connection.as_deref(),
            outcome: &e.outcome,
        }
    }
}

/// `GET /audit?issuer=&sub=&connection=&since=&limit=`: rows newest first.
pub async fn audit(
    State(vault): State<Arc<Vault>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    match read(&vault, query.as_deref().unwrap_or(""), &headers).await {
        Ok(response) => response,
        Err(e) if e.status == StatusCode::UNAUTHORIZED => challenge(e),
        Err(e) => e.into_response(),
    }
}

async fn read(vault: &Vault, query: &str, headers: &HeaderMap) -> Result<Response, OAuthError> {
    let reader = authenticate(vault, headers).await?;
    let mut filter = parse_query(query)?;
    match &reader {
        Reader::User(user) => {
            if filter
                .issuer
                .as_ref()
                .is_some_and(|wanted| *wanted != user.issuer)
                || filter
                    .sub
                    .as_ref()
                    .is_some_and(|wanted| *wanted != user.sub)
            {
                return Err(OAuthError::new(
                    StatusCode::FORBIDDEN,
                    "access_denied",
                    "a user can read only their own audit rows",
                ));
            }
            filter.issuer = Some(user.issuer.clone());
            filter.sub = Some(user.sub.clone());
        }
        Reader::Client(_) => {}
    }
    let rows = vault.store.query_audit(&filter).await.map_err(|e| {
        tracing::error!(error = %e, "cannot read audit rows");
        OAuthError::server_error()
    })?;
    match &reader {
        Reader::User(user) => {
            tracing::info!(issuer = %user.issuer, sub = %user.sub, rows = rows.len(), "audit rows read by their user")
        }
        Reader::Client(id) => {
            tracing::info!(client_id = %id, rows = rows.len(), "audit rows read by an audit reader")
        }
    }
    let page = Page {
        entries: rows.iter().map(Row::from).collect(),
    };
    Ok((
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(page),
    )
        .into_response())
}

/// A bearer token names a user; HTTP Basic names a client, which must be
/// one of `audit_readers`. Nothing else is accepted.
async fn authenticate(vault: &Vault, headers: &HeaderMap) -> Result<Reader, OAuthError> {
    let scheme = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("bearer") => bearer_user(vault, headers).await.map(Reader::User),
        Some("basic") => {
            let (id, secret) =
                client_credentials(headers, &[]).map_err(|_| OAuthError::invalid_client())?;
            if !client_secret_matches(vault, &id, &secret) {
                tracing::info!(client_id = ?id, "audit reader authentication failed");
                return Err(OAuthError::invalid_client());
            }
            if !vault.config.audit_readers.contains(&id) {
                // Authenticated, but not allowed to read the trail.
                return Err(OAuthError::new(
                    StatusCode::FORBIDDEN,
                    "access_denied",
                    "this client is not an audit reader (`audit_readers`)",
                ));
            }
            Ok(Reader::Client(id))
        }
        _ => Err(OAuthError::invalid_token(
            "a user's bearer token or an audit reader's client credentials are required",
        )),
    }
}

/// A 401 that offers both ways in: `Bearer` (users) and `Basic` (audit
/// readers).
fn challenge(e: OAuthError) -> Response {
    let basic = e.error == "invalid_client";
    let mut response = e.into_response();
    let other = if basic {
        HeaderValue::from_static("Bearer realm=\"agentward-vault\"")
    } else {
        HeaderValue::from_static("Basic realm=\"agentward-vault\"")
    };
    response
        .headers_mut()
        .append(header::WWW_AUTHENTICATE, other);
    response
}

/// The filters of the query string; a bad value is a 400 naming the
/// parameter (never echoing what was sent).
fn parse_query(query: &str) -> Result<AuditFilter, OAuthError> {
    let params: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|_| OAuthError::invalid_request("the query string is malformed"))?;
    let mut filter = AuditFilter {
        limit: DEFAULT_LIMIT,
        ..AuditFilter::default()
    };
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in &params {
        let name = match name.as_str() {
            "issuer" => "issuer",
            "sub" => "sub",
            "connection" => "connection",
            "since" => "since",
            "limit" => "limit",
            _ => {
                return Err(OAuthError::invalid_request(
                    "unknown query parameter; use issuer, sub, connection, since or limit",
                ))
            }
        };
        if seen.contains(&name) {
            return Err(OAuthError::invalid_request(format!("{name} is repeated")));
        }
        seen.push(name);
        match name {
            "issuer" | "sub" | "connection" => {
                if value.is_empty() || value.len() > MAX_FILTER_LEN {
                    return Err(OAuthError::invalid_request(format!(
                        "{name} must be 1 to {MAX_FILTER_LEN} bytes"
                    )));
                }
                let field = match name {
                    "issuer" => &mut filter.issuer,
                    "sub" => &mut filter.sub,
                    _ => &mut filter.connection,
                };
                *field = Some(value.clone());
            }
            "since" => {
                filter.since = Some(value.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(
                    || OAuthError::invalid_request("since must be a Unix time in seconds"),
                )?);
            }
            _ => {
                filter.limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|v| (1..=MAX_LIMIT).contains(v))
                    .ok_or_else(|| {
                        OAuthError::invalid_request(format!(
                            "limit must be an integer from 1 to {MAX_LIMIT}"
                        ))
                    })?;
            }
        }
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn description(query: &str) -> String {
        parse_query(query).unwrap_err().error_description
    }

    #[test]
    fn query_filters_parse_with_a_default_limit() {
        assert_eq!(
            parse_query("").unwrap(),
            AuditFilter {
                limit: DEFAULT_LIMIT,
                ..AuditFilter::default()
            }
        );
        assert_eq!(
            parse_query(
                "issuer=https%3A%2F%2Fidp%2F&sub=alice%40x&connection=google&since=0&limit=1000"
            )
            .unwrap(),
            AuditFilter {
                issuer: Some("https://idp/".into()),
                sub: Some("alice@x".into()),
                connection: Some("google".into()),
                since: Some(0),
                limit: 1000,
            }
        );
    }

    #[test]
    fn bad_values_name_the_parameter() {
        for query in ["limit=0", "limit=1001", "limit=ten", "limit=", "limit=-1"] {
            assert!(description(query).starts_with("limit "), "{query}");
        }
        for query in ["since=-5", "since=yesterday", "since=1.5"] {
            assert!(description(query).starts_with("since "), "{query}");
        }
        assert!(description("sub=").starts_with("sub "));
        assert!(description("issuer=").starts_with("issuer "));
        assert_eq!(description("sub=a&sub=b"), "sub is repeated");
        let unknown = description("user=%3Cscript%3E");
        assert!(unknown.starts_with("unknown query parameter"), "{unknown}");
        assert!(!unknown.contains("script"), "the name sent is not echoed");
        assert_eq!(
            parse_query("limit=0").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }
}
