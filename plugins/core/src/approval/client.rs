//! The CIBA client (OpenID CIBA Core 1.0, poll mode), sans-IO: it says
//! which call to make ([`Callout`]) and when ([`Step::Hold`] until the next
//! poll may start), and reads what comes back. The host makes the calls and
//! keeps the timers.
//!
//! start → `POST bc-authorize` → pending (`auth_req_id`, `expires_in`,
//! `interval`) → `POST token` with `grant_type=urn:openid:params:grant-type:ciba`
//! (and `wait` for the vault's long-poll), no sooner than `interval` after
//! the previous poll started (`slow_down` adds 5 s) → approved (the token,
//! optionally set in a header for the upstream), denied (403
//! `access_denied`), expired (403 `expired_token`); an authority that is down
//! or answers garbage is 503, never a forwarded request.

use super::authority::{Authority, ClientAuth, LoginHintFormat};
use super::digest::RequestDigest;
use crate::response::{access_denied, invalid_request, unavailable, LocalResponse};
use crate::secret::Secret;
use crate::step::{Answer, Callout, Edits, Step};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use std::sync::Arc;

/// The CIBA grant type.
pub const CIBA_GRANT: &str = "urn:openid:params:grant-type:ciba";
/// What `slow_down` adds to the interval (CIBA §11, RFC 8628 §3.5).
pub const SLOW_DOWN_MS: u64 = 5_000;
/// The interval when the authority names none (CIBA §7.3).
pub const DEFAULT_INTERVAL_SECONDS: u64 = 5;
/// Longest `auth_req_id` taken from an authority.
pub const MAX_AUTH_REQ_ID: usize = 512;

/// What the gateway asks the user to approve.
#[derive(Debug, Clone, Copy)]
pub struct Backchannel<'a> {
    /// The filled, checked binding message.
    pub binding_message: &'a str,
    /// The filled `authorization_details`.
    pub authorization_details: Option<&'a Value>,
    /// The user.
    pub sub: &'a str,
    /// The user's issuer.
    pub issuer: &'a str,
    /// The agent, sent as `agent_id` (agentward's parameter).
    pub agent: Option<&'a str>,
    /// The request digest, sent as `request_digest` (agentward's parameter).
    pub digest: &'a RequestDigest,
    /// `requested_expiry`, in seconds.
    pub expiry_seconds: u64,
}

/// An approval request the authority accepted, waiting for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The authority's id of the request (a secret of the gateway).
    pub auth_req_id: Secret,
    /// When it expires, in Unix milliseconds.
    pub expires_at_ms: u64,
    /// The least time between two polls' starts.
    pub interval_ms: u64,
    /// When the next poll may start, in Unix milliseconds.
    pub next_poll_ms: u64,
}

impl Pending {
    /// The pending request a deferred retry's handle names, to poll at once
    /// (`interval` as the authority announced it, or the default).
    pub fn resumed(opened: super::handle::Opened, interval_seconds: u64, now_ms: u64) -> Pending {
        Pending {
            auth_req_id: Secret::new(opened.auth_req_id),
            expires_at_ms: opened.expires_at.saturating_mul(1_000),
            interval_ms: interval_seconds.max(1).saturating_mul(1_000),
            next_poll_ms: now_ms,
        }
    }

    /// Seconds left before it expires (at least 1 while it has not).
    pub fn expires_in(&self, now_ms: u64) -> u64 {
        self.expires_at_ms.saturating_sub(now_ms).div_ceil(1_000)
    }
}

/// What a poll's answer means.
#[derive(Debug, Clone, PartialEq)]
pub enum Polled {
    /// The user approved; the approval token.
    Approved(Secret),
    /// Not decided yet: poll again (the [`Pending`] was updated).
    Pending,
    /// Denied, expired, used, or the authority failed: answer this.
    Refused(LocalResponse),
}

/// `application/x-www-form-urlencoded` of name/value pairs.
pub fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = String::new();
    for (name, value) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        form_encode(name, &mut out);
        out.push('=');
        form_encode(value, &mut out);
    }
    out.into_bytes()
}

fn form_encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
}

impl Authority {
    fn post<'a>(
        &'a self,
        path: &str,
        mut pairs: Vec<(&'a str, &'a str)>,
        timeout_ms: u64,
    ) -> Callout {
        let secret = self.client_secret.expose();
        if self.client_auth == ClientAuth::ClientSecretPost {
            pairs.push(("client_id", &self.client_id));
            pairs.push(("client_secret", secret));
        }
        let call = Callout::post(
            &self.cluster,
            self.host(),
            path,
            "application/x-www-form-urlencoded",
            form(&pairs),
        )
        .header("accept", "application/json")
        .timeout_ms(timeout_ms);
        match self.client_auth {
            ClientAuth::ClientSecretBasic => {
                // RFC 6749 §2.3.1: id and secret form-url-encoded first.
                let mut user = String::new();
                form_encode(&self.client_id, &mut user);
                let mut pass = String::new();
                form_encode(secret, &mut pass);
                let basic = STANDARD.encode(format!("{user}:{pass}"));
                call.header("authorization", &format!("Basic {basic}"))
            }
            ClientAuth::ClientSecretPost => call,
        }
    }

    /// The backchannel authentication request.
    pub fn bc_authorize(&self, ask: &Backchannel<'_>) -> Callout {
        let hint = match self.login_hint {
            LoginHintFormat::Sub => ask.sub.to_string(),
            LoginHintFormat::IssSub => {
                json!({"format": "iss_sub", "iss": ask.issuer, "sub": ask.sub}).to_string()
            }
        };
        let expiry = ask.expiry_seconds.to_string();
        let details = ask.authorization_details.map(Value::to_string);
        let digest = ask.digest.to_param();
        let mut pairs = vec![
            ("scope", self.scope.as_str()),
            ("login_hint", hint.as_str()),
            ("binding_message", ask.binding_message),
            ("requested_expiry", expiry.as_str()),
        ];
        if let Some(details) = &details {
            pairs.push(("authorization_details", details));
        }
        if let Some(audience) = &self.audience {
            pairs.push(("audience", audience));
        }
        if self.agentward_params {
            pairs.push(("request_digest", &digest));
            if let Some(agent) = ask.agent {
                pairs.push(("agent_id", agent));
            }
        }
        self.post(&self.bc_authorize_path, pairs, self.timeout_ms)
    }

    /// Reads the backchannel answer at `now_ms`.
    pub fn started(&self, answer: &Answer, now_ms: u64) -> Result<Pending, LocalResponse> {
        let (status, body) = match answer {
            Answer::Response { status, body, .. } => (*status, body),
            _ => return Err(authority_down()),
        };
        let json: Option<Value> = serde_json::from_slice(body).ok();
        if status != 200 {
            return Err(match error_code(json.as_ref()) {
                Some("access_denied") => access_denied(
                    "approval_refused",
                    "the approval authority refused to ask the user (too many approvals waiting, or not allowed)",
                ),
                Some("unknown_user_id") => access_denied(
                    "approval_unknown_user",
                    "the approval authority does not know this user",
                ),
                Some("invalid_binding_message") => invalid_request(
                    "approval_binding_message",
                    "the approval authority refused the message describing this request",
                ),
                Some(_) if (400..500).contains(&status) => unavailable(
                    "approval_authority_refused",
                    "the approval authority refused the gateway's request (its configuration needs fixing)",
                ),
                _ => authority_down(),
            });
        }
        let json = json.ok_or_else(authority_garbage)?;
        let auth_req_id = json
            .get("auth_req_id")
            .and_then(Value::as_str)
            .filter(|id| {
                !id.is_empty()
                    && id.len() <= MAX_AUTH_REQ_ID
                    && id.bytes().all(|b| b.is_ascii_graphic())
            })
            .ok_or_else(authority_garbage)?;
        let expires_in = json
            .get("expires_in")
            .and_then(Value::as_u64)
            .filter(|s| *s > 0)
            .ok_or_else(authority_garbage)?;
        let interval = match json.get("interval") {
            None | Some(Value::Null) => DEFAULT_INTERVAL_SECONDS,
            Some(v) => v
                .as_u64()
                .filter(|s| *s > 0)
                .ok_or_else(authority_garbage)?,
        };
        let interval_ms = interval.saturating_mul(1_000);
        Ok(Pending {
            auth_req_id: Secret::new(auth_req_id),
            expires_at_ms: now_ms.saturating_add(expires_in.saturating_mul(1_000)),
            interval_ms,
            // A long-poll may start at once: it waits at the authority. A
            // plain poll waits one interval first.
            next_poll_ms: if self.wait_seconds > 0 {
                now_ms
            } else {
                now_ms.saturating_add(interval_ms)
            },
        })
    }

    /// A poll of the token endpoint, started at `now_ms`: the next may
    /// start one interval later.
    pub fn poll(&self, pending: &mut Pending, now_ms: u64) -> Callout {
        self.poll_waiting(pending, now_ms, self.wait_seconds)
    }

    /// A deferred retry's one poll: never a long-poll (the agent is told to
    /// come back instead of being held).
    pub fn poll_once(&self, pending: &mut Pending, now_ms: u64) -> Callout {
        self.poll_waiting(pending, now_ms, 0)
    }

    fn poll_waiting(&self, pending: &mut Pending, now_ms: u64, wait_seconds: u64) -> Callout {
        pending.next_poll_ms = now_ms.saturating_add(pending.interval_ms);
        let wait = wait_seconds.to_string();
        let mut pairs = vec![
            ("grant_type", CIBA_GRANT),
            ("auth_req_id", pending.auth_req_id.expose()),
        ];
        if wait_seconds > 0 {
            pairs.push(("wait", &wait));
        }
        let timeout = self
            .timeout_ms
            .saturating_add(wait_seconds.saturating_mul(1_000));
        self.post(&self.token_path, pairs, timeout)
    }

    /// Reads a poll's answer.
    pub fn polled(&self, pending: &mut Pending, answer: &Answer) -> Polled {
        let (status, body) = match answer {
            Answer::Response { status, body, .. } => (*status, body),
            _ => return Polled::Refused(authority_down()),
        };
        let json: Option<Value> = serde_json::from_slice(body).ok();
        if status == 200 {
            return match json
                .as_ref()
                .and_then(|j| j.get("access_token"))
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
            {
                Some(token) => Polled::Approved(Secret::new(token)),
                None => Polled::Refused(authority_garbage()),
            };
        }
        match (status, error_code(json.as_ref())) {
            (400, Some("authorization_pending")) => Polled::Pending,
            (400, Some("slow_down")) => {
                pending.interval_ms = pending.interval_ms.saturating_add(SLOW_DOWN_MS);
                pending.next_poll_ms = pending.next_poll_ms.saturating_add(SLOW_DOWN_MS);
                Polled::Pending
            }
            (400 | 403, Some("access_denied")) => Polled::Refused(access_denied(
                "approval_denied",
                "the user denied this request",
            )),
            (400, Some("expired_token")) => Polled::Refused(expired()),
            (400, Some("invalid_grant")) => Polled::Refused(access_denied(
                "approval_used",
                "this approval was already used, or is not valid for this gateway",
            )),
            (400..=499, Some(_)) => Polled::Refused(unavailable(
                "approval_authority_refused",
                "the approval authority refused the gateway's poll (its configuration needs fixing)",
            )),
            _ => Polled::Refused(authority_down()),
        }
    }

    /// What to do next with a held request at `now_ms`: poll when it may,
    /// else hold until it may (or until the request expires).
    pub fn next(&self, pending: &mut Pending, now_ms: u64) -> Step {
        if now_ms >= pending.expires_at_ms {
            return Step::Respond(expired());
        }
        if now_ms >= pending.next_poll_ms {
            return Step::Call(self.poll(pending, now_ms));
        }
        Step::Hold {
            until_ms: pending.next_poll_ms.min(pending.expires_at_ms),
        }
    }

    /// What a held request does after a poll's answer at `now_ms`.
    pub fn after_poll(&self, pending: &mut Pending, answer: &Answer, now_ms: u64) -> Step {
        match self.polled(pending, answer) {
            Polled::Approved(token) => Step::Continue(self.approved_edits(token)),
            Polled::Pending => self.next(pending, now_ms),
            Polled::Refused(answer) => Step::Respond(answer),
        }
    }

    /// The edits of an approved request: the token in `token_header` when
    /// one is configured.
    pub fn approved_edits(&self, token: Secret) -> Edits {
        match &self.token_header {
            Some(header) => Edits {
                set: Arc::new(vec![(header.clone(), token.into_exposed())]),
                ..Edits::default()
            },
            None => Edits::none(),
        }
    }
}

fn error_code(json: Option<&Value>) -> Option<&str> {
    json?.get("error")?.as_str()
}

/// 403 `expired_token`: the user did not decide in time.
pub fn expired() -> LocalResponse {
    LocalResponse::json(
        403,
        json!({
            "error": "expired_token",
            "error_description": "the approval request expired before the user decided; send the request again",
        }),
    )
}

fn authority_down() -> LocalResponse {
    unavailable(
        "approval_authority_unavailable",
        "the approval authority cannot be reached",
    )
}

fn authority_garbage() -> LocalResponse {
    unavailable(
        "approval_authority_unavailable",
        "the approval authority answered something that is not a CIBA answer",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::authority::tests::authority;

    fn answer(status: u16, body: Value) -> Answer {
        Answer::Response {
            status,
            headers: vec![],
            body: body.to_string().into_bytes(),
        }
    }

    fn ask<'a>(digest: &'a RequestDigest, details: Option<&'a Value>) -> Backchannel<'a> {
        Backchannel {
            binding_message: "Buy 50 ACME",
            authorization_details: details,
            sub: "alice",
            issuer: "https://idp/",
            agent: Some("trading-agent"),
            digest,
            expiry_seconds: 300,
        }
    }

    fn form_of(call: &Callout) -> Vec<(String, String)> {
        let text = String::from_utf8(call.body.clone()).unwrap();
        text.split('&')
            .map(|p| {
                let (n, v) = p.split_once('=').unwrap();
                let decode = |s: &str| {
                    let s = s.replace('+', " ");
                    let mut out = Vec::new();
                    let b = s.as_bytes();
                    let mut i = 0;
                    while i < b.len() {
                        if b[i] == b'%' {
                            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                            i += 3;
                        } else {
                            out.push(b[i]);
                            i += 1;
                        }
                    }
                    String::from_utf8(out).unwrap()
                };
                (decode(n), decode(v))
            })
            .collect()
    }

    fn param(call: &Callout, name: &str) -> Option<String> {
        form_of(call)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    fn header<'a>(call: &'a Callout, name: &str) -> Option<&'a str> {
        call.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn pending(a: &Authority) -> Pending {
        a.started(
            &answer(
                200,
                json!({"auth_req_id": "req-1", "expires_in": 300, "interval": 5}),
            ),
            1_000_000,
        )
        .unwrap()
    }

    fn reason(r: &LocalResponse) -> (u32, String, String) {
        let body: Value = serde_json::from_str(&r.body).unwrap();
        (
            r.status,
            body["error"].as_str().unwrap_or_default().to_string(),
            body["reason"].as_str().unwrap_or_default().to_string(),
        )
    }

    #[test]
    fn bc_authorize_carries_the_request_and_basic_auth() {
        let a = authority(json!({"client_id": "gate way", "client_secret": "p:ss",
                                 "audience": "https://api"}))
        .unwrap();
        let d = RequestDigest([1; 32]);
        let details = json!([{"type": "stock_trade", "qty": 50}]);
        let call = a.bc_authorize(&ask(&d, Some(&details)));
        assert_eq!(call.method, "POST");
        assert_eq!(call.path, "/bc-authorize");
        assert_eq!(call.cluster, "vault");
        assert_eq!(
            header(&call, "authorization"),
            Some(format!("Basic {}", STANDARD.encode("gate+way:p%3Ass")).as_str())
        );
        assert_eq!(param(&call, "scope").as_deref(), Some("openid"));
        assert_eq!(param(&call, "login_hint").as_deref(), Some("alice"));
        assert_eq!(
            param(&call, "binding_message").as_deref(),
            Some("Buy 50 ACME")
        );
        assert_eq!(param(&call, "requested_expiry").as_deref(), Some("300"));
        assert_eq!(param(&call, "audience").as_deref(), Some("https://api"));
        assert_eq!(param(&call, "request_digest"), Some(d.to_param()));
        assert_eq!(param(&call, "agent_id").as_deref(), Some("trading-agent"));
        let sent: Value =
            serde_json::from_str(&param(&call, "authorization_details").unwrap()).unwrap();
        assert_eq!(sent, details);
        assert_eq!(param(&call, "client_secret"), None);
    }

    #[test]
    fn client_secret_post_iss_sub_hint_and_no_agentward_params() {
        let a = authority(
            json!({"client_auth": "client_secret_post", "login_hint": "iss_sub",
                                 "agentward_params": false}),
        )
        .unwrap();
        let d = RequestDigest([1; 32]);
        let call = a.bc_authorize(&ask(&d, None));
        assert_eq!(header(&call, "authorization"), None);
        assert_eq!(param(&call, "client_id").as_deref(), Some("gateway"));
        assert_eq!(param(&call, "client_secret").as_deref(), Some("s3cret"));
        let hint: Value = serde_json::from_str(&param(&call, "login_hint").unwrap()).unwrap();
        assert_eq!(
            hint,
            json!({"format": "iss_sub", "iss": "https://idp/", "sub": "alice"})
        );
        assert_eq!(param(&call, "request_digest"), None);
        assert_eq!(param(&call, "agent_id"), None);
        assert_eq!(param(&call, "authorization_details"), None);
    }

    #[test]
    fn a_started_request_waits_an_interval_before_a_plain_poll() {
        let a = authority(json!({})).unwrap();
        let mut p = pending(&a);
        assert_eq!(p.auth_req_id.expose(), "req-1");
        assert_eq!(p.expires_at_ms, 1_300_000);
        assert_eq!(p.interval_ms, 5_000);
        assert_eq!(
            a.next(&mut p, 1_000_000),
            Step::Hold {
                until_ms: 1_005_000
            }
        );
        let Step::Call(call) = a.next(&mut p, 1_005_000) else {
            panic!("a poll is due")
        };
        assert_eq!(call.path, "/oauth/token");
        assert_eq!(param(&call, "grant_type").as_deref(), Some(CIBA_GRANT));
        assert_eq!(param(&call, "auth_req_id").as_deref(), Some("req-1"));
        assert_eq!(param(&call, "wait"), None);
        assert_eq!(call.timeout_ms, 5_000);
        assert_eq!(p.next_poll_ms, 1_010_000);
    }

    #[test]
    fn a_long_poll_starts_at_once_with_wait_and_a_longer_timeout() {
        let a = authority(json!({"wait_seconds": 20})).unwrap();
        let mut p = pending(&a);
        let Step::Call(call) = a.next(&mut p, 1_000_000) else {
            panic!("a long-poll starts at once")
        };
        assert_eq!(param(&call, "wait").as_deref(), Some("20"));
        assert_eq!(call.timeout_ms, 25_000);
        // The long-poll came back pending after its 20 s: poll again at once.
        let step = a.after_poll(
            &mut p,
            &answer(400, json!({"error": "authorization_pending"})),
            1_020_000,
        );
        assert!(matches!(step, Step::Call(_)), "{step:?}");
        // Came back early (1 s): wait out the interval.
        let step = a.after_poll(
            &mut p,
            &answer(400, json!({"error": "authorization_pending"})),
            1_021_000,
        );
        assert_eq!(
            step,
            Step::Hold {
                until_ms: 1_025_000
            }
        );
    }

    #[test]
    fn no_interval_means_five_seconds_and_a_bad_one_is_garbage() {
        let a = authority(json!({})).unwrap();
        let p = a
            .started(
                &answer(200, json!({"auth_req_id": "r", "expires_in": 60})),
                0,
            )
            .unwrap();
        assert_eq!(p.interval_ms, 5_000);
        for body in [
            json!({"auth_req_id": "r", "expires_in": 60, "interval": "5"}),
            json!({"auth_req_id": "r", "expires_in": 0}),
            json!({"auth_req_id": "", "expires_in": 60}),
            json!({"auth_req_id": "a b", "expires_in": 60}),
            json!({"auth_req_id": "x".repeat(600), "expires_in": 60}),
            json!({"expires_in": 60}),
            json!("ok"),
        ] {
            let e = a.started(&answer(200, body.clone()), 0).unwrap_err();
            assert_eq!(reason(&e).0, 503, "{body}");
        }
        let e = a
            .started(
                &Answer::Response {
                    status: 200,
                    headers: vec![],
                    body: b"<html>".to_vec(),
                },
                0,
            )
            .unwrap_err();
        assert_eq!(
            reason(&e),
            (
                503,
                "temporarily_unavailable".into(),
                "approval_authority_unavailable".into()
            )
        );
    }

    #[test]
    fn backchannel_refusals() {
        let a = authority(json!({})).unwrap();
        for (status, body, want) in [
            (
                400,
                json!({"error": "access_denied"}),
                (403, "access_denied", "approval_refused"),
            ),
            (
                400,
                json!({"error": "unknown_user_id"}),
                (403, "access_denied", "approval_unknown_user"),
            ),
            (
                400,
                json!({"error": "invalid_binding_message"}),
                (400, "invalid_request", "approval_binding_message"),
            ),
            (
                401,
                json!({"error": "invalid_client"}),
                (503, "temporarily_unavailable", "approval_authority_refused"),
            ),
            (
                400,
                json!({"error": "invalid_scope"}),
                (503, "temporarily_unavailable", "approval_authority_refused"),
            ),
            (
                400,
                json!({"error": "unauthorized_client"}),
                (503, "temporarily_unavailable", "approval_authority_refused"),
            ),
            (
                500,
                json!({"error": "server_error"}),
                (
                    503,
                    "temporarily_unavailable",
                    "approval_authority_unavailable",
                ),
            ),
            (
                502,
                json!("bad gateway"),
                (
                    503,
                    "temporarily_unavailable",
                    "approval_authority_unavailable",
                ),
            ),
        ] {
            let e = a.started(&answer(status, body.clone()), 0).unwrap_err();
            assert_eq!(
                reason(&e),
                (want.0, want.1.into(), want.2.into()),
                "{status} {body}"
            );
        }
        for down in [
            Answer::Failed,
            Answer::TooLarge {
                status: 200,
                size: 1 << 20,
            },
        ] {
            let e = a.started(&down, 0).unwrap_err();
            assert_eq!(reason(&e).2, "approval_authority_unavailable");
        }
    }

    #[test]
    fn pending_then_approved_sets_the_token_header() {
        let a = authority(json!({"token_header": "x-approval-token"})).unwrap();
        let mut p = pending(&a);
        assert!(matches!(a.next(&mut p, 1_005_000), Step::Call(_)));
        let step = a.after_poll(
            &mut p,
            &answer(400, json!({"error": "authorization_pending"})),
            1_005_500,
        );
        assert_eq!(
            step,
            Step::Hold {
                until_ms: 1_010_000
            }
        );
        assert!(matches!(a.next(&mut p, 1_010_000), Step::Call(_)));
        let step = a.after_poll(
            &mut p,
            &answer(
                200,
                json!({"access_token": "eyJ.approved.sig", "token_type": "Bearer"}),
            ),
            1_006_000,
        );
        let Step::Continue(edits) = step else {
            panic!("approved: {step:?}")
        };
        assert_eq!(
            edits.set.as_slice(),
            &[(
                "x-approval-token".to_string(),
                "eyJ.approved.sig".to_string()
            )]
        );
        // Without a header, nothing is set.
        let plain = authority(json!({})).unwrap();
        let mut p = pending(&plain);
        let step = plain.after_poll(&mut p, &answer(200, json!({"access_token": "t"})), 0);
        assert_eq!(step, Step::Continue(Edits::none()));
        // An approval without a token is garbage.
        let step = plain.after_poll(&mut p, &answer(200, json!({"token_type": "Bearer"})), 0);
        assert!(matches!(step, Step::Respond(r) if r.status == 503));
    }

    #[test]
    fn slow_down_adds_five_seconds_to_every_later_interval() {
        let a = authority(json!({})).unwrap();
        let mut p = pending(&a);
        let Step::Call(_) = a.next(&mut p, 1_005_000) else {
            panic!()
        };
        let step = a.after_poll(
            &mut p,
            &answer(400, json!({"error": "slow_down"})),
            1_005_100,
        );
        assert_eq!(p.interval_ms, 10_000);
        assert_eq!(
            step,
            Step::Hold {
                until_ms: 1_015_000
            }
        );
        let Step::Call(_) = a.next(&mut p, 1_015_000) else {
            panic!()
        };
        assert_eq!(p.next_poll_ms, 1_025_000);
    }

    #[test]
    fn denied_expired_used_and_broken_polls() {
        let a = authority(json!({})).unwrap();
        for (status, body, want) in [
            (
                400,
                json!({"error": "access_denied"}),
                (403, "access_denied", "approval_denied"),
            ),
            (
                400,
                json!({"error": "expired_token"}),
                (403, "expired_token", ""),
            ),
            (
                400,
                json!({"error": "invalid_grant"}),
                (403, "access_denied", "approval_used"),
            ),
            (
                401,
                json!({"error": "invalid_client"}),
                (503, "temporarily_unavailable", "approval_authority_refused"),
            ),
            (
                400,
                json!({"error": "invalid_request"}),
                (503, "temporarily_unavailable", "approval_authority_refused"),
            ),
            (
                500,
                json!({}),
                (
                    503,
                    "temporarily_unavailable",
                    "approval_authority_unavailable",
                ),
            ),
            (
                400,
                json!("pending"),
                (
                    503,
                    "temporarily_unavailable",
                    "approval_authority_unavailable",
                ),
            ),
        ] {
            let mut p = pending(&a);
            let Step::Respond(r) = a.after_poll(&mut p, &answer(status, body.clone()), 1_005_000)
            else {
                panic!("{body}")
            };
            assert_eq!(
                reason(&r),
                (want.0, want.1.into(), want.2.into()),
                "{status} {body}"
            );
        }
        let mut p = pending(&a);
        let Step::Respond(r) = a.after_poll(&mut p, &Answer::Failed, 0) else {
            panic!()
        };
        assert_eq!(r.status, 503);
    }

    #[test]
    fn a_request_past_its_expiry_is_answered_expired_without_a_poll() {
        let a = authority(json!({})).unwrap();
        let mut p = pending(&a);
        // The hold never outlasts the request.
        p.next_poll_ms = 2_000_000;
        assert_eq!(
            a.next(&mut p, 1_100_000),
            Step::Hold {
                until_ms: 1_300_000
            }
        );
        let Step::Respond(r) = a.next(&mut p, 1_300_000) else {
            panic!()
        };
        assert_eq!(reason(&r).1, "expired_token");
    }

    #[test]
    fn a_deferred_retry_polls_once_at_once_without_wait() {
        let a = authority(json!({"wait_seconds": 20})).unwrap();
        let opened = crate::approval::handle::Opened {
            auth_req_id: "req-9".into(),
            expires_at: 2_000,
        };
        let mut p = Pending::resumed(opened, 5, 1_500_000);
        assert_eq!(p.expires_at_ms, 2_000_000);
        assert_eq!(p.expires_in(1_500_001), 500);
        let call = a.poll_once(&mut p, 1_500_000);
        assert_eq!(param(&call, "auth_req_id").as_deref(), Some("req-9"));
        assert_eq!(param(&call, "wait"), None);
        assert_eq!(call.timeout_ms, 5_000);
        assert_eq!(
            a.polled(
                &mut p,
                &answer(400, json!({"error": "authorization_pending"}))
            ),
            Polled::Pending
        );
        assert_eq!(
            a.polled(&mut p, &answer(200, json!({"access_token": "t"}))),
            Polled::Approved(Secret::new("t"))
        );
    }

    #[test]
    fn the_secret_never_shows_in_debug() {
        let a = authority(json!({})).unwrap();
        let p = pending(&a);
        assert!(!format!("{p:?}").contains("req-1"));
    }
}
