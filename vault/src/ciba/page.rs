//! The approval page, the user's "device": `GET /ciba/approve?ticket=…`
//! (the link the notifier sent) shows which agent asks, for which user, the
//! binding message, the `authorization_details` as fields and the time
//! left, with Approve and Deny; `POST /ciba/approve` takes the decision.
//!
//! As the connect confirmation page (`consent.rs`): no JavaScript, every
//! value HTML-escaped, a strict CSP, no framing, no referrer, and a CSRF
//! token bound to the link and to a `SameSite=Strict` cookie the page set,
//! so a GET (a link preview, a mail scanner, an agent opening a URL) never
//! decides and another site cannot post the form. The decision is one
//! conditional `UPDATE` (pending and current → approved or denied),
//! committed before the page says it was taken; the link decides once.

use super::Ciba;
use crate::app::{unix_now, Vault};
use crate::consent::{confirm_cookie, cookie_name, html_escape, PAGE_HEADERS};
use crate::store::{CibaRequest, CibaStatus};
use crate::subject::User;
use crate::ticket;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Arc;

/// Largest decision form read (its three fields are far smaller).
pub const MAX_FORM_BYTES: usize = 4096;

/// The page's path.
pub const PATH: &str = "/ciba/approve";

/// The link sent to the user for the approval secret `ticket`.
pub fn approval_url(vault: &Vault, ticket: &str) -> String {
    format!("{}{PATH}?ticket={ticket}", vault.config.public_base())
}

/// The CSRF binding of a request's form: its approval id, in a domain of
/// its own.
fn csrf_subject(approval_id: &str) -> String {
    format!("ciba:{approval_id}")
}

/// A short HTML page (errors and outcomes), with the page headers.
fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title></head><body><h1>{title}</h1><p>{text}</p></body></html>",
        title = html_escape(title),
        text = html_escape(text),
    );
    (status, PAGE_HEADERS, Html(html)).into_response()
}

fn not_valid() -> Response {
    message_page(
        StatusCode::NOT_FOUND,
        "Link not valid",
        "This approval link is not valid.",
    )
}

/// The page's path without a link: where an MCP client sends the user
/// (`approval_url`). The link that decides went to the user's own device;
/// this page names no request and decides nothing.
fn check_your_device() -> Response {
    message_page(
        StatusCode::OK,
        "Approval requested",
        "An agent asked for your approval. The request was sent to you on your own device \
         (the link in your notification): open it there to see exactly what is asked, \
         then approve or deny. This page decides nothing.",
    )
}

fn server_error(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "CIBA approval page failed");
    message_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The vault could not handle this; nothing was decided. Try again.",
    )
}

/// What the page says about a request that no longer waits.
fn outcome_page(record: &CibaRequest, now: i64, just_decided: bool) -> Response {
    let message = &record.binding_message;
    match record.status {
        CibaStatus::Approved | CibaStatus::Issued | CibaStatus::Used if just_decided => message_page(
            StatusCode::OK,
            "Approved",
            &format!("You approved \u{201c}{message}\u{201d}. You can close this window."),
        ),
        CibaStatus::Denied if just_decided => message_page(
            StatusCode::OK,
            "Denied",
            &format!("You denied \u{201c}{message}\u{201d}. Nothing happens. You can close this window."),
        ),
        CibaStatus::Approved | CibaStatus::Issued | CibaStatus::Used => message_page(
            StatusCode::CONFLICT,
            "Already approved",
            &format!("\u{201c}{message}\u{201d} was already approved; this link no longer decides anything."),
        ),
        CibaStatus::Denied => message_page(
            StatusCode::CONFLICT,
            "Already denied",
            &format!("\u{201c}{message}\u{201d} was already denied; this link no longer decides anything."),
        ),
        CibaStatus::Expired | CibaStatus::Pending if record.expires_at < now || record.status == CibaStatus::Expired => {
            message_page(
                StatusCode::GONE,
                "Expired",
                &format!("The request \u{201c}{message}\u{201d} expired before a decision; nothing happens."),
            )
        }
        _ => not_valid(),
    }
}

/// `GET /ciba/approve?ticket=…`: the page. Decides nothing. Without a
/// ticket: [`check_your_device`].
pub async fn show(
    State(vault): State<Arc<Vault>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if vault.ciba.is_none() {
        return not_valid();
    }
    let Some(link) = query.get("ticket") else {
        return check_your_device();
    };
    if !ticket::well_formed(link) {
        return not_valid();
    }
    let approval_id = ticket::ticket_id(link);
    let record = match vault.store.find_ciba_approval(&approval_id).await {
        Ok(Some(record)) => record,
        Ok(None) => return not_valid(),
        Err(e) => return server_error(e),
    };
    let now = unix_now();
    if record.status != CibaStatus::Pending || record.expires_at < now {
        return outcome_page(&record, now, false);
    }
    let name = cookie_name(&vault);
    let cookies = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    let cookie = match ticket::cookie(cookies, name).filter(|v| ticket::well_formed(v)) {
        Some(v) => v.to_string(),
        None => match ticket::new_cookie_value() {
            Ok(v) => v,
            Err(e) => return server_error(e),
        },
    };
    let csrf_token = vault
        .tickets
        .csrf_token(&csrf_subject(&approval_id), &cookie);
    let action = format!("{}{PATH}", vault.config.public_base());
    let html = render(&record, &action, link, &csrf_token, now);
    tracing::info!(client_id = %record.client_id, issuer = %record.issuer, sub = %record.sub, "CIBA approval page opened");
    let left = u64::try_from(record.expires_at - now).unwrap_or(0).max(1);
    let set_cookie = confirm_cookie(&vault, &cookie, left);
    (PAGE_HEADERS, [(header::SET_COOKIE, set_cookie)], Html(html)).into_response()
}

/// `POST /ciba/approve`: Approve or Deny, from the page in this browser.
pub async fn decide(State(vault): State<Arc<Vault>>, headers: HeaderMap, body: Body) -> Response {
    let Some(ciba) = vault.ciba.as_ref() else {
        return not_valid();
    };
    let timeout = std::time::Duration::from_secs(vault.config.body_read_timeout_seconds);
    let body = match crate::request_body::read(&headers, body, MAX_FORM_BYTES, timeout).await {
        Ok(body) => body,
        Err(e) => return message_page(e.status, "Bad form", &e.error_description),
    };
    let form = match DecisionForm::parse(&body) {
        Ok(form) => form,
        Err(why) => return message_page(StatusCode::BAD_REQUEST, "Bad form", &why),
    };
    if !ticket::well_formed(&form.ticket) {
        return not_valid();
    }
    let approval_id = ticket::ticket_id(&form.ticket);
    let cookies = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    let cookie = ticket::cookie(cookies, cookie_name(&vault)).unwrap_or("");
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site");
    if cross_site
        || !vault
            .tickets
            .csrf_ok(&csrf_subject(&approval_id), cookie, &form.csrf_token)
    {
        tracing::warn!("CIBA decision without this browser's page; refused, nothing decided");
        vault.metrics.ciba("decision_refused_csrf");
        return message_page(
            StatusCode::FORBIDDEN,
            "Not decided",
            "This decision did not come from the vault's page in this browser; open the approval link again.",
        );
    }
    let now = unix_now();
    let decided = match vault
        .store
        .decide_ciba(&approval_id, form.decision, now)
        .await
    {
        Ok(decided) => decided,
        Err(e) => return server_error(e),
    };
    let Some(record) = decided else {
        return match vault.store.find_ciba_approval(&approval_id).await {
            Ok(Some(record)) => outcome_page(&record, now, false),
            Ok(None) => not_valid(),
            Err(e) => server_error(e),
        };
    };
    announce(&vault, ciba, &record).await;
    outcome_page(&record, now, true)
}

/// A decision was stored: audit, count, wake the long-polls.
async fn announce(vault: &Vault, ciba: &Ciba, record: &CibaRequest) {
    let user = User::new(record.issuer.clone(), record.sub.clone());
    let (event, outcome) = match record.status {
        CibaStatus::Approved => ("approved", "ciba_approved"),
        _ => ("denied", "ciba_denied"),
    };
    vault.metrics.ciba(event);
    vault
        .audit(Some(&user), Some(&record.client_id), Some("ciba"), outcome)
        .await;
    tracing::info!(client_id = %record.client_id, issuer = %record.issuer, sub = %record.sub, decision = event, "CIBA request decided by the user");
    ciba.decided(&vault.store, &record.id).await;
}

/// The posted form: `ticket`, `csrf_token`, `decision` (`approve` or
/// `deny`), each once.
#[derive(Debug)]
struct DecisionForm {
    ticket: String,
    csrf_token: String,
    decision: CibaStatus,
}

impl DecisionForm {
    fn parse(body: &[u8]) -> Result<DecisionForm, String> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|_| "the form is not url-encoded".to_string())?;
        let field = |name: &str| -> Result<String, String> {
            let mut values = pairs.iter().filter(|(k, _)| k == name);
            match (values.next(), values.next()) {
                (Some((_, v)), None) => Ok(v.clone()),
                (None, _) => Err(format!("{name} is missing")),
                (Some(_), Some(_)) => Err(format!("{name} is repeated")),
            }
        };
        let decision = match field("decision")?.as_str() {
            "approve" => CibaStatus::Approved,
            "deny" => CibaStatus::Denied,
            _ => return Err("decision must be approve or deny".into()),
        };
        Ok(DecisionForm {
            ticket: field("ticket")?,
            csrf_token: field("csrf_token")?,
            decision,
        })
    }
}

/// A JSON value as text for a field: strings as they are, anything else
/// as compact JSON.
fn field_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The `authorization_details` as one definition list per entry.
fn render_details(details: Option<&str>) -> String {
    let Some(items) = details
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .and_then(|v| v.as_array().cloned())
    else {
        return String::new();
    };
    let mut out = String::from("<h2>Details</h2>");
    for item in items {
        let Some(fields) = item.as_object() else {
            continue;
        };
        out.push_str("<dl class=\"details\">");
        for (name, value) in fields {
            out.push_str(&format!(
                "<dt>{}</dt><dd>{}</dd>",
                html_escape(name),
                html_escape(&field_text(value))
            ));
        }
        out.push_str("</dl>");
    }
    out
}

/// The page. Every value shown is escaped.
fn render(record: &CibaRequest, action: &str, link: &str, csrf_token: &str, now: i64) -> String {
    let client = html_escape(&record.client_id);
    let agent = match &record.agent {
        Some(agent) => format!("<b>{}</b> (through <b>{client}</b>)", html_escape(agent)),
        None => format!("<b>{client}</b>"),
    };
    let sub = html_escape(&record.sub);
    let issuer = html_escape(&record.issuer);
    let message = html_escape(&record.binding_message);
    let details = render_details(record.authorization_details.as_deref());
    let left = (record.expires_at - now).max(0);
    let time_left = if left >= 120 {
        format!("about {} minutes", left / 60)
    } else {
        format!("{left} seconds")
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Approve: {message}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;line-height:1.5}}
.msg{{font-size:1.4rem;font-weight:bold;background:#eef3ff;padding:.75rem;border-radius:4px;word-break:break-word}}
dt{{font-weight:bold}}dd{{margin:0 0 .5rem 0;word-break:break-all}}dl.details{{border-left:3px solid #ccd;padding-left:.75rem}}
button{{font-size:1rem;padding:.5rem 1.25rem;margin-right:.5rem}}</style></head>
<body>
<h1>An agent asks for your approval</h1>
<p>{agent} asks to act for you:</p>
<p class="msg" id="binding-message">{message}</p>
{details}
<dl><dt>you (agentward user)</dt><dd>{sub}</dd><dt>issued by</dt><dd>{issuer}</dd><dt>time left</dt><dd id="time-left">{time_left}</dd></dl>
<p>Approve only if you asked for exactly this. If the message or the details are not what you expect, deny.</p>
<form method="post" action="{action}">
<input type="hidden" name="ticket" value="{link}">
<input type="hidden" name="csrf_token" value="{csrf_token}">
<button type="submit" name="decision" value="approve">Approve</button>
<button type="submit" name="decision" value="deny">Deny</button>
</form>
</body></html>
"#,
        action = html_escape(action),
        link = html_escape(link),
        csrf_token = html_escape(csrf_token),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> CibaRequest {
        CibaRequest {
            id: "id".into(),
            approval_id: "aid".into(),
            client_id: "gateway".into(),
            issuer: "https://idp.example/".into(),
            sub: "alice".into(),
            agent: Some("<img src=x onerror=alert(1)>".into()),
            scope: "openid".into(),
            binding_message: "Buy 50 ACME".into(),
            authorization_details: Some(
                r#"[{"type":"trade","note":"<script>alert(1)</script>","qty":50}]"#.into(),
            ),
            audience: None,
            request_digest: None,
            created_at: 1000,
            expires_at: 1300,
            interval: 5,
            last_poll_ms: None,
            status: CibaStatus::Pending,
            decided_at: None,
            jti: None,
        }
    }

    #[test]
    fn page_escapes_details_and_agent_and_shows_the_time_left() {
        let html = render(&record(), "https://v/ciba/approve", "LINK", "CSRF", 1000);
        assert!(!html.contains("<script>") && !html.contains("<img"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(html.contains("<dt>qty</dt><dd>50</dd>"));
        assert!(html.contains("<dt>type</dt><dd>trade</dd>"));
        assert!(html.contains("about 5 minutes"));
        assert!(html.contains(r#"name="ticket" value="LINK""#));
        assert!(html.contains(r#"name="decision" value="approve""#));
    }

    #[test]
    fn form_needs_each_field_once_and_a_known_decision() {
        let ok = DecisionForm::parse(b"ticket=t&csrf_token=c&decision=deny").unwrap();
        assert_eq!(ok.decision, CibaStatus::Denied);
        for (body, why) in [
            (&b"ticket=t&csrf_token=c"[..], "decision is missing"),
            (
                b"ticket=t&csrf_token=c&decision=allow",
                "decision must be approve or deny",
            ),
            (
                b"ticket=t&ticket=u&csrf_token=c&decision=approve",
                "ticket is repeated",
            ),
        ] {
            assert_eq!(DecisionForm::parse(body).unwrap_err(), why);
        }
    }
}
