//! Layer-2 scenarios: the real `ciba_hold.wasm`, loaded into the host-test
//! proxy-wasm host, driven as Envoy drives it after jwt-identity (which
//! sets the identity headers and their `x-agentward-proof` under the key it
//! keeps in shared data). The tests hold that key, make the proofs, and
//! answer the CIBA authority's callouts (`/bc-authorize`, the token
//! endpoint) as the vault would.
//!
//! Build the plugin first:
//! `cargo build --release --target wasm32-wasip1 -p ciba-hold`.
//! `AGENTWARD_WASM_DIR` points at another build directory. Without the
//! `.wasm` the tests skip, unless `CI` is set: then they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agentward_core::proof::{ProofKey, KEY_NAME, PROOF};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use host_test::{Action, CallState, Host, HostOptions, HttpCall, HttpContext, SharedData};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

const ALICE_TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlLmNvbS8iLCJzdWIiOiJhbGljZSJ9.YWxpY2Utc2lnbmF0dXJl";
const BOB_TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlLmNvbS8iLCJzdWIiOiJib2IifQ.Ym9iLXNpZ25hdHVyZQ";
const START: u64 = 1_700_000_000;
const JSON: [(&str, &str); 1] = [("content-type", "application/json")];
const PROOF_KEY: [u8; 16] = *b"test-proof-key!!";
const HANDLE_KEY_ENV: &str = "AGENTWARD_APPROVAL_HANDLE_KEY";
const BIG_ORDER: &str = r#"{"ticker": "ACME", "qty": 50, "amount": 5000}"#;
const SMALL_ORDER: &str = r#"{"ticker": "ACME", "qty": 1, "amount": 100}"#;
const TRADES: &str = "/accounts/acc-7/trades";
const APPROVALS: &str = "https://vault.example.com/approvals";

fn wasm() -> Option<PathBuf> {
    let dir = std::env::var_os("AGENTWARD_WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/wasm32-wasip1/release")
        });
    let wasm = dir.join("ciba_hold.wasm");
    if wasm.exists() {
        return Some(wasm);
    }
    let build = "cargo build --release --target wasm32-wasip1 -p ciba-hold";
    if std::env::var_os("CI").is_some() {
        panic!("{} is not built (CI is set): run `{build}`", wasm.display());
    }
    eprintln!("skipped: {} is not built; run `{build}`", wasm.display());
    None
}

fn options() -> HostOptions {
    let shared = SharedData::new();
    shared.set(KEY_NAME, &PROOF_KEY, 0).unwrap();
    let mut environment = BTreeMap::new();
    environment.insert(
        HANDLE_KEY_ENV.to_string(),
        URL_SAFE_NO_PAD.encode([7u8; 32]),
    );
    HostOptions {
        start_time: UNIX_EPOCH + Duration::from_secs(START),
        shared_data: shared,
        environment,
        ..HostOptions::default()
    }
}

fn authority(extra: Value) -> Value {
    let mut a = json!({
        "cluster": "vault",
        "client_id": "gateway",
        "client_secret": "s3cret",
        "token_header": "x-approval-token",
        "handle_key_env": HANDLE_KEY_ENV,
        "approval_url": APPROVALS,
        "max_held_requests": 2
    });
    for (k, v) in extra.as_object().unwrap() {
        a[k] = v.clone();
    }
    a
}

fn policy(extra_authority: Value) -> Value {
    json!({
        "resource": "https://api.example.com",
        "issuers": [{
            "issuer": "https://idp.example.com/",
            "audiences": ["https://api.example.com"],
            "jwks_uri": "https://idp.example.com/jwks.json",
            "jwks_cluster": "idp"
        }],
        "routes": [
            {"match": {"path": "/health"}},
            {
                "match": {"methods": ["POST"], "path": "/accounts/{account}/trades"},
                "approval": {
                    "when": {"field": "body.amount", "gt": 1000},
                    "binding_message": "Buy {body.qty} {body.ticker}",
                    "authorization_details": [{"type": "stock_trade", "account": "{path.account}",
                                               "ticker": "{body.ticker}", "qty": "{body.qty}"}],
                    "max_body_bytes": 256
                }
            },
            {
                "match": {"methods": ["POST"], "path": "/transfers"},
                "approval": {"binding_message": "Transfer {body.amount}", "mode": "deferred"}
            },
            {
                "match": {"methods": ["DELETE"], "path": "/repos/{repo}"},
                "approval": {"binding_message": "Delete {path.repo}"}
            },
            {
                "match": {"path": "/mcp"},
                "mcp": {"tools": {
                    "place_order": {"approval": {
                        "when": {"field": "body.qty", "gt": 10},
                        "binding_message": "Buy {body.qty} {body.ticker}",
                        "authorization_details": [{"type": "stock_trade", "ticker": "{body.ticker}",
                                                   "qty": "{body.qty}"}]}},
                    "get_price": {}
                }}
            }
        ],
        "approval": authority(extra_authority)
    })
}

fn plugin_with(policy: &Value) -> Option<Host> {
    let host = Host::load(wasm()?, options()).expect("the plugin loads");
    assert_eq!(
        host.configure(policy.to_string()),
        Ok(true),
        "{:?}",
        host.logs()
    );
    Some(host)
}

fn plugin() -> Option<Host> {
    plugin_with(&policy(json!({})))
}

fn identity_of(token: &str) -> (String, String) {
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    (
        claims["iss"].as_str().unwrap().to_string(),
        claims["sub"].as_str().unwrap().to_string(),
    )
}

/// A request as jwt-identity passes it on for `token` (agent
/// `trading-bot`), with `extra` headers and `body` (none: the request ends
/// with its headers). Returns the context and the headers callback's action.
fn send(
    host: &Host,
    token: &str,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: Option<&str>,
) -> (HttpContext, Action) {
    let (iss, sub) = identity_of(token);
    let proof = ProofKey::from_bytes(&PROOF_KEY).unwrap().prove(
        |name| match name {
            "x-agentward-sub" => Some(sub.as_str()),
            "x-agentward-issuer" => Some(iss.as_str()),
            "x-agentward-agent" => Some("trading-bot"),
            _ => None,
        },
        token,
    );
    let authorization = format!("Bearer {token}");
    let mut headers = vec![
        (":method", method),
        (":path", path),
        (":authority", "api.example.com"),
        ("authorization", authorization.as_str()),
        ("x-agentward-sub", sub.as_str()),
        ("x-agentward-issuer", iss.as_str()),
        ("x-agentward-agent", "trading-bot"),
        (PROOF, proof.as_str()),
    ];
    headers.extend_from_slice(extra);
    let req = host.http_context().unwrap();
    let action = req.request_headers(&headers, body.is_none()).unwrap();
    if let Some(body) = body {
        assert_eq!(action, Action::Continue, "headers go on before the body");
        req.request_body(body.as_bytes(), true).unwrap();
    }
    (req, action)
}

fn order(host: &Host, body: &str) -> HttpContext {
    send(host, ALICE_TOKEN, "POST", TRADES, &[], Some(body)).0
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn form(call: &HttpCall) -> HashMap<String, String> {
    std::str::from_utf8(&call.body)
        .unwrap()
        .split('&')
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap();
            (decode(n), decode(v))
        })
        .collect()
}

fn pending_calls(host: &Host) -> Vec<HttpCall> {
    host.http_calls()
        .into_iter()
        .filter(|c| c.state == CallState::Pending)
        .collect()
}

/// The one pending callout.
fn only_call(host: &Host) -> HttpCall {
    let calls = pending_calls(host);
    assert_eq!(calls.len(), 1, "one pending callout: {calls:?}");
    calls.into_iter().next().unwrap()
}

fn answer(host: &Host, call: &HttpCall, status: u16, body: Value) {
    host.answer_http_call(call.token, status, &JSON, body.to_string().as_bytes())
        .unwrap();
}

/// Answers the pending `/bc-authorize`.
fn started(host: &Host, interval: u64) -> HttpCall {
    let call = only_call(host);
    assert_eq!(call.header(":path"), Some("/bc-authorize"));
    answer(
        host,
        &call,
        200,
        json!({"auth_req_id": "req-1", "expires_in": 300, "interval": interval}),
    );
    call
}

/// Moves the clock and ticks.
fn later(host: &Host, seconds: u64) {
    host.advance(Duration::from_secs(seconds));
    host.tick().unwrap();
}

fn local(req: &HttpContext, status: u32) -> Value {
    let record = req.record();
    let answer = record.local_response.clone().expect("a local answer");
    assert_eq!(answer.status, status, "{}", answer.body_text());
    assert!(!record.sent_upstream());
    let body = answer.body_text();
    assert!(
        !body.contains(ALICE_TOKEN) && !body.contains("req-1"),
        "{body}"
    );
    serde_json::from_str(&body).unwrap()
}

fn metric(host: &Host, name: &str) -> u64 {
    host.metric(&format!("agentward.approval.{name}"))
        .map_or(0, |m| m.value)
}

fn assert_healthy(host: &Host) {
    assert!(!host.is_broken(), "trapped: {:?}", host.trap_message());
}

// ============================================================ pass-through

#[test]
fn a_small_order_goes_on_without_asking_and_spoofed_approval_headers_are_removed() {
    let Some(host) = plugin() else { return };
    let spoof = [
        ("x-approval-token", "forged"),
        ("x-agentward-approval", "x"),
    ];
    let (req, _) = send(
        &host,
        ALICE_TOKEN,
        "POST",
        TRADES,
        &spoof,
        Some(SMALL_ORDER),
    );
    let record = req.record();
    assert!(record.sent_upstream());
    assert_eq!(record.request_headers.get("x-approval-token"), None);
    assert_eq!(record.request_headers.get("x-agentward-approval"), None);
    assert_eq!(record.request_body, SMALL_ORDER.as_bytes());
    assert!(host.http_calls().is_empty());
    // A route without a rule is not read at all.
    let (req, action) = send(&host, ALICE_TOKEN, "GET", "/health", &spoof, None);
    assert_eq!(action, Action::Continue);
    assert_eq!(req.record().request_headers.get("x-approval-token"), None);
    assert_eq!(metric(&host, "asked"), 0);
    assert_healthy(&host);
}

// ============================================================ hold mode

#[test]
fn hold_asks_for_this_request_then_polls_until_approved_and_resumes() {
    let Some(host) = plugin() else { return };
    let req = order(&host, BIG_ORDER);
    assert!(req.record().is_paused());
    let call = only_call(&host);
    assert_eq!(call.cluster, "vault");
    assert_eq!(call.header(":method"), Some("POST"));
    assert!(call.header("authorization").unwrap().starts_with("Basic "));
    let sent = form(&call);
    assert_eq!(sent["binding_message"], "Buy 50 ACME");
    assert_eq!(sent["login_hint"], "alice");
    assert_eq!(sent["agent_id"], "trading-bot");
    assert!(sent["request_digest"].starts_with("sha-256:"));
    let details: Value = serde_json::from_str(&sent["authorization_details"]).unwrap();
    assert_eq!(
        details,
        json!([{"type": "stock_trade", "account": "acc-7", "ticker": "ACME", "qty": 50}])
    );
    started(&host, 5);
    // Plain polling: nothing before the interval.
    assert!(pending_calls(&host).is_empty());
    later(&host, 4);
    assert!(pending_calls(&host).is_empty());
    later(&host, 1);
    let poll = only_call(&host);
    assert_eq!(poll.context_id, 1, "the root polls held requests");
    let p = form(&poll);
    assert_eq!(p["grant_type"], "urn:openid:params:grant-type:ciba");
    assert_eq!(p["auth_req_id"], "req-1");
    assert!(!p.contains_key("wait"));
    answer(&host, &poll, 400, json!({"error": "authorization_pending"}));
    assert!(req.record().is_paused());
    later(&host, 5);
    let poll = only_call(&host);
    answer(
        &host,
        &poll,
        200,
        json!({"access_token": "approved.jwt.sig", "token_type": "Bearer"}),
    );
    let record = req.record();
    assert!(record.sent_upstream(), "{:?}", record.local_response);
    assert_eq!(record.request_body, BIG_ORDER.as_bytes());
    // The headers went on before the body was read: no token header then.
    assert_eq!(record.request_headers.get("x-approval-token"), None);
    assert_eq!(metric(&host, "asked"), 1);
    assert_eq!(metric(&host, "approved"), 1);
    assert_healthy(&host);
}

#[test]
fn long_poll_starts_at_once_from_the_request_and_resumes_on_approval() {
    let Some(host) = plugin_with(&policy(json!({"wait_seconds": 20}))) else {
        return;
    };
    let req = order(&host, BIG_ORDER);
    started(&host, 5);
    let poll = only_call(&host);
    assert_eq!(poll.context_id, req.id());
    assert_eq!(form(&poll)["wait"], "20");
    assert_eq!(poll.timeout, Duration::from_millis(25_000));
    // Back pending after the whole wait: a new long-poll at once.
    host.advance(Duration::from_secs(20));
    answer(&host, &poll, 400, json!({"error": "authorization_pending"}));
    let poll = only_call(&host);
    answer(&host, &poll, 200, json!({"access_token": "t"}));
    assert!(req.record().sent_upstream());
    assert_healthy(&host);
}

#[test]
fn a_request_without_body_gets_the_approval_token_in_the_configured_header() {
    let Some(host) = plugin() else { return };
    let spoof = [("x-approval-token", "forged")];
    let (req, action) = send(
        &host,
        ALICE_TOKEN,
        "DELETE",
        "/repos/agentward",
        &spoof,
        None,
    );
    assert_eq!(action, Action::Pause, "held with its headers");
    let call = only_call(&host);
    assert_eq!(form(&call)["binding_message"], "Delete agentward");
    started(&host, 2);
    later(&host, 2);
    let poll = only_call(&host);
    answer(
        &host,
        &poll,
        200,
        json!({"access_token": "approved.jwt.sig"}),
    );
    let record = req.record();
    assert!(record.sent_upstream());
    assert_eq!(
        record.request_headers.get("x-approval-token"),
        Some("approved.jwt.sig")
    );
    assert_healthy(&host);
}

#[test]
fn denial_is_403_access_denied_and_expiry_403_expired_token() {
    let Some(host) = plugin() else { return };
    for (error, status, code) in [
        ("access_denied", 403, "access_denied"),
        ("expired_token", 403, "expired_token"),
    ] {
        let req = order(&host, BIG_ORDER);
        started(&host, 1);
        later(&host, 1);
        answer(&host, &only_call(&host), 400, json!({"error": error}));
        assert_eq!(local(&req, status)["error"], code);
    }
    assert_eq!(metric(&host, "denied"), 1);
    assert_eq!(metric(&host, "expired"), 1);
    assert_healthy(&host);
}

#[test]
fn a_hold_past_the_requests_expiry_is_answered_expired_without_a_poll() {
    let Some(host) = plugin() else { return };
    let req = order(&host, BIG_ORDER);
    let call = only_call(&host);
    answer(
        &host,
        &call,
        200,
        json!({"auth_req_id": "req-1", "expires_in": 3, "interval": 10}),
    );
    later(&host, 3);
    assert!(pending_calls(&host).is_empty());
    assert_eq!(local(&req, 403)["error"], "expired_token");
}

#[test]
fn slow_down_adds_five_seconds_to_the_interval() {
    let Some(host) = plugin() else { return };
    let req = order(&host, BIG_ORDER);
    started(&host, 2);
    later(&host, 2);
    answer(&host, &only_call(&host), 400, json!({"error": "slow_down"}));
    later(&host, 2);
    assert!(pending_calls(&host).is_empty(), "not before 2 + 5 s");
    later(&host, 5);
    answer(&host, &only_call(&host), 200, json!({"access_token": "t"}));
    assert!(req.record().sent_upstream());
}

#[test]
fn an_authority_that_is_down_or_answers_garbage_is_503() {
    let Some(host) = plugin() else { return };
    // bc-authorize fails.
    let req = order(&host, BIG_ORDER);
    host.fail_http_call(only_call(&host).token).unwrap();
    assert_eq!(local(&req, 503)["reason"], "approval_authority_unavailable");
    // bc-authorize answers HTML.
    let req = order(&host, BIG_ORDER);
    let call = only_call(&host);
    host.answer_http_call(call.token, 200, &[], b"<html>ok</html>")
        .unwrap();
    assert_eq!(local(&req, 503)["error"], "temporarily_unavailable");
    // A poll answers nonsense.
    let req = order(&host, BIG_ORDER);
    started(&host, 1);
    later(&host, 1);
    answer(
        &host,
        &only_call(&host),
        200,
        json!({"token_type": "Bearer"}),
    );
    assert_eq!(local(&req, 503)["error"], "temporarily_unavailable");
    // A poll fails.
    let req = order(&host, BIG_ORDER);
    started(&host, 1);
    later(&host, 1);
    host.fail_http_call(only_call(&host).token).unwrap();
    assert_eq!(local(&req, 503)["error"], "temporarily_unavailable");
    assert_eq!(metric(&host, "authority_unavailable"), 4);
    // An unknown cluster is the same.
    let mut p = policy(json!({}));
    p["approval"]["cluster"] = json!("nowhere");
    let host = plugin_with(&p).unwrap();
    host.fail_hostcall("proxy_http_call", host_test::Status::BadArgument);
    let req = order(&host, BIG_ORDER);
    assert_eq!(local(&req, 503)["error"], "temporarily_unavailable");
    assert_healthy(&host);
}

#[test]
fn a_client_that_hangs_up_frees_its_slot_and_the_cap_answers_503() {
    let Some(host) = plugin() else { return };
    let first = order(&host, BIG_ORDER);
    started(&host, 5);
    let second = order(&host, BIG_ORDER);
    assert!(second.record().is_paused());
    // The cap is 2: a third is answered at once, without asking.
    let third = order(&host, BIG_ORDER);
    assert_eq!(local(&third, 503)["reason"], "too_many_held_requests");
    assert_eq!(metric(&host, "too_many_held"), 1);
    // The first client leaves while waiting for its next poll.
    first.finish().unwrap();
    let fourth = order(&host, BIG_ORDER);
    assert!(fourth.record().is_paused());
    assert!(fourth.record().local_response.is_none());
    // Its timer is gone too: the tick polls for nobody.
    later(&host, 5);
    assert_eq!(
        pending_calls(&host).len(),
        2,
        "second's and fourth's bc-authorize"
    );
    // A client that leaves while the root's poll is under way: the answer
    // finds nobody.
    let host = plugin().unwrap();
    let req = order(&host, BIG_ORDER);
    started(&host, 1);
    later(&host, 1);
    let poll = only_call(&host);
    req.finish().unwrap();
    answer(&host, &poll, 200, json!({"access_token": "t"}));
    assert_healthy(&host);
}

// ============================================================ refusals

#[test]
fn bodies_the_rule_cannot_read_are_refused_before_asking() {
    let Some(host) = plugin() else { return };
    let big = format!(
        r#"{{"ticker": "ACME", "qty": 50, "amount": 5000, "pad": "{}"}}"#,
        "x".repeat(300)
    );
    assert_eq!(local(&order(&host, &big), 413)["reason"], "body_too_large");
    let twice = r#"{"amount": 5000, "amount": 1, "qty": 5, "ticker": "ACME"}"#;
    assert_eq!(
        local(&order(&host, twice), 400)["reason"],
        "duplicate_json_key"
    );
    let html = r#"{"amount": 5000, "qty": 5, "ticker": "<b>"}"#;
    assert_eq!(
        local(&order(&host, html), 400)["reason"],
        "approval_template"
    );
    assert_eq!(
        local(&order(&host, "not json"), 400)["reason"],
        "approval_body_not_json"
    );
    assert!(host.http_calls().is_empty());
    assert_healthy(&host);
}

#[test]
fn an_unproven_identity_is_401_and_nothing_is_asked() {
    let Some(host) = plugin() else { return };
    let req = host.http_context().unwrap();
    req.request_headers(
        &[
            (":method", "POST"),
            (":path", TRADES),
            ("authorization", &format!("Bearer {ALICE_TOKEN}")),
            ("x-agentward-sub", "alice"),
            ("x-agentward-issuer", "https://idp.example.com/"),
            (PROOF, "forged"),
        ],
        false,
    )
    .unwrap();
    assert_eq!(local(&req, 401)["reason"], "identity_unproven");
    assert!(host.http_calls().is_empty());
}

// ============================================================ deferred mode

/// A deferred transfer asked and answered 202; its approval id.
fn deferred(host: &Host, body: &str) -> String {
    let (req, _) = send(host, ALICE_TOKEN, "POST", "/transfers", &[], Some(body));
    started(host, 5);
    let json = local(&req, 202);
    assert_eq!(json["status"], "approval_pending");
    assert_eq!(json["expires_in"], 300);
    assert_eq!(json["interval"], 5);
    let answer = req.record().local_response.unwrap();
    assert_eq!(answer.headers.get("retry-after"), Some("5"));
    json["approval_id"].as_str().unwrap().to_string()
}

#[test]
fn deferred_answers_202_and_the_same_retry_goes_through_once() {
    let Some(host) = plugin() else { return };
    let body = r#"{"amount": 5000, "to": "bob"}"#;
    let id = deferred(&host, body);
    assert!(!id.contains("req-1"));
    // Too early: 202 again with the same id, polled without waiting.
    let retry = [("x-agentward-approval", id.as_str())];
    let reordered = r#"{"to": "bob", "amount": 5000}"#;
    let (req, _) = send(
        &host,
        ALICE_TOKEN,
        "POST",
        "/transfers",
        &retry,
        Some(reordered),
    );
    let poll = only_call(&host);
    let p = form(&poll);
    assert_eq!(p["auth_req_id"], "req-1");
    assert!(!p.contains_key("wait"));
    answer(&host, &poll, 400, json!({"error": "authorization_pending"}));
    assert_eq!(local(&req, 202)["approval_id"], id.as_str());
    // Approved: the retry goes on, without the approval id.
    let (req, _) = send(&host, ALICE_TOKEN, "POST", "/transfers", &retry, Some(body));
    answer(&host, &only_call(&host), 200, json!({"access_token": "t"}));
    let record = req.record();
    assert!(record.sent_upstream());
    assert_eq!(record.request_headers.get("x-agentward-approval"), None);
    // A replay: the authority issued it once.
    let (req, _) = send(&host, ALICE_TOKEN, "POST", "/transfers", &retry, Some(body));
    answer(
        &host,
        &only_call(&host),
        400,
        json!({"error": "invalid_grant"}),
    );
    assert_eq!(local(&req, 403)["reason"], "approval_used");
    assert_eq!(metric(&host, "used"), 1);
    assert_eq!(metric(&host, "approved"), 1);
    assert_eq!(metric(&host, "pending"), 2);
    assert_healthy(&host);
}

#[test]
fn a_changed_amount_another_user_or_an_altered_id_is_refused_without_a_call() {
    let Some(host) = plugin() else { return };
    let id = deferred(&host, r#"{"amount": 5000, "to": "bob"}"#);
    let calls = host.http_calls().len();
    let retry = [("x-agentward-approval", id.as_str())];
    let (req, _) = send(
        &host,
        ALICE_TOKEN,
        "POST",
        "/transfers",
        &retry,
        Some(r#"{"amount": 50000, "to": "bob"}"#),
    );
    assert_eq!(local(&req, 403)["reason"], "approval_other_request");
    let (req, _) = send(
        &host,
        BOB_TOKEN,
        "POST",
        "/transfers",
        &retry,
        Some(r#"{"amount": 5000, "to": "bob"}"#),
    );
    assert_eq!(local(&req, 403)["reason"], "approval_other_principal");
    let mut altered = id.clone().into_bytes();
    let last = altered.len() - 5;
    altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let retry = [("x-agentward-approval", altered.as_str())];
    let (req, _) = send(
        &host,
        ALICE_TOKEN,
        "POST",
        "/transfers",
        &retry,
        Some(r#"{"amount": 5000, "to": "bob"}"#),
    );
    assert_eq!(local(&req, 403)["reason"], "approval_id_invalid");
    assert_eq!(host.http_calls().len(), calls, "no call for a refused id");
    assert_eq!(metric(&host, "handle_refused"), 3);
    // Past its expiry.
    host.advance(Duration::from_secs(301));
    let retry = [("x-agentward-approval", id.as_str())];
    let (req, _) = send(
        &host,
        ALICE_TOKEN,
        "POST",
        "/transfers",
        &retry,
        Some(r#"{"amount": 5000, "to": "bob"}"#),
    );
    assert_eq!(local(&req, 403)["error"], "expired_token");
    assert_healthy(&host);
}

#[test]
fn a_deferred_rule_without_the_handle_key_in_the_environment_refuses_to_start() {
    let Some(path) = wasm() else { return };
    let mut opts = options();
    opts.environment.clear();
    let host = Host::load(path, opts).unwrap();
    assert_eq!(host.configure(policy(json!({})).to_string()), Ok(false));
    assert!(host.logged("approval.handle_key_env"), "{:?}", host.logs());
}

// ============================================================ MCP tool calls

const MRTR: &str = "2026-07-28";
const LEGACY: &str = "2025-11-25";

/// A `tools/call` JSON-RPC body; `extra` goes into `params`.
fn tool_call(id: u32, tool: &str, qty: u32, extra: Value) -> String {
    let mut params = json!({"name": tool, "arguments": {"ticker": "ACME", "qty": qty},
                            "_meta": {"progressToken": id}});
    for (k, v) in extra.as_object().unwrap() {
        params[k] = v.clone();
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}).to_string()
}

/// POST /mcp as an MCP client of `version` sends it (2026-07-28 with
/// `Mcp-Method` and `Mcp-Name`: `name`, or the body's tool).
fn mcp(host: &Host, token: &str, version: &str, name: Option<&str>, body: &str) -> HttpContext {
    let length = body.len().to_string();
    let tool = serde_json::from_str::<Value>(body).unwrap()["params"]["name"]
        .as_str()
        .map(str::to_string);
    let name = name.map(str::to_string).or(tool).unwrap_or_default();
    let mut headers = vec![
        ("mcp-protocol-version", version),
        ("content-type", "application/json"),
        ("content-length", length.as_str()),
    ];
    if version == MRTR {
        headers.push(("mcp-method", "tools/call"));
        headers.push(("mcp-name", name.as_str()));
    }
    let (req, _) = send(host, token, "POST", "/mcp", &headers, Some(body));
    req
}

/// Answers the one pending poll of the token endpoint.
fn polled(host: &Host, status: u16, body: Value) {
    let poll = only_call(host);
    assert_eq!(form(&poll)["auth_req_id"], "req-1");
    answer(host, &poll, status, body);
}

#[test]
fn mcp_2026_call_gets_input_required_and_the_approved_retry_reaches_the_upstream_without_the_state()
{
    let Some(host) = plugin() else { return };
    let req = mcp(
        &host,
        ALICE_TOKEN,
        MRTR,
        None,
        &tool_call(1, "place_order", 50, json!({})),
    );
    let ask = form(&only_call(&host));
    assert_eq!(ask["binding_message"], "Buy 50 ACME");
    assert!(ask["request_digest"].starts_with("sha-256:"));
    started(&host, 5);
    let answer_1 = local(&req, 200);
    assert_eq!(answer_1["id"], 1);
    let result = &answer_1["result"];
    assert_eq!(result["resultType"], "input_required");
    assert_eq!(
        result["inputRequests"]["agentward_approval"],
        json!({"method": "elicitation/create", "params": {"mode": "url", "url": APPROVALS,
               "message": "Approve this action on your device: Buy 50 ACME"}})
    );
    let state = result["requestState"].as_str().unwrap().to_string();
    assert!(host
        .shared_data()
        .keys()
        .iter()
        .all(|k| !k.starts_with("agentward.approval.mcp.")));

    // The retry, still pending: asked again, the same state.
    let retry = tool_call(
        2,
        "place_order",
        50,
        json!({"requestState": state, "inputResponses": {"agentward_approval": {"action": "accept"}}}),
    );
    let req = mcp(&host, ALICE_TOKEN, MRTR, None, &retry);
    polled(&host, 400, json!({"error": "authorization_pending"}));
    assert_eq!(local(&req, 200)["result"]["requestState"], state.as_str());
    // Approved: on, without what was the gateway's, chunked.
    let req = mcp(&host, ALICE_TOKEN, MRTR, None, &retry);
    polled(&host, 200, json!({"access_token": "t"}));
    let record = req.record();
    assert!(record.sent_upstream(), "{record:?}");
    assert_eq!(record.request_headers.get("content-length"), None);
    let sent: Value = serde_json::from_slice(&record.request_body).unwrap();
    let expected: Value =
        serde_json::from_str(&tool_call(2, "place_order", 50, json!({}))).unwrap();
    assert_eq!(sent, expected);
    // A replay of the state: the authority issued the token once.
    let req = mcp(&host, ALICE_TOKEN, MRTR, None, &retry);
    polled(&host, 400, json!({"error": "invalid_grant"}));
    let used = local(&req, 200);
    assert_eq!(used["error"]["code"], -32010);
    assert_eq!(used["error"]["data"]["reason"], "approval_used");
    assert_eq!(used["id"], 2);
    assert_eq!(metric(&host, "approved"), 1);
    assert_eq!(metric(&host, "used"), 1);
    assert_healthy(&host);
}

#[test]
fn mcp_2025_call_gets_32042_and_its_plain_retry_is_matched_by_digest() {
    let Some(host) = plugin() else { return };
    let req = mcp(
        &host,
        ALICE_TOKEN,
        LEGACY,
        None,
        &tool_call(1, "place_order", 50, json!({})),
    );
    started(&host, 5);
    let first = local(&req, 200);
    assert_eq!(first["error"]["code"], -32042);
    let elicitation = &first["error"]["data"]["elicitations"][0];
    assert_eq!(elicitation["mode"], "url");
    assert_eq!(elicitation["url"], APPROVALS);
    let kept: Vec<String> = host
        .shared_data()
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("agentward.approval.mcp."))
        .collect();
    assert_eq!(kept.len(), 1, "the pending approval is kept for the retry");
    // The same call again (another id): polled, not asked anew.
    let req = mcp(
        &host,
        ALICE_TOKEN,
        LEGACY,
        None,
        &tool_call(9, "place_order", 50, json!({})),
    );
    polled(&host, 200, json!({"access_token": "t"}));
    let record = req.record();
    assert!(record.sent_upstream());
    let sent: Value = serde_json::from_slice(&record.request_body).unwrap();
    assert_eq!(sent["id"], 9);
    assert_eq!(metric(&host, "asked"), 1);
    // Used and forgotten: the same call later is a new approval.
    let value = host.shared_data().get(&kept[0]).unwrap().0;
    assert!(value.is_empty());
    let _req = mcp(
        &host,
        ALICE_TOKEN,
        LEGACY,
        None,
        &tool_call(10, "place_order", 50, json!({})),
    );
    assert_eq!(only_call(&host).header(":path"), Some("/bc-authorize"));
    assert_healthy(&host);
}

#[test]
fn mcp_denied_expired_changed_or_another_users_retry_is_a_json_rpc_error() {
    let Some(host) = plugin() else { return };
    // Denied (2025-11-25).
    let _ = mcp(
        &host,
        ALICE_TOKEN,
        LEGACY,
        None,
        &tool_call(1, "place_order", 20, json!({})),
    );
    started(&host, 5);
    let req = mcp(
        &host,
        ALICE_TOKEN,
        LEGACY,
        None,
        &tool_call(2, "place_order", 20, json!({})),
    );
    polled(&host, 400, json!({"error": "access_denied"}));
    let denied = local(&req, 200);
    assert_eq!(denied["error"]["code"], -32010);
    assert_eq!(denied["error"]["data"]["error"], "access_denied");
    // 2026-07-28: changed arguments, bob, expiry: refused without a call.
    let req = mcp(
        &host,
        ALICE_TOKEN,
        MRTR,
        None,
        &tool_call(3, "place_order", 50, json!({})),
    );
    started(&host, 5);
    let state = local(&req, 200)["result"]["requestState"].clone();
    let calls = host.http_calls().len();
    let changed = tool_call(4, "place_order", 500, json!({"requestState": state}));
    let req = mcp(&host, ALICE_TOKEN, MRTR, None, &changed);
    assert_eq!(
        local(&req, 200)["error"]["data"]["reason"],
        "approval_other_request"
    );
    let same = tool_call(5, "place_order", 50, json!({"requestState": state}));
    let req = mcp(&host, BOB_TOKEN, MRTR, None, &same);
    assert_eq!(
        local(&req, 200)["error"]["data"]["reason"],
        "approval_other_principal"
    );
    host.advance(Duration::from_secs(301));
    let req = mcp(&host, ALICE_TOKEN, MRTR, None, &same);
    let expired = local(&req, 200);
    assert_eq!(expired["error"]["data"]["error"], "expired_token");
    assert_eq!(
        host.http_calls().len(),
        calls,
        "no call for a refused state"
    );
    // The authority down: 503, still JSON-RPC.
    let req = mcp(
        &host,
        ALICE_TOKEN,
        MRTR,
        None,
        &tool_call(6, "place_order", 70, json!({})),
    );
    answer(
        &host,
        &only_call(&host),
        500,
        json!({"error": "server_error"}),
    );
    assert_eq!(local(&req, 503)["error"]["code"], -32603);
    assert_healthy(&host);
}

#[test]
fn mcp_name_that_disagrees_with_the_body_is_refused_with_32020() {
    let Some(host) = plugin() else { return };
    let req = mcp(
        &host,
        ALICE_TOKEN,
        MRTR,
        Some("get_price"),
        &tool_call(7, "place_order", 50, json!({})),
    );
    let refused = local(&req, 400);
    assert_eq!(
        (refused["error"]["code"].clone(), refused["id"].clone()),
        (json!(-32020), json!(7))
    );
    assert!(host.http_calls().is_empty());
    assert_healthy(&host);
}

#[test]
fn mcp_calls_that_need_no_approval_pass_untouched() {
    let Some(host) = plugin() else { return };
    for body in [
        tool_call(1, "get_price", 50, json!({})),
        tool_call(2, "place_order", 5, json!({})),
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}).to_string(),
    ] {
        let length = body.len().to_string();
        let headers = [
            ("mcp-protocol-version", LEGACY),
            ("content-length", length.as_str()),
        ];
        let (req, _) = send(&host, ALICE_TOKEN, "POST", "/mcp", &headers, Some(&body));
        let record = req.record();
        assert!(record.sent_upstream(), "{body}");
        assert_eq!(record.request_body, body.as_bytes());
    }
    assert!(host.http_calls().is_empty());
    assert_eq!(metric(&host, "asked"), 0);
    assert_healthy(&host);
}
