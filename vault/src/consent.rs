//! The confirmation step of a connect link.
//!
//! `GET /connect/{connection}?ticket=…` spends nothing: it answers a page
//! that names the connection, the agentward user (issuer and subject) and
//! the agent that asked, with Continue and Cancel. The page sets a cookie
//! (SameSite=Strict, HttpOnly; `__Host-` and Secure over HTTPS) and carries
//! a CSRF token bound to the ticket and that cookie. Only `POST
//! /connect/{connection}` with that token, from that browser, spends the
//! ticket: Continue redirects to the upstream, Cancel ends it. So a link
//! preview or a mail scanner that fetches the link spends nothing, and
//! another site cannot make a browser confirm a link it was sent.
//!
//! What the page cannot stop: a user who reads "link your account to the
//! agentward user mallory" and still presses Continue links their upstream
//! account to mallory (see vault/README.md).

use crate::app::{unix_now, Vault};
use crate::linking::{no_such_connection, start_linking};
use crate::oauth_error::OAuthError;
use crate::store::ConnectTicket;
use crate::subject::User;
use crate::ticket::{self, CONFIRM_COOKIE};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use std::sync::Arc;

/// The page's security headers: no caching, no framing, no referrer (the
/// ticket is in the URL), nothing loaded or run but the inline style.
pub(crate) const PAGE_HEADERS: [(header::HeaderName, &str); 4] = [
    (header::CACHE_CONTROL, "no-store"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    ),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
];

/// The confirmation page for `ticket` (`GET /connect/{connection}?ticket=…`).
pub async fn page(
    vault: &Vault,
    connection: &str,
    ticket: &str,
    headers: &HeaderMap,
) -> Result<Response, OAuthError> {
    let now = unix_now();
    let id = ticket::well_formed(ticket)
        .then(|| ticket::ticket_id(ticket))
        .ok_or_else(not_valid)?;
    let record = vault.store.find_ticket(&id).await.map_err(|e| {
        tracing::error!(error = %e, "cannot read a connect ticket");
        OAuthError::server_error()
    })?;
    let record = match record {
        Some(r) if r.connection == connection && !r.spent && r.expires_at >= now => r,
        other => return Err(refusal(other.as_ref(), connection, now)),
    };
    let name = cookie_name(vault);
    let cookies = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    // Keep the browser's cookie, so pages open in other tabs stay good.
    let cookie = match ticket::cookie(cookies, name).filter(|v| ticket::well_formed(v)) {
        Some(v) => v.to_string(),
        None => ticket::new_cookie_value().map_err(|e| {
            tracing::error!(error = %e, "cannot make the confirmation cookie");
            OAuthError::server_error()
        })?,
    };
    let csrf_token = vault.tickets.csrf_token(&id, &cookie);
    let html = render_page(
        &record,
        &form_action(vault, connection),
        ticket,
        &csrf_token,
        now,
    );
    tracing::info!(issuer = %record.issuer, sub = %record.sub, connection = %connection, "connect link opened; asking the user to confirm");
    let set_cookie = confirm_cookie(vault, &cookie, vault.config.ticket_ttl_seconds);
    Ok((PAGE_HEADERS, [(header::SET_COOKIE, set_cookie)], Html(html)).into_response())
}

/// `POST /connect/{connection}`: the confirmation form. Checks the CSRF
/// token against this browser's cookie, then spends the ticket (once, on
/// every replica): Continue answers 303 to the upstream, Cancel a page.
pub async fn confirm(
    State(vault): State<Arc<Vault>>,
    Path(connection): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    if !vault.config.connections.contains_key(&connection) {
        return Err(no_such_connection());
    }
    let form = ConfirmForm::parse(&body)?;
    let id = ticket::well_formed(&form.ticket)
        .then(|| ticket::ticket_id(&form.ticket))
        .ok_or_else(not_valid)?;
    let cookies = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    let cookie = ticket::cookie(cookies, cookie_name(&vault)).unwrap_or("");
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site");
    if cross_site || !vault.tickets.csrf_ok(&id, cookie, &form.csrf_token) {
        tracing::warn!(connection = %connection, "connect confirmation without this browser's page; refused, nothing spent");
        return Err(OAuthError::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            "this confirmation did not come from the vault's page in this browser; open the connect link again",
        ));
    }
    let now = unix_now();
    let spent = vault
        .store
        .spend_ticket(&id, &connection, now)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot spend a connect ticket");
            OAuthError::server_error()
        })?;
    let Some(record) = spent else {
        let record = vault.store.find_ticket(&id).await.unwrap_or(None);
        if record.as_ref().is_some_and(|r| r.spent) {
            tracing::info!(connection = %connection, "connect link confirmed again; refused");
        }
        return Err(refusal(record.as_ref(), &connection, now));
    };
    let agent = record.agent.as_deref();
    let user = User::new(record.issuer.as_str(), record.sub.as_str());
    match form.decision {
        Decision::Allow => {
            tracing::info!(sub = %record.sub, issuer = %record.issuer, agent = agent.unwrap_or(""), connection = %connection, "connect link confirmed");
            start_linking(&vault, &connection, &user, StatusCode::SEE_OTHER).await
        }
        Decision::Cancel => {
            vault.metrics.link("cancelled");
            vault
                .audit(Some(&user), agent, Some(&connection), "link_cancelled")
                .await;
            tracing::info!(issuer = %record.issuer, sub = %record.sub, agent = agent.unwrap_or(""), connection = %connection, "connect link cancelled by the user");
            Ok((
                [(header::CACHE_CONTROL, "no-store")],
                Html(format!(
                    "<!doctype html><title>Nothing was linked</title><h1>Nothing was linked</h1>\
                     <p>Your {} account was not connected, and this link no longer works. \
                     You can close this window.</p>",
                    html_escape(&connection)
                )),
            )
                .into_response())
        }
    }
}

/// Continue or Cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Allow,
    Cancel,
}

/// The posted confirmation form.
#[derive(Debug)]
struct ConfirmForm {
    ticket: String,
    csrf_token: String,
    decision: Decision,
}

impl ConfirmForm {
    /// Each field once; `decision` is `allow` or `cancel`.
    fn parse(body: &[u8]) -> Result<ConfirmForm, OAuthError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|_| OAuthError::invalid_request("the form is not url-encoded"))?;
        let field = |name: &str| -> Result<String, OAuthError> {
            let mut values = pairs.iter().filter(|(k, _)| k == name);
            match (values.next(), values.next()) {
                (Some((_, v)), None) => Ok(v.clone()),
                (None, _) => Err(OAuthError::invalid_request(format!("{name} is missing"))),
                (Some(_), Some(_)) => {
                    Err(OAuthError::invalid_request(format!("{name} is repeated")))
                }
            }
        };
        let decision = match field("decision")?.as_str() {
            "allow" => Decision::Allow,
            "cancel" => Decision::Cancel,
            _ => {
                return Err(OAuthError::invalid_request(
                    "decision must be allow or cancel",
                ))
            }
        };
        Ok(ConfirmForm {
            ticket: field("ticket")?,
            csrf_token: field("csrf_token")?,
            decision,
        })
    }
}

fn not_valid() -> OAuthError {
    OAuthError::invalid_token("the connect link is not valid")
}

/// Why a ticket cannot be used (no ticket text in it).
fn refusal(record: Option<&ConnectTicket>, connection: &str, now: i64) -> OAuthError {
    OAuthError::invalid_token(match record {
        None => "the connect link is not valid",
        Some(r) if r.connection != connection => "the connect link is for another connection",
        Some(r) if r.spent => "the connect link was already used; ask for a new one",
        Some(r) if r.expires_at < now => "the connect link has expired; ask for a new one",
        Some(_) => "the connect link is not valid",
    })
}

/// The confirmation cookie's name: `__Host-` prefixed over HTTPS, so no
/// sibling host can plant one (RFC 6265bis §4.1.3.2).
pub(crate) fn cookie_name(vault: &Vault) -> &'static str {
    if https(vault) {
        "__Host-agentward_confirm"
    } else {
        CONFIRM_COOKIE
    }
}

fn https(vault: &Vault) -> bool {
    vault.config.public_base().starts_with("https://")
}

/// The confirmation cookie: sent only on same-site requests (the page's own
/// form), not readable by scripts.
pub(crate) fn confirm_cookie(vault: &Vault, value: &str, max_age: u64) -> String {
    let secure = if https(vault) { "; Secure" } else { "" };
    format!(
        "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}",
        cookie_name(vault)
    )
}

/// `{public_url}/connect/{connection}`, the connection name as a path segment.
fn form_action(vault: &Vault, connection: &str) -> String {
    let base = vault.config.public_base();
    match reqwest::Url::parse(&base) {
        Ok(mut url) => {
            if let Ok(mut path) = url.path_segments_mut() {
                path.pop_if_empty().push("connect").push(connection);
            }
            url.to_string()
        }
        Err(_) => format!("{base}/connect/{connection}"),
    }
}

/// The page. Every value shown is escaped.
fn render_page(
    record: &ConnectTicket,
    action: &str,
    ticket: &str,
    csrf_token: &str,
    now: i64,
) -> String {
    let connection = html_escape(&record.connection);
    let sub = html_escape(&record.sub);
    let issuer = html_escape(&record.issuer);
    let agent = match &record.agent {
        Some(agent) => format!("The agent <b>{}</b>", html_escape(agent)),
        None => "An agent".to_string(),
    };
    let minutes = (record.expires_at - now).max(0) / 60;
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Link your {connection} account?</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;line-height:1.5}}
dt{{font-weight:bold}}dd{{margin:0 0 .5rem 0;word-break:break-all}}.warn{{background:#fff4e5;padding:.75rem;border-radius:4px}}
button{{font-size:1rem;padding:.5rem 1.25rem;margin-right:.5rem}}</style></head>
<body>
<h1>Link your {connection} account to the agentward user {sub}?</h1>
<p>{agent} asked to use a {connection} account on behalf of this agentward user:</p>
<dl><dt>agentward user</dt><dd>{sub}</dd><dt>issued by</dt><dd>{issuer}</dd><dt>connection</dt><dd>{connection}</dd></dl>
<p class="warn">If you continue, the {connection} account you sign in to next is linked to <b>{sub}</b>, and that user's agents act with it.
If this is not you, or you did not ask for this, choose Cancel.</p>
<form method="post" action="{action}">
<input type="hidden" name="ticket" value="{ticket}">
<input type="hidden" name="csrf_token" value="{csrf_token}">
<button type="submit" name="decision" value="allow">Continue</button>
<button type="submit" name="decision" value="cancel">Cancel</button>
</form>
<p><small>This link works once and expires in about {minutes} minute(s).</small></p>
</body></html>
"#,
        action = html_escape(action),
        ticket = html_escape(ticket),
        csrf_token = html_escape(csrf_token),
    )
}

/// Escapes text for HTML content and double- or single-quoted attributes.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sub: &str, agent: Option<&str>) -> ConnectTicket {
        ConnectTicket {
            id: "id".into(),
            issuer: "https://idp.example/".into(),
            sub: sub.into(),
            connection: "stocktrade".into(),
            agent: agent.map(str::to_string),
            expires_at: 1600,
            spent: false,
        }
    }

    #[test]
    fn page_names_user_issuer_agent_and_escapes_them() {
        let html = render_page(
            &record("<b>a&'b\"</b>", Some("<script>x</script>")),
            "https://vault.example/connect/stocktrade",
            "TICKET",
            "CSRF",
            1000,
        );
        assert!(html.contains("&lt;b&gt;a&amp;&#39;b&quot;&lt;/b&gt;"));
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(!html.contains("<script>") && !html.contains("<b>a"));
        assert!(html.contains("https://idp.example/"));
        assert!(html
            .contains(r#"<form method="post" action="https://vault.example/connect/stocktrade">"#));
        assert!(html.contains(r#"name="ticket" value="TICKET""#));
        assert!(html.contains(r#"name="csrf_token" value="CSRF""#));
        assert!(html.contains("about 10 minute(s)"));
        assert!(render_page(&record("alice", None), "a", "t", "c", 1000).contains("An agent asked"));
    }

    #[test]
    fn form_fields_appear_once_and_decision_is_named() {
        let ok = ConfirmForm::parse(b"ticket=t&csrf_token=c&decision=allow").unwrap();
        assert_eq!(
            (ok.ticket.as_str(), ok.csrf_token.as_str(), ok.decision),
            ("t", "c", Decision::Allow)
        );
        let cancel = ConfirmForm::parse(b"decision=cancel&ticket=t&csrf_token=c").unwrap();
        assert_eq!(cancel.decision, Decision::Cancel);
        for (body, why) in [
            (&b"ticket=t&csrf_token=c"[..], "decision is missing"),
            (
                b"ticket=t&csrf_token=c&decision=yes",
                "decision must be allow or cancel",
            ),
            (
                b"ticket=t&ticket=u&csrf_token=c&decision=allow",
                "ticket is repeated",
            ),
            (b"ticket=t&decision=allow", "csrf_token is missing"),
        ] {
            let e = ConfirmForm::parse(body).unwrap_err();
            assert_eq!(
                (e.status, e.error_description.as_str()),
                (StatusCode::BAD_REQUEST, why)
            );
        }
    }

    #[test]
    fn refusals_say_why_without_the_ticket() {
        let mut r = record("alice", None);
        let said = |r: Option<&ConnectTicket>| refusal(r, "stocktrade", 1000).error_description;
        assert_eq!(said(None), "the connect link is not valid");
        r.expires_at = 999;
        assert_eq!(
            said(Some(&r)),
            "the connect link has expired; ask for a new one"
        );
        r.spent = true;
        assert_eq!(
            said(Some(&r)),
            "the connect link was already used; ask for a new one"
        );
        r.connection = "google".into();
        assert_eq!(said(Some(&r)), "the connect link is for another connection");
    }
}
