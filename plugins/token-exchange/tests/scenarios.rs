//! Layer-2 scenarios: the real `token_exchange.wasm`, loaded into the
//! host-test proxy-wasm host, driven as Envoy would drive it after
//! jwt-identity (which sets `x-agentward-sub`, `x-agentward-issuer` and
//! their `x-agentward-proof` under the key it keeps in shared data, and
//! leaves the user's `authorization: Bearer …`). The tests hold that key,
//! make the proofs jwt-identity would make, and answer the vault callouts.
//!
//! Build the plugin first:
//! `cargo build --release --target wasm32-wasip1 -p token-exchange`.
//! `AGENTWARD_WASM_DIR` points at another build directory. Without the
//! `.wasm` the tests skip, unless `CI` is set: then they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agentward_core::proof::{ProofKey, KEY_NAME, PROOF};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use host_test::{
    Action, CallState, Cluster, Error, Host, HostOptions, HttpCall, HttpContext, SharedData,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

/// The user's (already verified) token, as jwt-identity passes it on.
const ALICE_TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlLmNvbS8iLCJzdWIiOiJhbGljZSJ9.YWxpY2Utc2lnbmF0dXJl";
/// Another token of alice's (same claims, another signature).
const ALICE_TOKEN_2: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlLmNvbS8iLCJzdWIiOiJhbGljZSJ9.c2Vjb25kLWFsaWNl";
const BOB_TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlLmNvbS8iLCJzdWIiOiJib2IifQ.Ym9iLXNpZ25hdHVyZQ";
/// `alice` at another issuer: another user.
const OTHER_ALICE_TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJodHRwczovL290aGVyLWlkcC5leGFtcGxlLmNvbS8iLCJzdWIiOiJhbGljZSJ9.b3RoZXItYWxpY2Utc2lnbmF0dXJl";
/// Host clock start, Unix seconds (a whole second, so expiry is exact).
const START: u64 = 1_700_000_000;
const OK_ANSWER: &str = r#"{"access_token":"up-1","token_type":"Bearer","expires_in":120}"#;
const JSON: [(&str, &str); 1] = [("content-type", "application/json")];

const VAULT_CALL: &str = "agentward.exchange.vault_call";
const VAULT_OK: &str = "agentward.exchange.vault_ok";
const CACHE_HIT: &str = "agentward.exchange.cache_hit";
const REFUSED: &str = "agentward.exchange.refused";
const VAULT_UNAVAILABLE: &str = "agentward.exchange.vault_unavailable";
const NO_IDENTITY: &str = "agentward.exchange.no_identity";

fn wasm() -> Option<PathBuf> {
    let dir = std::env::var_os("AGENTWARD_WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/wasm32-wasip1/release")
        });
    let wasm = dir.join("token_exchange.wasm");
    if wasm.exists() {
        return Some(wasm);
    }
    let build = "cargo build --release --target wasm32-wasip1 -p token-exchange";
    if std::env::var_os("CI").is_some() {
        panic!("{} is not built (CI is set): run `{build}`", wasm.display());
    }
    eprintln!("skipped: {} is not built; run `{build}`", wasm.display());
    None
}

/// The proof key jwt-identity keeps in shared data, in these tests.
const PROOF_KEY: [u8; 16] = *b"test-proof-key!!";

fn proof_key() -> ProofKey {
    ProofKey::from_bytes(&PROOF_KEY).unwrap()
}

/// Shared data as jwt-identity leaves it: holding the proof key.
fn shared_with_key() -> SharedData {
    let shared = SharedData::new();
    shared.set(KEY_NAME, &PROOF_KEY, 0).unwrap();
    shared
}

fn options() -> HostOptions {
    HostOptions {
        start_time: UNIX_EPOCH + Duration::from_secs(START),
        shared_data: shared_with_key(),
        ..HostOptions::default()
    }
}

/// A token's own `(iss, sub)`, as jwt-identity would have verified them.
fn identity_of(token: &str) -> Option<(String, String)> {
    let payload = token.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    Some((
        claims["iss"].as_str()?.to_string(),
        claims["sub"].as_str()?.to_string(),
    ))
}

/// The proof jwt-identity sets for `token`: over the token's own identity
/// (its `sub` and `iss`, agent `trading-bot`) and its signature.
fn proof_for(token: &str) -> Option<String> {
    let (iss, sub) = identity_of(token)?;
    Some(proof_key().prove(
        |name| match name {
            "x-agentward-sub" => Some(sub.as_str()),
            "x-agentward-issuer" => Some(iss.as_str()),
            "x-agentward-agent" => Some("trading-bot"),
            _ => None,
        },
        token,
    ))
}

fn vault(dialect: &str) -> Value {
    json!({
        "cluster": "vault",
        "token_path": "/oauth/token",
        "client_id": "gateway",
        "client_secret": "s3cr:t",
        "dialect": dialect,
        "timeout_ms": 1500,
        "expiry_margin_seconds": 30
    })
}

fn issuer(iss: &str) -> Value {
    json!({
        "issuer": iss,
        "audiences": ["https://api.example.com"],
        "jwks_uri": format!("{iss}jwks.json"),
        "jwks_cluster": "idp"
    })
}

fn policy_with(dialect: &str) -> Value {
    json!({
        "resource": "https://api.example.com",
        "issuers": [issuer("https://idp.example.com/")],
        "routes": [
            {"match": {"methods": ["GET"], "path": "/health"}},
            {
                "match": {"path_prefix": "/portfolio"},
                "exchange": {"connection": "stocktrade", "scopes": ["portfolio:read", "stocks:read"]}
            },
            {
                "match": {"methods": ["POST"], "path": "/trades"},
                "exchange": {
                    "connection": "stocktrade",
                    "audience": "https://stocks.example.com",
                    "scopes": ["trade"]
                }
            }
        ],
        "vault": vault(dialect)
    })
}

fn policy() -> Value {
    policy_with("rfc8693")
}

/// A configured plugin, or `None` (skip) when the `.wasm` is not built.
fn plugin_with(policy: &Value, options: HostOptions) -> Option<Host> {
    let host = Host::load(wasm()?, options).expect("the plugin loads");
    assert_eq!(
        host.configure(policy.to_string()),
        Ok(true),
        "{:?}",
        host.logs()
    );
    Some(host)
}

fn plugin() -> Option<Host> {
    plugin_with(&policy(), options())
}

/// Request headers as jwt-identity leaves them: `x-agentward-sub` is
/// `sub` (a spoof when it is not the token's own), issuer and proof are
/// those jwt-identity set for the token.
fn request(
    host: &Host,
    method: &str,
    path: &str,
    sub: Option<&str>,
    authorization: Option<&str>,
    end_of_stream: bool,
) -> (HttpContext, Action) {
    let req = host.http_context().expect("an HTTP context");
    let mut headers = vec![
        (":method", method),
        (":path", path),
        (":authority", "api.example.com"),
        ("x-agentward-agent", "trading-bot"),
    ];
    if let Some(sub) = sub {
        headers.push(("x-agentward-sub", sub));
    }
    if let Some(authorization) = authorization {
        headers.push(("authorization", authorization));
    }
    let token = authorization.and_then(|a| a.strip_prefix("Bearer "));
    let issuer = token.and_then(identity_of).map(|(iss, _)| iss);
    if let Some(issuer) = &issuer {
        headers.push(("x-agentward-issuer", issuer));
    }
    let proof = token.and_then(proof_for);
    if let Some(proof) = &proof {
        headers.push((PROOF, proof));
    }
    let action = req
        .request_headers(&headers, end_of_stream)
        .expect("no trap");
    (req, action)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// GET /portfolio for `sub` with `token`, no body.
fn get_portfolio(host: &Host, sub: &str, token: &str) -> (HttpContext, Action) {
    request(
        host,
        "GET",
        "/portfolio",
        Some(sub),
        Some(&bearer(token)),
        true,
    )
}

/// The only callout this request made (and it is still pending).
fn only_call(host: &Host, req: &HttpContext) -> HttpCall {
    let tokens = req.record().http_calls;
    assert_eq!(tokens.len(), 1, "one callout for this request");
    let call = host
        .http_calls()
        .into_iter()
        .find(|c| c.token == tokens[0])
        .unwrap();
    assert_eq!(call.state, CallState::Pending);
    call
}

fn metric(host: &Host, name: &str) -> u64 {
    host.metric(name).map_or(0, |m| m.value)
}

/// Cache hits, once the VM's tick has published them.
fn cache_hits(host: &Host) -> u64 {
    host.tick().unwrap();
    metric(host, CACHE_HIT)
}

fn decode_form_part(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// An `application/x-www-form-urlencoded` body as a map (no repeats allowed).
fn form(body: &[u8]) -> HashMap<String, String> {
    let text = std::str::from_utf8(body).unwrap();
    let mut map = HashMap::new();
    for pair in text.split('&') {
        let (name, value) = pair.split_once('=').expect("name=value");
        let previous = map.insert(decode_form_part(name), decode_form_part(value));
        assert!(previous.is_none(), "parameter `{name}` repeats in {text}");
    }
    map
}

/// The local answer's body as JSON, after checking it names no token.
fn local_json(req: &HttpContext, status: u32) -> Value {
    let record = req.record();
    let answer = record.local_response.clone().expect("a local answer");
    assert_eq!(answer.status, status, "{}", answer.body_text());
    assert!(!record.sent_upstream());
    let body = answer.body_text();
    assert!(
        !body.contains(ALICE_TOKEN),
        "the user's token leaked: {body}"
    );
    assert!(!body.contains("up-1"), "an upstream token leaked: {body}");
    assert_eq!(answer.headers.get("content-type"), Some("application/json"));
    serde_json::from_str(&body).expect("a JSON body")
}

fn assert_no_token_in_logs(host: &Host) {
    for entry in host.logs() {
        assert!(
            !entry.message.contains(ALICE_TOKEN) && !entry.message.contains("up-1"),
            "a token in the log: {}",
            entry.message
        );
    }
}

/// Alice's first request, answered by the vault with `up-1`.
fn exchange_for_alice(host: &Host) -> HttpContext {
    let (req, action) = get_portfolio(host, "alice", ALICE_TOKEN);
    assert_eq!(action, Action::Pause);
    let call = only_call(host, &req);
    host.answer_http_call(call.token, 200, &JSON, OK_ANSWER.as_bytes())
        .unwrap();
    assert!(req.record().sent_upstream());
    req
}

#[test]
fn route_without_connection_continues_untouched_without_a_callout() {
    let Some(host) = plugin() else { return };
    let user = bearer(ALICE_TOKEN);
    let (req, action) = request(&host, "GET", "/health", Some("alice"), Some(&user), true);
    assert_eq!(action, Action::Continue);
    let record = req.record();
    assert!(record.sent_upstream());
    assert!(record.edits.is_empty(), "{:?}", record.edits);
    assert_eq!(
        record.request_headers.get("authorization"),
        Some(user.as_str())
    );
    assert!(host.http_calls().is_empty());
    // A path no route covers is not the plugin's business either.
    let (req, action) = request(&host, "GET", "/elsewhere", None, None, true);
    assert_eq!(action, Action::Continue);
    assert!(req.record().sent_upstream());
    assert!(host.http_calls().is_empty());
    req.finish().unwrap();
    assert!(!host.is_broken());
}

#[test]
fn rfc8693_first_request_pauses_and_posts_a_token_exchange_to_the_vault() {
    let Some(host) = plugin() else { return };
    let (req, action) = get_portfolio(&host, "alice", ALICE_TOKEN);
    assert_eq!(action, Action::Pause);
    assert!(req.record().is_paused());
    assert!(!req.record().sent_upstream());
    let call = only_call(&host, &req);
    assert_eq!(call.cluster, "vault");
    assert_eq!(call.timeout, Duration::from_millis(1500));
    assert_eq!(call.header(":method"), Some("POST"));
    assert_eq!(call.header(":path"), Some("/oauth/token"));
    assert_eq!(call.header(":authority"), Some("vault"));
    assert_eq!(
        call.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    // Client authentication: HTTP Basic, each part form-encoded (RFC 6749 §2.3.1).
    let expected = format!("Basic {}", STANDARD.encode("gateway:s3cr%3At"));
    assert_eq!(call.header("authorization"), Some(expected.as_str()));
    let form = form(&call.body);
    let param = |name: &str| form.get(name).map(String::as_str);
    assert_eq!(
        param("grant_type"),
        Some("urn:ietf:params:oauth:grant-type:token-exchange")
    );
    assert_eq!(param("subject_token"), Some(ALICE_TOKEN));
    assert_eq!(
        param("subject_token_type"),
        Some("urn:ietf:params:oauth:token-type:access_token")
    );
    assert_eq!(param("resource"), Some("stocktrade"));
    assert_eq!(param("scope"), Some("portfolio:read stocks:read"));
    assert_eq!(param("audience"), None);
    assert_eq!(param("client_secret"), None);
    assert_eq!(param("client_id"), None);
    assert_eq!(metric(&host, VAULT_CALL), 1);
    assert!(!host.is_broken());
}

#[test]
fn rfc8693_exchange_names_the_route_audience() {
    let Some(host) = plugin() else { return };
    let user = bearer(ALICE_TOKEN);
    let (req, action) = request(&host, "POST", "/trades", Some("alice"), Some(&user), true);
    assert_eq!(action, Action::Pause);
    let form = form(&only_call(&host, &req).body);
    assert_eq!(
        form.get("audience").map(String::as_str),
        Some("https://stocks.example.com")
    );
    assert_eq!(form.get("scope").map(String::as_str), Some("trade"));
    assert_eq!(form.get("resource").map(String::as_str), Some("stocktrade"));
}

#[test]
fn auth0_dialect_posts_the_federated_connection_grant_with_client_credentials_in_the_form() {
    let Some(host) = plugin_with(&policy_with("auth0"), options()) else {
        return;
    };
    let (req, action) = get_portfolio(&host, "alice", ALICE_TOKEN);
    assert_eq!(action, Action::Pause);
    let call = only_call(&host, &req);
    assert_eq!(call.cluster, "vault");
    assert_eq!(call.header(":method"), Some("POST"));
    assert_eq!(call.header(":path"), Some("/oauth/token"));
    assert_eq!(call.header("authorization"), None);
    let form = form(&call.body);
    let param = |name: &str| form.get(name).map(String::as_str);
    assert_eq!(
        param("grant_type"),
        Some("urn:auth0:params:oauth:grant-type:token-exchange:federated-connection-access-token")
    );
    assert_eq!(param("connection"), Some("stocktrade"));
    assert_eq!(
        param("requested_token_type"),
        Some("http://auth0.com/oauth/token-type/federated-connection-access-token")
    );
    assert_eq!(param("subject_token"), Some(ALICE_TOKEN));
    assert_eq!(
        param("subject_token_type"),
        Some("urn:ietf:params:oauth:token-type:access_token")
    );
    assert_eq!(param("client_id"), Some("gateway"));
    assert_eq!(param("client_secret"), Some("s3cr:t"));
    assert_eq!(param("scope"), Some("portfolio:read stocks:read"));
    host.answer_http_call(call.token, 200, &JSON, OK_ANSWER.as_bytes())
        .unwrap();
    let record = req.record();
    assert!(record.sent_upstream());
    assert_eq!(
        record.request_headers.get("authorization"),
        Some("Bearer up-1")
    );
    assert!(!host.is_broken());
}

#[test]
fn vault_token_replaces_the_user_token_and_the_request_resumes() {
    let Some(host) = plugin() else { return };
    let req = exchange_for_alice(&host);
    let record = req.record();
    assert!(record.sent_upstream());
    assert!(!record.is_paused());
    assert!(record.local_response.is_none());
    assert_eq!(
        record.request_headers.get_all("authorization"),
        vec!["Bearer up-1"]
    );
    for (name, value) in record.request_headers.pairs() {
        assert!(
            !value.contains(ALICE_TOKEN),
            "the user's token goes upstream in `{name}`"
        );
    }
    // The identity headers jwt-identity set still travel.
    assert_eq!(record.request_headers.get("x-agentward-sub"), Some("alice"));
    assert_eq!(metric(&host, VAULT_CALL), 1);
    assert_eq!(metric(&host, VAULT_OK), 1);
    assert_eq!(cache_hits(&host), 0);
    req.response_headers(&[(":status", "200")], true).unwrap();
    req.finish().unwrap();
    assert_no_token_in_logs(&host);
    assert!(!host.is_broken());
}

#[test]
fn request_with_a_body_is_held_through_the_exchange_then_passes_whole() {
    let Some(host) = plugin() else { return };
    let user = bearer(ALICE_TOKEN);
    let (req, action) = request(&host, "POST", "/trades", Some("alice"), Some(&user), false);
    assert_eq!(action, Action::Pause);
    let body = br#"{"ticker":"ACME","qty":3}"#;
    assert_eq!(req.request_body(body, true), Ok(Action::Pause));
    assert!(!req.record().sent_upstream());
    let call = only_call(&host, &req);
    host.answer_http_call(call.token, 200, &JSON, OK_ANSWER.as_bytes())
        .unwrap();
    let record = req.record();
    assert!(record.sent_upstream());
    assert_eq!(record.request_body, body.to_vec());
    assert_eq!(
        record.request_headers.get("authorization"),
        Some("Bearer up-1")
    );
    assert!(!host.is_broken());
}

#[test]
fn second_request_for_the_same_user_uses_the_cached_token_without_a_callout() {
    let Some(host) = plugin() else { return };
    exchange_for_alice(&host).finish().unwrap();
    let (req, action) = get_portfolio(&host, "alice", ALICE_TOKEN);
    assert_eq!(action, Action::Continue);
    let record = req.record();
    assert!(record.sent_upstream());
    assert!(record.http_calls.is_empty());
    assert_eq!(
        record.request_headers.get_all("authorization"),
        vec!["Bearer up-1"]
    );
    assert_eq!(host.http_calls().len(), 1);
    assert_eq!(cache_hits(&host), 1);
    assert_eq!(metric(&host, VAULT_CALL), 1);
    assert!(!host.is_broken());
}

#[test]
fn another_worker_vm_sharing_shared_data_uses_the_cached_token() {
    let Some(worker1) = plugin() else { return };
    let shared = worker1.shared_data();
    exchange_for_alice(&worker1).finish().unwrap();
    let worker2 = plugin_with(
        &policy(),
        HostOptions {
            shared_data: shared,
            ..options()
        },
    )
    .unwrap();
    let (req, action) = get_portfolio(&worker2, "alice", ALICE_TOKEN);
    assert_eq!(action, Action::Continue);
    assert!(req.record().sent_upstream());
    assert_eq!(
        req.record().request_headers.get("authorization"),
        Some("Bearer up-1")
    );
    assert!(worker2.http_calls().is_empty());
    assert_eq!(cache_hits(&worker2), 1);
    assert!(!worker1.is_broken() && !worker2.is_broken());
}

#[test]
fn a_worker_vm_with_its_own_shared_data_exchanges_again() {
    // The control for the test above: without the shared store, no hit.
    let Some(worker1) = plugin() else { return };
    exchange_for_alice(&worker1).finish().unwrap();
    let worker2 = plugin().unwrap();
    let (req, action) = get_portfolio(&worker2, "alice", ALICE_TOKEN);
    assert_eq!(action, Action::Pause);
    only_call(&worker2, &req);
}

#[test]
fn a_different_user_gets_a_new_exchange_with_their_own_token() {
    let Some(host) = plugin() else { return };
    exchange_for_alice(&host).finish().unwrap();
    let (req, action) = get_portfolio(&host, "bob", BOB_TOKEN);
    assert_eq!(action, Action::Pause);
    let call = only_call(&host, &req);
    assert_eq!(
        form(&call.body).get("subject_token").map(String::as_str),
        Some(BOB_TOKEN)
    );
    host.answer_http_call(
        call.token,
        200,
        &JSON,
        br#"{"access_token":"up-bob","token_type":"Bearer","expires_in":120}"#,
    )
    .unwrap();
    assert_eq!(
        req.record().request_headers.get("authorization"),
        Some("Bearer up-bob")
    );
    // Each user keeps their own cached token.
    let (alice, _) = get_portfolio(&host, "alice", ALICE_TOKEN);
    let (bob, _) = get_portfolio(&host, "bob", BOB_TOKEN);
    assert_eq!(
        alice.record().request_headers.get("authorization"),
        Some("Bearer up-1")
    );
    assert_eq!(
        bob.record().request_headers.get("authorization"),
        Some("Bearer up-bob")
    );
    assert_eq!(metric(&host, VAULT_CALL), 2);
    assert_eq!(cache_hits(&host), 2);
}

#[test]
fn a_route_with_other_scopes_or_audience_gets_its_own_exchange() {
    let Some(host) = plugin() else { return };
    exchange_for_alice(&host).finish().unwrap();
    let user = bearer(ALICE_TOKEN);
    let (req, action) = request(&host, "POST", "/trades", Some("alice"), Some(&user), true);
    assert_eq!(action, Action::Pause, "the portfolio token is not reused");
    only_call(&host, &req);
}

#[test]
fn same_subject_from_another_issuer_is_not_served_the_first_users_cached_token() {
    // `sub` is unique only per issuer (OpenID Connect Core §2), and
    // jwt-identity says which issuer verified the token in
    // `x-agentward-issuer`.
    let mut p = policy();
    p["issuers"] = json!([
        issuer("https://idp.example.com/"),
        issuer("https://other-idp.example.com/")
    ]);
    let Some(host) = plugin_with(&p, options()) else {
        return;
    };
    let send = |iss: &str, token: &str| {
        let req = host.http_context().unwrap();
        let user = bearer(token);
        let proof = proof_key().prove(
            |name| match name {
                "x-agentward-sub" => Some("alice"),
                "x-agentward-issuer" => Some(iss),
                _ => None,
            },
            token,
        );
        let headers = [
            (":method", "GET"),
            (":path", "/portfolio"),
            (":authority", "api.example.com"),
            ("x-agentward-sub", "alice"),
            ("x-agentward-issuer", iss),
            (PROOF, proof.as_str()),
            ("authorization", user.as_str()),
        ];
        let action = req.request_headers(&headers, true).unwrap();
        (req, action)
    };
    let (first, action) = send("https://idp.example.com/", ALICE_TOKEN);
    assert_eq!(action, Action::Pause);
    let call = only_call(&host, &first);
    host.answer_http_call(call.token, 200, &JSON, OK_ANSWER.as_bytes())
        .unwrap();
    let (other, action) = send("https://other-idp.example.com/", OTHER_ALICE_TOKEN);
    assert_ne!(
        other.record().request_headers.get("authorization"),
        Some("Bearer up-1"),
        "another issuer's `alice` was given the first alice's upstream token"
    );
    assert_eq!(action, Action::Pause);
    let call = only_call(&host, &other);
    assert_eq!(
        form(&call.body).get("subject_token").map(String::as_str),
        Some(OTHER_ALICE_TOKEN)
    );
}

#[test]
fn identity_headers_that_are_not_the_tokens_own_get_401_and_no_cached_token() {
    let Some(host) = plugin() else { return };
    exchange_for_alice(&host).finish().unwrap();
    // bob's token with a spoofed `x-agentward-sub: alice`.
    let (req, _) = get_portfolio(&host, "alice", BOB_TOKEN);
    let record = req.record();
    let answer = record.local_response.as_ref().expect("a local answer");
    assert_eq!(answer.status, 401);
    assert!(!record.sent_upstream());
    assert!(host.pending_http_calls().is_empty());
    assert!(!host.is_broken());
}

#[test]
fn a_bearer_this_vm_remembers_with_identity_headers_not_its_own_gets_401() {
    let Some(host) = plugin() else { return };
    exchange_for_alice(&host).finish().unwrap();
    let (req, action) = get_portfolio(&host, "alice", ALICE_TOKEN);
    assert_eq!(action, Action::Continue, "alice's token is remembered");
    // The same bearer token, now with a spoofed `x-agentward-sub: bob`.
    let (req2, _) = get_portfolio(&host, "bob", ALICE_TOKEN);
    let record = req2.record();
    assert_eq!(record.local_response.as_ref().map(|a| a.status), Some(401));
    assert!(!record.sent_upstream());
    assert!(host.pending_http_calls().is_empty());
    assert_eq!(metric(&host, NO_IDENTITY), 1);
    drop(req);
    assert!(!host.is_broken());
}

#[test]
fn another_token_of_the_same_user_is_served_from_shared_data_then_remembered() {
    let Some(host) = plugin() else { return };
    exchange_for_alice(&host).finish().unwrap();
    for _ in 0..2 {
        let (req, action) = get_portfolio(&host, "alice", ALICE_TOKEN_2);
        assert_eq!(action, Action::Continue);
        assert_eq!(
            req.record().request_headers.get("authorization"),
            Some("Bearer up-1")
        );
    }
    assert_eq!(cache_hits(&host), 2);
    assert_eq!(metric(&host, VAULT_CALL), 1);
    let (req, _) = get_portfolio(&host, "bob", ALICE_TOKEN_2);
    assert_eq!(
        req.record().local_response.as_ref().map(|a| a.status),
        Some(401)
    );
    assert!(!host.is_broken());
}

/// The request of someone without jwt-identity in front: `x-agentward-*`
/// headers of their choosing, `proof` or none, and `token`.
fn forged_request(host: &Host, token: &str, proof: Option<&str>) -> (HttpContext, Action) {
    let user = bearer(token);
    let mut headers = vec![
        (":method", "GET"),
        (":path", "/portfolio"),
        (":authority", "api.example.com"),
        ("x-agentward-sub", "alice"),
        ("x-agentward-issuer", "https://idp.example.com/"),
        ("x-agentward-agent", "trading-bot"),
        ("authorization", user.as_str()),
    ];
    if let Some(proof) = proof {
        headers.push((PROOF, proof));
    }
    let req = host.http_context().unwrap();
    let action = req.request_headers(&headers, true).expect("no trap");
    (req, action)
}

/// Refused as unproven: 401, nothing forwarded, no upstream token anywhere.
fn assert_unproven(req: &HttpContext, action: Action) {
    assert_eq!(action, Action::Pause);
    let body = local_json(req, 401);
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(body["reason"], "identity_unproven");
    let answer = req.record().local_response.unwrap();
    assert!(answer.headers.get("www-authenticate").is_some());
    assert_ne!(
        req.record().request_headers.get("authorization"),
        Some("Bearer up-1")
    );
}

/// Issue #10, hole 3: token-exchange on its own (no jwt-identity in front),
/// an unsigned JWT that says `sub: alice`, forged identity headers, and
/// alice's upstream token in the shared cache.
#[test]
fn an_unsigned_token_with_forged_identity_headers_gets_401_not_alices_cached_token() {
    let Some(host) = plugin() else { return };
    exchange_for_alice(&host).finish().unwrap();
    let payload = URL_SAFE_NO_PAD.encode(r#"{"iss":"https://idp.example.com/","sub":"alice"}"#);
    let unsigned = format!("eyJhbGciOiJub25lIn0.{payload}.");
    let alices_proof = proof_for(ALICE_TOKEN).unwrap();
    for proof in [
        None,
        Some("AAAAAAAAAAAAAAAAAAAAAA"),
        Some(alices_proof.as_str()),
    ] {
        let (req, action) = forged_request(&host, &unsigned, proof);
        assert_unproven(&req, action);
    }
    assert_eq!(host.http_calls().len(), 1, "no vault call but alice's own");
    assert_eq!(metric(&host, NO_IDENTITY), 3);
    assert_no_token_in_logs(&host);
    assert!(!host.is_broken());
}

#[test]
fn a_proof_made_for_another_token_of_the_same_user_gets_401() {
    let Some(host) = plugin() else { return };
    exchange_for_alice(&host).finish().unwrap();
    // Alice's identity headers, exactly, with the proof of her first token.
    let proof = proof_for(ALICE_TOKEN).unwrap();
    let (req, action) = forged_request(&host, ALICE_TOKEN_2, Some(&proof));
    assert_unproven(&req, action);
    // Her second token's own proof passes (served from shared data).
    let (req, action) = forged_request(&host, ALICE_TOKEN_2, proof_for(ALICE_TOKEN_2).as_deref());
    assert_eq!(action, Action::Continue);
    assert_eq!(
        req.record().request_headers.get("authorization"),
        Some("Bearer up-1")
    );
    assert_eq!(metric(&host, VAULT_CALL), 1);
    assert!(!host.is_broken());
}

#[test]
fn a_remembered_bearer_with_a_tampered_proof_gets_401() {
    let Some(host) = plugin() else { return };
    exchange_for_alice(&host).finish().unwrap();
    let (req, action) = forged_request(&host, ALICE_TOKEN, proof_for(ALICE_TOKEN).as_deref());
    assert_eq!(action, Action::Continue, "alice's token is remembered");
    drop(req);
    let mut proof = proof_for(ALICE_TOKEN).unwrap();
    let last = if proof.ends_with('A') { "B" } else { "A" };
    proof.replace_range(proof.len() - 1.., last);
    let (req, action) = forged_request(&host, ALICE_TOKEN, Some(&proof));
    assert_unproven(&req, action);
    let (req, action) = forged_request(&host, ALICE_TOKEN, None);
    assert_unproven(&req, action);
    assert!(!host.is_broken());
}

#[test]
fn without_a_proof_key_in_shared_data_the_exchange_answers_503_naming_jwt_identity() {
    let Some(host) = plugin_with(
        &policy(),
        HostOptions {
            shared_data: SharedData::new(),
            ..options()
        },
    ) else {
        return;
    };
    let (req, action) = get_portfolio(&host, "alice", ALICE_TOKEN);
    assert_eq!(action, Action::Pause);
    let body = local_json(&req, 503);
    assert_eq!(body["reason"], "proof_key_missing");
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.contains("jwt-identity") && description.contains("vm_id"),
        "{description}"
    );
    assert!(host.http_calls().is_empty());
    // jwt-identity starts later: the key is read when it is there.
    host.shared_data().set(KEY_NAME, &PROOF_KEY, 0).unwrap();
    let (req, action) = get_portfolio(&host, "alice", ALICE_TOKEN);
    assert_eq!(action, Action::Pause);
    only_call(&host, &req);
    assert!(!host.is_broken());
}

#[test]
fn a_proof_key_replaced_in_shared_data_is_read_again_before_a_proof_is_refused() {
    // Two VMs that start at once may both write a key; the last one stays.
    let Some(host) = plugin() else { return };
    exchange_for_alice(&host).finish().unwrap();
    let newer = *b"the-other-key-!!";
    host.shared_data().set(KEY_NAME, &newer, 0).unwrap();
    let proof = ProofKey::from_bytes(&newer).unwrap().prove(
        |name| match name {
            "x-agentward-sub" => Some("alice"),
            "x-agentward-issuer" => Some("https://idp.example.com/"),
            "x-agentward-agent" => Some("trading-bot"),
            _ => None,
        },
        ALICE_TOKEN_2,
    );
    let (req, action) = forged_request(&host, ALICE_TOKEN_2, Some(&proof));
    assert_eq!(action, Action::Continue);
    assert_eq!(
        req.record().request_headers.get("authorization"),
        Some("Bearer up-1")
    );
    // A proof under the old key no longer passes.
    let (req, action) = forged_request(&host, ALICE_TOKEN_2, proof_for(ALICE_TOKEN_2).as_deref());
    assert_unproven(&req, action);
    assert!(!host.is_broken());
}

#[test]
fn cached_token_is_used_until_expires_in_minus_the_margin_then_exchanged_again() {
    let Some(host) = plugin() else { return };
    exchange_for_alice(&host).finish().unwrap();
    // expires_in 120, margin 30: usable while now + 30 < START + 120.
    host.advance(Duration::from_secs(89));
    let (req, action) = get_portfolio(&host, "alice", ALICE_TOKEN);
    assert_eq!(action, Action::Continue);
    assert_eq!(
        req.record().request_headers.get("authorization"),
        Some("Bearer up-1")
    );
    host.advance(Duration::from_secs(2));
    let (req, action) = get_portfolio(&host, "alice", ALICE_TOKEN);
    assert_eq!(
        action,
        Action::Pause,
        "a token inside the margin is not used"
    );
    let call = only_call(&host, &req);
    host.answer_http_call(
        call.token,
        200,
        &JSON,
        br#"{"access_token":"up-2","token_type":"Bearer","expires_in":120}"#,
    )
    .unwrap();
    assert_eq!(
        req.record().request_headers.get("authorization"),
        Some("Bearer up-2")
    );
    // The fresh token is cached in place of the old one.
    let (req, action) = get_portfolio(&host, "alice", ALICE_TOKEN);
    assert_eq!(action, Action::Continue);
    assert_eq!(
        req.record().request_headers.get("authorization"),
        Some("Bearer up-2")
    );
    assert_eq!(metric(&host, VAULT_CALL), 2);
    assert_eq!(metric(&host, VAULT_OK), 2);
    assert!(!host.is_broken());
}

#[test]
fn with_ticks_the_cache_is_served_against_the_ticks_clock_one_second_ahead() {
    let Some(host) = plugin() else { return };
    assert_eq!(host.tick_period(), Some(Duration::from_secs(1)));
    exchange_for_alice(&host).finish().unwrap();
    // expires_in 120, margin 30: a per-request clock serves it until START + 89.
    host.advance(Duration::from_secs(88));
    host.tick().unwrap();
    let (_, action) = get_portfolio(&host, "alice", ALICE_TOKEN);
    assert_eq!(
        action,
        Action::Continue,
        "the tick's clock + 1 is START + 89"
    );
    host.advance(Duration::from_secs(1));
    host.tick().unwrap();
    let (_, action) = get_portfolio(&host, "alice", ALICE_TOKEN);
    assert_eq!(
        action,
        Action::Pause,
        "one second early rather than late: START + 90 counts"
    );
    assert_eq!(metric(&host, VAULT_CALL), 2);
    assert_eq!(cache_hits(&host), 1);
}

#[test]
fn a_vm_whose_ticks_stop_still_sees_time_pass_within_64_hits() {
    let Some(host) = plugin() else { return };
    exchange_for_alice(&host).finish().unwrap();
    host.tick().unwrap();
    // Ticks stop; the token (expires_in 120, margin 30) is long stale.
    host.advance(Duration::from_secs(600));
    let mut served = 0;
    loop {
        let (req, action) = get_portfolio(&host, "alice", ALICE_TOKEN);
        if action == Action::Pause {
            only_call(&host, &req);
            break;
        }
        served += 1;
        assert!(served < 64, "still served after 64 hits");
    }
    assert_eq!(metric(&host, VAULT_CALL), 2);
}

#[test]
fn max_cache_seconds_bounds_a_long_lived_upstream_token() {
    let mut policy = policy();
    policy["vault"]["max_cache_seconds"] = json!(10);
    let Some(host) = plugin_with(&policy, options()) else {
        return;
    };
    exchange_for_alice(&host).finish().unwrap();
    host.advance(Duration::from_secs(9));
    let (_, action) = get_portfolio(&host, "alice", ALICE_TOKEN);
    assert_eq!(action, Action::Continue);
    host.advance(Duration::from_secs(1));
    let (_, action) = get_portfolio(&host, "alice", ALICE_TOKEN);
    assert_eq!(action, Action::Pause, "asked the vault again after 10 s");
    assert_eq!(metric(&host, VAULT_CALL), 2);
}

#[test]
fn token_without_expires_in_is_used_and_cached() {
    let Some(host) = plugin() else { return };
    let (req, _) = get_portfolio(&host, "alice", ALICE_TOKEN);
    let call = only_call(&host, &req);
    host.answer_http_call(call.token, 200, &JSON, br#"{"access_token":"up-1"}"#)
        .unwrap();
    assert!(req.record().sent_upstream());
    let (req, action) = get_portfolio(&host, "alice", ALICE_TOKEN);
    assert_eq!(action, Action::Continue);
    assert_eq!(
        req.record().request_headers.get("authorization"),
        Some("Bearer up-1")
    );
}

#[test]
fn missing_account_link_answers_403_with_the_connect_url_and_never_the_user_token() {
    let Some(host) = plugin() else { return };
    let (req, _) = get_portfolio(&host, "alice", ALICE_TOKEN);
    let call = only_call(&host, &req);
    let answer = json!({
        "error": "federated_connection_refresh_token_not_found",
        "error_description": "alice has not linked stocktrade; open connect_url",
        "connect_url": "http://vault/connect/stocktrade?ticket=abc"
    });
    host.answer_http_call(call.token, 400, &JSON, answer.to_string().as_bytes())
        .unwrap();
    let body = local_json(&req, 403);
    assert_eq!(
        body["error"],
        "federated_connection_refresh_token_not_found"
    );
    assert_eq!(
        body["connect_url"],
        "http://vault/connect/stocktrade?ticket=abc"
    );
    assert_eq!(body["connection"], "stocktrade");
    assert!(body["error_description"].is_string());
    assert_eq!(metric(&host, REFUSED), 1);
    // Nothing is cached: the next request asks the vault again.
    let (req, action) = get_portfolio(&host, "alice", ALICE_TOKEN);
    assert_eq!(action, Action::Pause);
    only_call(&host, &req);
    assert_no_token_in_logs(&host);
    assert!(!host.is_broken());
}

#[test]
fn vault_timeout_or_reset_answers_503_temporarily_unavailable() {
    let Some(host) = plugin() else { return };
    let (req, _) = get_portfolio(&host, "alice", ALICE_TOKEN);
    let call = only_call(&host, &req);
    host.fail_http_call(call.token).unwrap();
    let body = local_json(&req, 503);
    assert_eq!(body["error"], "temporarily_unavailable");
    let answer = req.record().local_response.unwrap();
    assert!(answer.headers.get("retry-after").is_some());
    assert_eq!(metric(&host, VAULT_UNAVAILABLE), 1);
    assert_eq!(metric(&host, VAULT_OK), 0);
    // A failure is not cached: the next request tries the vault again.
    let (req, action) = get_portfolio(&host, "alice", ALICE_TOKEN);
    assert_eq!(action, Action::Pause);
    only_call(&host, &req);
    assert_no_token_in_logs(&host);
    assert!(!host.is_broken());
}

#[test]
fn vault_server_errors_answer_503() {
    let Some(host) = plugin() else { return };
    for (status, body) in [
        (
            500,
            &br#"{"error":"server_error","error_description":"internal"}"#[..],
        ),
        (502, br#"{"error":"server_error"}"#),
        (503, br#"{"error":"temporarily_unavailable"}"#),
        (500, b"<html>oops</html>"),
    ] {
        let (req, _) = get_portfolio(&host, "alice", ALICE_TOKEN);
        let call = only_call(&host, &req);
        host.answer_http_call(call.token, status, &JSON, body)
            .unwrap();
        let answer = local_json(&req, 503);
        assert_eq!(answer["error"], "temporarily_unavailable", "vault {status}");
    }
    assert_eq!(metric(&host, VAULT_UNAVAILABLE), 4);
    assert!(host.logged("vault status 500"));
    assert_no_token_in_logs(&host);
    assert!(!host.is_broken());
}

#[test]
fn vault_refusing_the_gateway_credentials_answers_502() {
    let Some(host) = plugin() else { return };
    let (req, _) = get_portfolio(&host, "alice", ALICE_TOKEN);
    let call = only_call(&host, &req);
    host.answer_http_call(
        call.token,
        401,
        &[
            ("content-type", "application/json"),
            ("www-authenticate", "Basic realm=\"vault\""),
        ],
        br#"{"error":"invalid_client","error_description":"wrong client secret"}"#,
    )
    .unwrap();
    let body = local_json(&req, 502);
    assert_eq!(body["error"], "server_error");
    let answer = req.record().local_response.unwrap();
    assert_eq!(answer.headers.get("www-authenticate"), None);
    assert_eq!(metric(&host, REFUSED), 1);
    assert!(!host.is_broken());
}

#[test]
fn vault_200_with_an_unusable_body_answers_503() {
    let Some(host) = plugin() else { return };
    for body in [
        &b"not json at all"[..],
        b"",
        br#"{"token_type":"Bearer","expires_in":120}"#,
        br#"{"access_token":"","token_type":"Bearer"}"#,
        br#"{"access_token":"up-1","token_type":"MAC"}"#,
        br#"{"access_token":"up-1\r\nx-injected: 1","token_type":"Bearer"}"#,
    ] {
        let (req, _) = get_portfolio(&host, "alice", ALICE_TOKEN);
        let call = only_call(&host, &req);
        host.answer_http_call(call.token, 200, &JSON, body).unwrap();
        let answer = local_json(&req, 503);
        assert_eq!(
            answer["error"],
            "temporarily_unavailable",
            "{}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(req.record().request_headers.get("x-injected"), None);
    }
    assert_eq!(metric(&host, VAULT_OK), 0);
    assert!(!host.is_broken());
}

#[test]
fn unknown_vault_cluster_answers_503_at_once() {
    let mut opts = options();
    opts.clusters.insert("idp".into(), Cluster::Manual);
    let Some(host) = plugin_with(&policy(), opts) else {
        return;
    };
    let (req, action) = get_portfolio(&host, "alice", ALICE_TOKEN);
    assert_eq!(action, Action::Pause);
    assert!(host.pending_http_calls().is_empty());
    let body = local_json(&req, 503);
    assert_eq!(body["error"], "temporarily_unavailable");
    assert_eq!(metric(&host, VAULT_UNAVAILABLE), 1);
    assert_eq!(metric(&host, VAULT_CALL), 0);
    assert!(host.logged("vault"));
    assert!(!host.is_broken());
}

#[test]
fn known_vault_cluster_is_called() {
    // The control for the test above: the same host with `vault` declared.
    let mut opts = options();
    opts.clusters.insert("idp".into(), Cluster::Manual);
    opts.clusters.insert("vault".into(), Cluster::Manual);
    let Some(host) = plugin_with(&policy(), opts) else {
        return;
    };
    let (req, action) = get_portfolio(&host, "alice", ALICE_TOKEN);
    assert_eq!(action, Action::Pause);
    only_call(&host, &req);
}

#[test]
fn missing_subject_header_on_a_connection_route_answers_401_with_www_authenticate() {
    let Some(host) = plugin() else { return };
    let user = bearer(ALICE_TOKEN);
    let (req, action) = request(&host, "GET", "/portfolio", None, Some(&user), true);
    assert_eq!(action, Action::Pause);
    local_json(&req, 401);
    let answer = req.record().local_response.unwrap();
    let challenge = answer.headers.get("www-authenticate").unwrap();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(host.http_calls().is_empty());
    assert_eq!(metric(&host, NO_IDENTITY), 1);
    assert!(!host.is_broken());
}

#[test]
fn missing_bearer_on_a_connection_route_answers_401_with_www_authenticate() {
    let Some(host) = plugin() else { return };
    for authorization in [None, Some("Basic Z2F0ZXdheTpz"), Some("Bearer "), Some("")] {
        let (req, action) = request(
            &host,
            "GET",
            "/portfolio",
            Some("alice"),
            authorization,
            true,
        );
        assert_eq!(action, Action::Pause, "{authorization:?}");
        local_json(&req, 401);
        let answer = req.record().local_response.unwrap();
        assert!(answer.headers.get("www-authenticate").is_some());
    }
    assert!(host.http_calls().is_empty());
    assert_eq!(metric(&host, NO_IDENTITY), 4);
    assert!(!host.is_broken());
}

#[test]
fn client_leaving_while_the_exchange_is_pending_does_not_trap() {
    let Some(host) = plugin() else { return };
    let (req, _) = get_portfolio(&host, "alice", ALICE_TOKEN);
    let call = only_call(&host, &req);
    req.finish().unwrap();
    // Envoy cancels a finished stream's callouts: the late answer is not
    // delivered to the gone context.
    let state = |token| host.http_calls()[token as usize - 1].state;
    assert_eq!(state(call.token), CallState::Cancelled);
    let late = host.answer_http_call(call.token, 200, &JSON, OK_ANSWER.as_bytes());
    assert!(
        matches!(late, Err(Error::UnknownCall(_) | Error::StreamEnded(_))),
        "{late:?}"
    );
    assert!(!host.is_broken(), "{:?}", host.trap_message());
    // The plugin keeps serving: the next request exchanges afresh.
    let (req, action) = get_portfolio(&host, "alice", ALICE_TOKEN);
    assert_eq!(action, Action::Pause);
    let call = only_call(&host, &req);
    host.answer_http_call(call.token, 200, &JSON, OK_ANSWER.as_bytes())
        .unwrap();
    assert!(req.record().sent_upstream());
    assert!(!host.is_broken());
}

#[test]
fn client_leaving_while_the_exchange_fails_does_not_trap() {
    let Some(host) = plugin() else { return };
    let (req, _) = get_portfolio(&host, "alice", ALICE_TOKEN);
    let call = only_call(&host, &req);
    req.finish().unwrap();
    assert_eq!(
        host.http_calls()[call.token as usize - 1].state,
        CallState::Cancelled
    );
    let late = host.fail_http_call(call.token);
    assert!(
        matches!(late, Err(Error::UnknownCall(_) | Error::StreamEnded(_))),
        "{late:?}"
    );
    assert!(!host.is_broken(), "{:?}", host.trap_message());
}

#[test]
fn concurrent_requests_each_resume_with_their_own_answer() {
    let Some(host) = plugin() else { return };
    let (alice, _) = get_portfolio(&host, "alice", ALICE_TOKEN);
    let (bob, _) = get_portfolio(&host, "bob", BOB_TOKEN);
    let alice_call = only_call(&host, &alice);
    let bob_call = only_call(&host, &bob);
    // Answers arrive in the other order.
    host.answer_http_call(
        bob_call.token,
        200,
        &JSON,
        br#"{"access_token":"up-bob","token_type":"Bearer","expires_in":120}"#,
    )
    .unwrap();
    assert!(!alice.record().sent_upstream());
    host.answer_http_call(alice_call.token, 200, &JSON, OK_ANSWER.as_bytes())
        .unwrap();
    assert_eq!(
        alice.record().request_headers.get("authorization"),
        Some("Bearer up-1")
    );
    assert_eq!(
        bob.record().request_headers.get("authorization"),
        Some("Bearer up-bob")
    );
    assert!(alice.record().sent_upstream() && bob.record().sent_upstream());
    assert!(!host.is_broken());
}

#[test]
fn policy_without_vault_is_refused_naming_vault() {
    let Some(path) = wasm() else { return };
    let host = Host::load(path, options()).unwrap();
    let mut p = policy();
    p.as_object_mut().unwrap().remove("vault");
    for route in p["routes"].as_array_mut().unwrap() {
        route.as_object_mut().unwrap().remove("exchange");
    }
    assert_eq!(host.configure(p.to_string()), Ok(false));
    assert!(host.logged("`vault`"), "{:?}", host.logs());
    // Refusing the configuration fails closed.
    assert!(matches!(host.http_context(), Err(Error::NotConfigured)));
    assert!(!host.is_broken());
}

#[test]
fn route_with_an_exchange_but_no_vault_is_refused_naming_the_route() {
    let Some(path) = wasm() else { return };
    let host = Host::load(path, options()).unwrap();
    let mut p = policy();
    p.as_object_mut().unwrap().remove("vault");
    p["routes"] =
        json!([{"match": {"path": "/portfolio"}, "exchange": {"connection": "stocktrade"}}]);
    assert_eq!(host.configure(p.to_string()), Ok(false));
    assert!(
        host.logged("routes[0].exchange.connection"),
        "{:?}",
        host.logs()
    );
    assert!(!host.is_broken());
}

#[test]
fn policy_that_does_not_parse_is_refused() {
    let Some(path) = wasm() else { return };
    let host = Host::load(path, options()).unwrap();
    assert_eq!(host.configure("not json"), Ok(false));
    let mut p = policy();
    p["vault"]["client_secrett"] = json!("typo");
    assert_eq!(host.configure(p.to_string()), Ok(false));
    assert!(host.logged("client_secrett"), "{:?}", host.logs());
    assert!(!host.is_broken());
}

/// `cargo xtask build` unexports the callbacks the plugin does not
/// implement, so Envoy does not call into the VM for them.
#[test]
fn the_built_module_exports_only_the_callbacks_it_implements() {
    let Some(host) = plugin() else { return };
    let callbacks = host.callbacks();
    if callbacks.iter().any(|c| c == "proxy_on_log") && std::env::var_os("CI").is_none() {
        eprintln!("skipped: built with plain cargo, not `cargo xtask build`");
        return;
    }
    assert_eq!(
        callbacks,
        [
            "proxy_on_configure",
            "proxy_on_context_create",
            "proxy_on_delete",
            "proxy_on_http_call_response",
            "proxy_on_memory_allocate",
            "proxy_on_request_headers",
            "proxy_on_tick",
            "proxy_on_vm_start",
        ]
    );
}

// ================================================================ routing: the path and HEAD

#[test]
fn a_path_not_in_normal_form_is_refused_instead_of_skipping_the_exchange() {
    let Some(host) = plugin() else { return };
    let user = bearer(ALICE_TOKEN);
    for path in [
        "//trades",
        "/%74rades",
        "/x/../trades",
        "/trades%2Fx",
        "/trades\\x",
    ] {
        let (req, action) = request(&host, "POST", path, Some("alice"), Some(&user), true);
        assert_eq!(action, Action::Pause, "{path}");
        let body = local_json(&req, 400);
        assert_eq!(body["error"], "invalid_request", "{path}");
        assert_eq!(body["reason"], "invalid_path", "{path}");
    }
    assert!(host.http_calls().is_empty());
    assert!(!host.is_broken());
}

#[test]
fn head_on_a_get_connection_route_is_exchanged_as_get_is() {
    let mut p = policy();
    p["routes"][1]["match"]["methods"] = json!(["GET"]);
    let Some(host) = plugin_with(&p, options()) else {
        return;
    };
    let user = bearer(ALICE_TOKEN);
    let (req, action) = request(
        &host,
        "HEAD",
        "/portfolio",
        Some("alice"),
        Some(&user),
        true,
    );
    assert_eq!(
        action,
        Action::Pause,
        "HEAD must not reach the upstream with the user's token"
    );
    only_call(&host, &req);
    assert!(!host.is_broken());
}

// ================================================================ a host in trouble

/// A status the SDK's hostcall wrappers do not expect from any of these calls.
const UNEXPECTED: host_test::Status = host_test::Status::InternalFailure;

#[test]
fn shared_data_the_host_cannot_read_or_write_is_a_miss_and_the_vm_serves_on() {
    let Some(host) = plugin() else { return };
    host.fail_hostcall("proxy_get_shared_data", UNEXPECTED);
    host.fail_hostcall("proxy_set_shared_data", UNEXPECTED);
    let req = exchange_for_alice(&host);
    assert_eq!(
        req.record().request_headers.get("authorization"),
        Some("Bearer up-1")
    );
    assert!(!host.is_broken(), "{:?}", host.trap_message());
    host.restore_hostcall("proxy_get_shared_data");
    host.restore_hostcall("proxy_set_shared_data");
    let (next, action) = get_portfolio(&host, "bob", BOB_TOKEN);
    assert_eq!(action, Action::Pause);
    assert_eq!(only_call(&host, &next).cluster, "vault");
    assert!(!host.is_broken());
}

#[test]
fn a_clock_the_host_cannot_read_answers_503_and_the_next_request_is_served() {
    let Some(host) = plugin() else { return };
    host.fail_hostcall("proxy_get_current_time_nanoseconds", UNEXPECTED);
    let (req, action) = get_portfolio(&host, "alice", ALICE_TOKEN);
    assert_eq!(action, Action::Pause);
    let body = local_json(&req, 503);
    assert_eq!(body["error"], "temporarily_unavailable");
    assert_eq!(body["reason"], "clock_unavailable");
    assert!(host.pending_http_calls().is_empty());
    assert!(!host.is_broken(), "{:?}", host.trap_message());
    host.restore_hostcall("proxy_get_current_time_nanoseconds");
    exchange_for_alice(&host);
    assert!(!host.is_broken());
}

#[test]
fn a_vault_answer_the_host_cannot_read_answers_503_and_the_vm_serves_on() {
    let Some(host) = plugin() else { return };
    let (req, _) = get_portfolio(&host, "alice", ALICE_TOKEN);
    let call = only_call(&host, &req);
    host.fail_hostcall("proxy_get_header_map_value", UNEXPECTED);
    host.fail_hostcall("proxy_get_buffer_bytes", UNEXPECTED);
    host.answer_http_call(call.token, 200, &JSON, OK_ANSWER.as_bytes())
        .unwrap();
    assert_eq!(local_json(&req, 503)["error"], "temporarily_unavailable");
    assert!(!host.is_broken(), "{:?}", host.trap_message());
    host.restore_hostcall("proxy_get_header_map_value");
    host.restore_hostcall("proxy_get_buffer_bytes");
    exchange_for_alice(&host);
}

#[test]
fn a_host_refusing_metrics_still_exchanges() {
    let Some(wasm) = wasm() else { return };
    let host = Host::load(wasm, options()).unwrap();
    host.fail_hostcall("proxy_define_metric", UNEXPECTED);
    host.fail_hostcall("proxy_increment_metric", UNEXPECTED);
    host.fail_hostcall("proxy_set_tick_period_milliseconds", UNEXPECTED);
    assert_eq!(host.configure(policy().to_string()), Ok(true));
    exchange_for_alice(&host);
    assert!(!host.is_broken(), "{:?}", host.trap_message());
}

#[test]
fn an_oversized_vault_answer_is_not_read_and_answers_503() {
    let Some(host) = plugin() else { return };
    let (req, _) = get_portfolio(&host, "alice", ALICE_TOKEN);
    let call = only_call(&host, &req);
    let pad = "x".repeat(64 * 1024);
    let body = format!(
        r#"{{"access_token":"up-1","token_type":"Bearer","expires_in":120,"pad":"{pad}"}}"#
    );
    host.answer_http_call(call.token, 200, &JSON, body.as_bytes())
        .unwrap();
    assert_eq!(local_json(&req, 503)["error"], "temporarily_unavailable");
    assert_eq!(metric(&host, VAULT_OK), 0);
    assert_eq!(metric(&host, VAULT_UNAVAILABLE), 1);
    assert!(host.logged("limit"), "{:?}", host.logs());
    // An answer just under the limit is read.
    let (req, _) = get_portfolio(&host, "alice", ALICE_TOKEN);
    let call = only_call(&host, &req);
    let pad = "x".repeat(60 * 1024);
    let body = format!(
        r#"{{"access_token":"up-1","token_type":"Bearer","expires_in":120,"pad":"{pad}"}}"#
    );
    host.answer_http_call(call.token, 200, &JSON, body.as_bytes())
        .unwrap();
    assert!(req.record().sent_upstream());
    assert!(!host.is_broken());
}

// ================================================================ the client secret

fn policy_with_secret_env(name: &str) -> Value {
    let mut p = policy();
    let vault = p["vault"].as_object_mut().unwrap();
    vault.remove("client_secret");
    vault.insert("client_secret_env".into(), json!(name));
    p
}

#[test]
fn client_secret_env_reads_the_secret_from_the_vm_environment() {
    let mut opts = options();
    opts.environment
        .insert("AGENTWARD_VAULT_SECRET".into(), "env:s3cret".into());
    let Some(host) = plugin_with(&policy_with_secret_env("AGENTWARD_VAULT_SECRET"), opts) else {
        return;
    };
    let (req, _) = get_portfolio(&host, "alice", ALICE_TOKEN);
    let call = only_call(&host, &req);
    let expected = format!("Basic {}", STANDARD.encode("gateway:env%3As3cret"));
    assert_eq!(call.header("authorization"), Some(expected.as_str()));
    assert!(!host.is_broken());
}

#[test]
fn client_secret_env_missing_from_the_environment_refuses_to_start_naming_the_field() {
    let Some(wasm) = wasm() else { return };
    let host = Host::load(wasm, options()).unwrap();
    let p = policy_with_secret_env("AGENTWARD_VAULT_SECRET");
    assert_eq!(host.configure(p.to_string()), Ok(false));
    assert!(
        host.logged("vault.client_secret_env") && host.logged("AGENTWARD_VAULT_SECRET"),
        "{:?}",
        host.logs()
    );
    assert!(!host.is_broken());
}

#[test]
fn both_or_neither_secret_source_refuses_to_start() {
    let Some(wasm) = wasm() else { return };
    let mut both = policy();
    both["vault"]["client_secret_env"] = json!("AGENTWARD_VAULT_SECRET");
    let mut neither = policy();
    neither["vault"]
        .as_object_mut()
        .unwrap()
        .remove("client_secret");
    for p in [both, neither] {
        let host = Host::load(&wasm, options()).unwrap();
        assert_eq!(host.configure(p.to_string()), Ok(false));
        assert!(host.logged("vault.client_secret_env"), "{:?}", host.logs());
        assert!(!host.logs().iter().any(|l| l.message.contains("s3cr:t")));
    }
}
