//! token-exchange's decisions, natively: the host-test scenarios of
//! `plugins/token-exchange/tests/scenarios.rs` without a host. The identity
//! headers and proofs are jwt-identity's (under a key the tests hold, kept
//! in the shared cache as jwt-identity keeps it), the vault's answers are
//! fed back by hand.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agentward_core::exchange::{Decision, Exchanger, Pending, RequestHead, Verdict};
use agentward_core::identity::ReceivedIdentity;
use agentward_core::proof::{ProofKey, KEY_NAME, PROOF};
use agentward_core::response::LocalResponse;
use agentward_core::shared_cache::{MemoryCache, SharedCache};
use agentward_core::step::{Answer, Callout, Step};
use agentward_core::Policy;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::HashMap;

const ALICE_TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlLmNvbS8iLCJzdWIiOiJhbGljZSJ9.YWxpY2Utc2lnbmF0dXJl";
const ALICE_TOKEN_2: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlLmNvbS8iLCJzdWIiOiJhbGljZSJ9.c2Vjb25kLWFsaWNl";
const BOB_TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlLmNvbS8iLCJzdWIiOiJib2IifQ.Ym9iLXNpZ25hdHVyZQ";
const OTHER_ALICE_TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJodHRwczovL290aGVyLWlkcC5leGFtcGxlLmNvbS8iLCJzdWIiOiJhbGljZSJ9.b3RoZXItYWxpY2Utc2lnbmF0dXJl";
const ISS: &str = "https://idp.example.com/";
const START: u64 = 1_700_000_000;
const OK_ANSWER: &str = r#"{"access_token":"up-1","token_type":"Bearer","expires_in":120}"#;
const PROOF_KEY: [u8; 16] = *b"test-proof-key!!";

fn key() -> ProofKey {
    ProofKey::from_bytes(&PROOF_KEY).unwrap()
}

/// The shared cache as jwt-identity leaves it: holding the proof key.
fn shared() -> MemoryCache {
    let mut cache = MemoryCache::new();
    cache.set(KEY_NAME, &PROOF_KEY);
    cache
}

fn issuer(iss: &str) -> Value {
    json!({"issuer": iss, "audiences": ["https://api.example.com"],
           "jwks_uri": format!("{iss}jwks.json"), "jwks_cluster": "idp"})
}

fn policy_json(dialect: &str) -> Value {
    json!({
        "resource": "https://api.example.com",
        "issuers": [issuer(ISS), issuer("https://other-idp.example.com/")],
        "routes": [
            {"match": {"methods": ["GET"], "path": "/health"}},
            {"match": {"path_prefix": "/portfolio", "methods": ["GET"]},
             "exchange": {"connection": "stocktrade", "scopes": ["portfolio:read", "stocks:read"]}},
            {"match": {"methods": ["POST"], "path": "/trades"},
             "exchange": {"connection": "stocktrade", "audience": "https://stocks.example.com",
                          "scopes": ["trade"]}}
        ],
        "vault": {"cluster": "vault", "token_path": "/oauth/token", "client_id": "gateway",
                  "client_secret": "s3cr:t", "dialect": dialect, "timeout_ms": 1500,
                  "expiry_margin_seconds": 30}
    })
}

fn exchanger_for(policy: &Value) -> Exchanger {
    let policy = Policy::parse(policy.to_string().as_bytes()).unwrap();
    Exchanger::new(policy, |_| None).unwrap()
}

fn exchanger() -> Exchanger {
    exchanger_for(&policy_json("rfc8693"))
}

/// A token's own `(iss, sub)`, as jwt-identity verified them.
fn identity_of(token: &str) -> Option<(String, String)> {
    let payload = token.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    Some((
        claims["iss"].as_str()?.to_string(),
        claims["sub"].as_str()?.to_string(),
    ))
}

/// A request as it reaches token-exchange: headers by name.
#[derive(Clone)]
struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

impl Request {
    /// What jwt-identity leaves for `token` (`sub` claimed as given: a
    /// spoof when it is not the token's own), with the proof it sets for
    /// the token's own identity under `key`.
    fn new(method: &str, path: &str, sub: Option<&str>, token: Option<&str>) -> Request {
        Request::with_key(method, path, sub, token, &key())
    }

    fn with_key(
        method: &str,
        path: &str,
        sub: Option<&str>,
        token: Option<&str>,
        key: &ProofKey,
    ) -> Request {
        let mut r = Request {
            method: method.into(),
            path: path.into(),
            headers: HashMap::new(),
        };
        r.set("x-agentward-agent", Some("trading-bot"));
        r.set("x-agentward-sub", sub);
        if let Some(token) = token {
            r.set("authorization", Some(&format!("Bearer {token}")));
            if let Some((iss, own_sub)) = identity_of(token) {
                r.set("x-agentward-issuer", Some(&iss));
                let proof = key.prove(
                    |n| match n {
                        "x-agentward-sub" => Some(own_sub.as_str()),
                        "x-agentward-issuer" => Some(iss.as_str()),
                        "x-agentward-agent" => Some("trading-bot"),
                        _ => None,
                    },
                    token,
                );
                r.set(PROOF, Some(&proof));
            }
        }
        r
    }

    fn portfolio(sub: &str, token: &str) -> Request {
        Request::new("GET", "/portfolio", Some(sub), Some(token))
    }

    fn set(&mut self, name: &str, value: Option<&str>) -> &mut Request {
        match value {
            Some(v) => self.headers.insert(name.into(), v.into()),
            None => self.headers.remove(name),
        };
        self
    }

    fn head(&self) -> RequestHead<'_> {
        let get = |n: &str| self.headers.get(n).map(String::as_str);
        RequestHead {
            method: &self.method,
            path: &self.path,
            authorization: get("authorization"),
            identity: ReceivedIdentity::from_headers(get),
        }
    }
}

/// A gateway instance: its exchanger, the shared cache and the host's clock.
struct Gateway {
    ex: Exchanger,
    cache: MemoryCache,
    now: u64,
}

impl Gateway {
    fn new() -> Gateway {
        Gateway::with(exchanger(), shared())
    }

    fn with(ex: Exchanger, cache: MemoryCache) -> Gateway {
        Gateway {
            ex,
            cache,
            now: START,
        }
    }

    fn decide(&mut self, r: &Request) -> Decision {
        let now = self.now;
        self.ex.decide(&r.head(), || Some(now), &mut self.cache)
    }

    fn answer(&mut self, d: Decision, answer: Answer) -> Decision {
        let pending = d.pending.expect("a pending exchange");
        self.ex
            .on_answer(pending, answer, Some(self.now), &mut self.cache)
    }

    /// Feeds the vault's answer `status`, `body` to the call `d` asked for.
    fn vault(&mut self, d: Decision, status: u16, body: &str) -> Decision {
        self.answer(d, response(status, body))
    }

    /// Alice's first request, answered by the vault with `up-1`.
    fn exchange_for_alice(&mut self) {
        let d = self.decide(&Request::portfolio("alice", ALICE_TOKEN));
        call(&d);
        let d = self.vault(d, 200, OK_ANSWER);
        assert_eq!(d.verdict, Verdict::VaultOk);
        assert_eq!(upstream(&d), "Bearer up-1");
    }
}

fn response(status: u16, body: &str) -> Answer {
    Answer::Response {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.as_bytes().to_vec(),
    }
}

/// The call a decision asks for (the test fails otherwise).
fn call(d: &Decision) -> &Callout {
    assert_eq!(d.verdict, Verdict::VaultCall, "{d:?}");
    assert!(d.pending.is_some());
    match &d.step {
        Step::Call(c) => c,
        other => panic!("no call: {other:?}"),
    }
}

/// The `Authorization` a decision sends upstream (the test fails otherwise).
fn upstream(d: &Decision) -> &str {
    let Step::Continue(edits) = &d.step else {
        panic!("not forwarded: {d:?}")
    };
    assert!(edits.remove.is_empty() && edits.set_one.is_none());
    assert_eq!(edits.set.len(), 1);
    let (name, value) = &edits.set[0];
    assert_eq!(name, "authorization");
    value
}

/// The local answer's JSON, after checking it names no token.
fn refused(d: &Decision, status: u32) -> Value {
    let Step::Respond(answer) = &d.step else {
        panic!("not answered: {d:?}")
    };
    assert_eq!(answer.status, status, "{}", answer.body);
    assert!(d.pending.is_none());
    for token in [ALICE_TOKEN, "up-1"] {
        assert!(
            !answer.body.contains(token),
            "a token leaked: {}",
            answer.body
        );
    }
    assert_eq!(header(answer, "content-type"), Some("application/json"));
    serde_json::from_str(&answer.body).unwrap()
}

fn header<'a>(answer: &'a LocalResponse, name: &str) -> Option<&'a str> {
    answer
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// An `application/x-www-form-urlencoded` body as a map.
fn form(body: &[u8]) -> HashMap<String, String> {
    let decode = |s: &str| {
        let mut out = Vec::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    };
    let text = std::str::from_utf8(body).unwrap();
    let mut map = HashMap::new();
    for pair in text.split('&') {
        let (n, v) = pair.split_once('=').unwrap();
        assert!(map.insert(decode(n), decode(v)).is_none(), "{n} repeats");
    }
    map
}

// ================================================================ what is exchanged, and how

#[test]
fn a_route_without_connection_or_no_route_is_not_exchanged() {
    let mut g = Gateway::new();
    for r in [
        Request::new("GET", "/health", Some("alice"), Some(ALICE_TOKEN)),
        Request::new("GET", "/elsewhere", None, None),
        Request::new("DELETE", "/portfolio", Some("alice"), Some(ALICE_TOKEN)),
    ] {
        let d = g.decide(&r);
        assert_eq!(d.verdict, Verdict::NotExchanged);
        let Step::Continue(edits) = d.step else {
            panic!()
        };
        assert!(edits.is_empty());
    }
}

#[test]
fn rfc8693_first_request_posts_a_token_exchange_to_the_vault() {
    let mut g = Gateway::new();
    let d = g.decide(&Request::portfolio("alice", ALICE_TOKEN));
    let c = call(&d);
    assert_eq!(
        (c.cluster.as_str(), c.method, c.path.as_str()),
        ("vault", "POST", "/oauth/token")
    );
    assert_eq!(c.authority, "vault");
    assert_eq!(c.timeout_ms, 1500);
    assert_eq!(c.max_answer_bytes, 64 * 1024);
    let h = |name: &str| {
        c.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(h("content-type"), Some("application/x-www-form-urlencoded"));
    let basic = format!("Basic {}", STANDARD.encode("gateway:s3cr%3At"));
    assert_eq!(h("authorization"), Some(basic.as_str()));
    let f = form(&c.body);
    let p = |n: &str| f.get(n).map(String::as_str);
    assert_eq!(
        p("grant_type"),
        Some("urn:ietf:params:oauth:grant-type:token-exchange")
    );
    assert_eq!(p("subject_token"), Some(ALICE_TOKEN));
    assert_eq!(
        p("subject_token_type"),
        Some("urn:ietf:params:oauth:token-type:access_token")
    );
    assert_eq!(p("resource"), Some("stocktrade"));
    assert_eq!(p("scope"), Some("portfolio:read stocks:read"));
    assert_eq!(
        (p("audience"), p("client_secret"), p("client_id")),
        (None, None, None)
    );
}

#[test]
fn rfc8693_exchange_names_the_route_audience() {
    let mut g = Gateway::new();
    let d = g.decide(&Request::new(
        "POST",
        "/trades",
        Some("alice"),
        Some(ALICE_TOKEN),
    ));
    let f = form(&call(&d).body);
    assert_eq!(f["audience"], "https://stocks.example.com");
    assert_eq!(f["scope"], "trade");
    assert_eq!(f["resource"], "stocktrade");
}

#[test]
fn auth0_dialect_posts_the_federated_connection_grant_with_client_credentials_in_the_form() {
    let mut g = Gateway::with(exchanger_for(&policy_json("auth0")), shared());
    let d = g.decide(&Request::portfolio("alice", ALICE_TOKEN));
    let c = call(&d);
    assert!(c.headers.iter().all(|(n, _)| n != "authorization"));
    let f = form(&c.body);
    assert_eq!(
        f["grant_type"],
        "urn:auth0:params:oauth:grant-type:token-exchange:federated-connection-access-token"
    );
    assert_eq!(f["connection"], "stocktrade");
    assert_eq!(
        f["requested_token_type"],
        "http://auth0.com/oauth/token-type/federated-connection-access-token"
    );
    assert_eq!(f["subject_token"], ALICE_TOKEN);
    assert_eq!(
        (f["client_id"].as_str(), f["client_secret"].as_str()),
        ("gateway", "s3cr:t")
    );
    let d = g.vault(d, 200, OK_ANSWER);
    assert_eq!(upstream(&d), "Bearer up-1");
}

#[test]
fn head_on_a_get_connection_route_is_exchanged_as_get_is() {
    let mut g = Gateway::new();
    call(&g.decide(&Request::new(
        "HEAD",
        "/portfolio",
        Some("alice"),
        Some(ALICE_TOKEN),
    )));
}

#[test]
fn a_path_not_in_normal_form_is_refused_instead_of_skipping_the_exchange() {
    let mut g = Gateway::new();
    for path in [
        "//trades",
        "/%74rades",
        "/x/../trades",
        "/trades%2Fx",
        "/trades\\x",
    ] {
        let d = g.decide(&Request::new(
            "POST",
            path,
            Some("alice"),
            Some(ALICE_TOKEN),
        ));
        assert_eq!(d.verdict, Verdict::InvalidPath, "{path}");
        let body = refused(&d, 400);
        assert_eq!(
            (body["error"].as_str(), body["reason"].as_str()),
            (Some("invalid_request"), Some("invalid_path"))
        );
    }
}

// ================================================================ the caches and their order

#[test]
fn the_vault_token_goes_upstream_and_is_kept_in_the_shared_cache_as_json() {
    let mut g = Gateway::new();
    g.exchange_for_alice();
    let entries: Vec<Value> = g
        .cache
        .keys()
        .filter(|k| k.starts_with("agentward.upstream_token."))
        .map(|k| serde_json::from_slice(&g.cache.get(k).unwrap()).unwrap())
        .collect();
    // Capped to max_cache_seconds (300, default) + the margin, under expires_in.
    assert_eq!(
        entries,
        [json!({"access_token": "up-1", "expires_at": START + 120})]
    );
}

#[test]
fn a_second_request_is_served_from_memory_without_a_call() {
    let mut g = Gateway::new();
    g.exchange_for_alice();
    g.cache = MemoryCache::new(); // the memory answers before the shared cache
    let d = g.decide(&Request::portfolio("alice", ALICE_TOKEN));
    assert_eq!(d.verdict, Verdict::CacheHit);
    assert_eq!(upstream(&d), "Bearer up-1");
}

#[test]
fn another_instance_sharing_the_cache_uses_the_cached_token_and_one_with_its_own_exchanges_again() {
    let mut first = Gateway::new();
    first.exchange_for_alice();
    // A second worker VM, or a fresh Spin instance, on the same store.
    let mut second = Gateway::with(exchanger(), first.cache.clone());
    let d = second.decide(&Request::portfolio("alice", ALICE_TOKEN));
    assert_eq!(d.verdict, Verdict::CacheHit);
    assert_eq!(upstream(&d), "Bearer up-1");
    let mut own = Gateway::new();
    call(&own.decide(&Request::portfolio("alice", ALICE_TOKEN)));
}

#[test]
fn a_different_user_gets_a_new_exchange_and_each_keeps_their_own_token() {
    let mut g = Gateway::new();
    g.exchange_for_alice();
    let d = g.decide(&Request::portfolio("bob", BOB_TOKEN));
    assert_eq!(form(&call(&d).body)["subject_token"], BOB_TOKEN);
    let d = g.vault(d, 200, r#"{"access_token":"up-bob","expires_in":120}"#);
    assert_eq!(upstream(&d), "Bearer up-bob");
    let alice = g.decide(&Request::portfolio("alice", ALICE_TOKEN));
    let bob = g.decide(&Request::portfolio("bob", BOB_TOKEN));
    assert_eq!(
        (upstream(&alice), upstream(&bob)),
        ("Bearer up-1", "Bearer up-bob")
    );
}

#[test]
fn a_route_with_other_scopes_or_audience_gets_its_own_exchange() {
    let mut g = Gateway::new();
    g.exchange_for_alice();
    call(&g.decide(&Request::new(
        "POST",
        "/trades",
        Some("alice"),
        Some(ALICE_TOKEN),
    )));
}

#[test]
fn same_subject_from_another_issuer_is_not_served_the_first_users_cached_token() {
    let mut g = Gateway::new();
    g.exchange_for_alice();
    let d = g.decide(&Request::portfolio("alice", OTHER_ALICE_TOKEN));
    assert_eq!(form(&call(&d).body)["subject_token"], OTHER_ALICE_TOKEN);
}

#[test]
fn another_token_of_the_same_user_is_served_from_the_shared_cache_then_remembered() {
    let mut g = Gateway::new();
    g.exchange_for_alice();
    let d = g.decide(&Request::portfolio("alice", ALICE_TOKEN_2));
    assert_eq!(
        (d.verdict, upstream(&d)),
        (Verdict::CacheHit, "Bearer up-1")
    );
    g.cache = MemoryCache::new(); // remembered: served without the shared cache
    let d = g.decide(&Request::portfolio("alice", ALICE_TOKEN_2));
    assert_eq!(
        (d.verdict, upstream(&d)),
        (Verdict::CacheHit, "Bearer up-1")
    );
}

// ================================================================ whose token: the proof

fn assert_unproven(d: &Decision) {
    assert_eq!(d.verdict, Verdict::NoIdentity);
    let body = refused(d, 401);
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(body["reason"], "identity_unproven");
    let Step::Respond(answer) = &d.step else {
        panic!()
    };
    assert!(header(answer, "www-authenticate").is_some());
}

#[test]
fn identity_headers_that_are_not_the_tokens_own_get_401_and_no_cached_token() {
    let mut g = Gateway::new();
    g.exchange_for_alice();
    // bob's token with a spoofed `x-agentward-sub: alice`.
    assert_unproven(&g.decide(&Request::portfolio("alice", BOB_TOKEN)));
    // alice's remembered token with a spoofed `x-agentward-sub: bob`.
    assert_unproven(&g.decide(&Request::portfolio("bob", ALICE_TOKEN)));
    // and with another issuer claimed.
    let mut r = Request::portfolio("alice", ALICE_TOKEN);
    r.set("x-agentward-issuer", Some("https://other-idp.example.com/"));
    assert_unproven(&g.decide(&r));
}

#[test]
fn an_unsigned_token_with_forged_identity_headers_gets_401_not_alices_cached_token() {
    let mut g = Gateway::new();
    g.exchange_for_alice();
    let payload = URL_SAFE_NO_PAD.encode(r#"{"iss":"https://idp.example.com/","sub":"alice"}"#);
    let unsigned = format!("eyJhbGciOiJub25lIn0.{payload}.");
    let alices = Request::portfolio("alice", ALICE_TOKEN).headers[PROOF].clone();
    for proof in [None, Some("AAAAAAAAAAAAAAAAAAAAAA"), Some(alices.as_str())] {
        let mut r = Request::portfolio("alice", &unsigned);
        r.set(PROOF, proof);
        assert_unproven(&g.decide(&r));
    }
}

#[test]
fn a_proof_made_for_another_token_of_the_same_user_gets_401() {
    let mut g = Gateway::new();
    g.exchange_for_alice();
    let first = Request::portfolio("alice", ALICE_TOKEN).headers[PROOF].clone();
    let mut r = Request::portfolio("alice", ALICE_TOKEN_2);
    r.set(PROOF, Some(&first));
    assert_unproven(&g.decide(&r));
    let d = g.decide(&Request::portfolio("alice", ALICE_TOKEN_2));
    assert_eq!(upstream(&d), "Bearer up-1");
}

#[test]
fn a_remembered_bearer_with_a_tampered_or_missing_proof_gets_401() {
    let mut g = Gateway::new();
    g.exchange_for_alice();
    let mut r = Request::portfolio("alice", ALICE_TOKEN);
    let mut proof = r.headers[PROOF].clone();
    let last = if proof.ends_with('A') { "B" } else { "A" };
    proof.replace_range(proof.len() - 1.., last);
    r.set(PROOF, Some(&proof));
    assert_unproven(&g.decide(&r));
    r.set(PROOF, None);
    assert_unproven(&g.decide(&r));
}

#[test]
fn without_a_proof_key_the_exchange_answers_503_until_jwt_identity_stores_one() {
    let mut g = Gateway::with(exchanger(), MemoryCache::new());
    let d = g.decide(&Request::portfolio("alice", ALICE_TOKEN));
    assert_eq!(d.verdict, Verdict::NoIdentity);
    let body = refused(&d, 503);
    assert_eq!(body["reason"], "proof_key_missing");
    let description = body["error_description"].as_str().unwrap();
    assert!(description.contains("jwt-identity") && description.contains("vm_id"));
    g.cache.set(KEY_NAME, &PROOF_KEY);
    call(&g.decide(&Request::portfolio("alice", ALICE_TOKEN)));
}

#[test]
fn a_proof_key_read_at_start_serves_when_the_shared_cache_fails_later() {
    let mut ex = exchanger();
    assert!(ex.read_proof_key(&shared()));
    let mut g = Gateway::with(ex, MemoryCache::new());
    call(&g.decide(&Request::portfolio("alice", ALICE_TOKEN)));
    assert!(!exchanger().read_proof_key(&MemoryCache::new()));
}

#[test]
fn a_proof_key_replaced_in_the_shared_cache_is_read_again_before_a_proof_is_refused() {
    let mut g = Gateway::new();
    g.exchange_for_alice();
    let newer = *b"the-other-key-!!";
    g.cache.set(KEY_NAME, &newer);
    let newer = ProofKey::from_bytes(&newer).unwrap();
    let r = Request::with_key(
        "GET",
        "/portfolio",
        Some("alice"),
        Some(ALICE_TOKEN_2),
        &newer,
    );
    assert_eq!(upstream(&g.decide(&r)), "Bearer up-1");
    // A proof under the old key no longer passes.
    assert_unproven(&g.decide(&Request::portfolio("alice", ALICE_TOKEN_2)));
}

#[test]
fn no_user_or_no_bearer_token_answers_401_with_a_challenge() {
    let mut g = Gateway::new();
    let mut requests = vec![Request::new("GET", "/portfolio", None, Some(ALICE_TOKEN))];
    for authorization in [None, Some("Basic Z2F0ZXdheTpz"), Some("Bearer "), Some("")] {
        let mut r = Request::portfolio("alice", ALICE_TOKEN);
        r.set("authorization", authorization);
        requests.push(r);
    }
    for r in requests {
        let d = g.decide(&r);
        assert_eq!(d.verdict, Verdict::NoIdentity);
        let body = refused(&d, 401);
        assert_eq!(body["reason"], "missing_token");
        let Step::Respond(answer) = &d.step else {
            panic!()
        };
        assert!(header(answer, "www-authenticate")
            .unwrap()
            .starts_with("Bearer "));
    }
}

// ================================================================ time

#[test]
fn a_cached_token_is_used_until_expires_in_minus_the_margin_then_exchanged_again() {
    let mut g = Gateway::new();
    g.exchange_for_alice();
    // expires_in 120, margin 30: usable while now + 30 < START + 120.
    g.now = START + 89;
    assert_eq!(
        upstream(&g.decide(&Request::portfolio("alice", ALICE_TOKEN))),
        "Bearer up-1"
    );
    // Another token of alice's reads the shared entry: the same bound.
    assert_eq!(
        upstream(&g.decide(&Request::portfolio("alice", ALICE_TOKEN_2))),
        "Bearer up-1"
    );
    g.now = START + 90;
    let d = g.decide(&Request::portfolio("alice", ALICE_TOKEN));
    call(&d);
    let d = g.vault(d, 200, r#"{"access_token":"up-2","expires_in":120}"#);
    assert_eq!(upstream(&d), "Bearer up-2");
    let d = g.decide(&Request::portfolio("alice", ALICE_TOKEN));
    assert_eq!(upstream(&d), "Bearer up-2");
    // The other token's memory expired too: the shared cache has the new one.
    let d = g.decide(&Request::portfolio("alice", ALICE_TOKEN_2));
    assert_eq!(upstream(&d), "Bearer up-2");
}

#[test]
fn with_ticks_the_cache_is_checked_against_the_ticks_clock_one_period_ahead() {
    let mut g = Gateway::new();
    g.exchange_for_alice();
    g.ex.tick(START + 88);
    let d = g.ex.decide(
        &Request::portfolio("alice", ALICE_TOKEN).head(),
        || panic!("read"),
        &mut g.cache,
    );
    assert_eq!(
        upstream(&d),
        "Bearer up-1",
        "the tick's clock + 1 is START + 89"
    );
    g.ex.tick(START + 89);
    let d = g.ex.decide(
        &Request::portfolio("alice", ALICE_TOKEN).head(),
        || panic!("read"),
        &mut g.cache,
    );
    call(&d);
}

#[test]
fn an_instance_whose_ticks_stop_still_sees_time_pass_within_64_hits() {
    let mut g = Gateway::new();
    g.exchange_for_alice();
    g.ex.tick(START);
    g.now = START + 600;
    let mut served = 0;
    while g.decide(&Request::portfolio("alice", ALICE_TOKEN)).verdict == Verdict::CacheHit {
        served += 1;
        assert!(served < 64, "still served after 64 hits");
    }
}

#[test]
fn max_cache_seconds_bounds_a_long_lived_upstream_token() {
    let mut p = policy_json("rfc8693");
    p["vault"]["max_cache_seconds"] = json!(10);
    let mut g = Gateway::with(exchanger_for(&p), shared());
    g.exchange_for_alice();
    g.now = START + 9;
    assert_eq!(
        g.decide(&Request::portfolio("alice", ALICE_TOKEN)).verdict,
        Verdict::CacheHit
    );
    assert_eq!(
        g.decide(&Request::portfolio("alice", ALICE_TOKEN_2))
            .verdict,
        Verdict::CacheHit
    );
    g.now = START + 10;
    call(&g.decide(&Request::portfolio("alice", ALICE_TOKEN)));
    // 0: the vault is asked on every request.
    p["vault"]["max_cache_seconds"] = json!(0);
    let mut g = Gateway::with(exchanger_for(&p), shared());
    g.exchange_for_alice();
    call(&g.decide(&Request::portfolio("alice", ALICE_TOKEN)));
}

#[test]
fn a_token_without_expires_in_is_used_and_cached() {
    let mut g = Gateway::new();
    let d = g.decide(&Request::portfolio("alice", ALICE_TOKEN));
    let d = g.vault(d, 200, r#"{"access_token":"up-1"}"#);
    assert_eq!(upstream(&d), "Bearer up-1");
    g.now = START + 250;
    assert_eq!(
        g.decide(&Request::portfolio("alice", ALICE_TOKEN)).verdict,
        Verdict::CacheHit
    );
}

#[test]
fn a_clock_that_cannot_be_read_answers_503() {
    let mut g = Gateway::new();
    let r = Request::portfolio("alice", ALICE_TOKEN);
    let d = g.ex.decide(&r.head(), || None, &mut g.cache);
    assert_eq!(d.verdict, Verdict::ClockUnavailable);
    assert_eq!(refused(&d, 503)["reason"], "clock_unavailable");
    let d = g.decide(&r);
    let pending = d.pending.unwrap();
    let d =
        g.ex.on_answer(pending, response(200, OK_ANSWER), None, &mut g.cache);
    assert_eq!(d.verdict, Verdict::VaultUnavailable);
    assert_eq!(refused(&d, 503)["reason"], "clock_unavailable");
}

// ================================================================ the vault's answers

#[test]
fn a_missing_account_link_answers_403_with_the_connect_url_and_caches_nothing() {
    let mut g = Gateway::new();
    let d = g.decide(&Request::portfolio("alice", ALICE_TOKEN));
    let answer = json!({"error": "federated_connection_refresh_token_not_found",
        "error_description": "alice has not linked stocktrade; open connect_url",
        "connect_url": "http://vault/connect/stocktrade?ticket=abc"});
    let d = g.vault(d, 400, &answer.to_string());
    assert_eq!(d.verdict, Verdict::Refused);
    assert_eq!(d.warning, None);
    let body = refused(&d, 403);
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
    call(&g.decide(&Request::portfolio("alice", ALICE_TOKEN)));
    // The user-action errors without a link say which connection.
    let d = g.decide(&Request::portfolio("alice", ALICE_TOKEN));
    let d = g.vault(d, 400, r#"{"error":"invalid_grant"}"#);
    let body = refused(&d, 403);
    assert_eq!(body["error"], "invalid_grant");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("stocktrade"));
}

#[test]
fn no_answer_from_the_vault_answers_503_temporarily_unavailable() {
    let mut g = Gateway::new();
    let d = g.decide(&Request::portfolio("alice", ALICE_TOKEN));
    let d = g.answer(d, Answer::Failed);
    assert_eq!(d.verdict, Verdict::VaultUnavailable);
    assert_eq!(refused(&d, 503)["error"], "temporarily_unavailable");
    let Step::Respond(answer) = &d.step else {
        panic!()
    };
    assert!(header(answer, "retry-after").is_some());
    assert!(d.warning.unwrap().contains("vault status none"));
    call(&g.decide(&Request::portfolio("alice", ALICE_TOKEN)));
}

#[test]
fn vault_server_errors_and_rate_limits_answer_503_and_are_logged() {
    let mut g = Gateway::new();
    for (status, body) in [
        (
            500,
            r#"{"error":"server_error","error_description":"internal"}"#,
        ),
        (502, r#"{"error":"server_error"}"#),
        (503, r#"{"error":"temporarily_unavailable"}"#),
        (500, "<html>oops</html>"),
        (429, ""),
    ] {
        let d = g.decide(&Request::portfolio("alice", ALICE_TOKEN));
        let d = g.vault(d, status, body);
        assert_eq!(d.verdict, Verdict::VaultUnavailable, "{status}");
        assert_eq!(refused(&d, 503)["error"], "temporarily_unavailable");
        let warning = d.warning.unwrap();
        assert!(
            warning.contains(&format!("vault status {status}")),
            "{warning}"
        );
    }
}

#[test]
fn the_vault_refusing_the_gateway_answers_502_without_its_challenge() {
    let mut g = Gateway::new();
    for (status, body) in [
        (
            401,
            r#"{"error":"invalid_client","error_description":"wrong client secret"}"#,
        ),
        (400, r#"{"error":"invalid_target"}"#),
        (403, "not json"),
    ] {
        let d = g.decide(&Request::portfolio("alice", ALICE_TOKEN));
        let pending = d.pending.clone().unwrap();
        let answer = Answer::Response {
            status,
            headers: vec![("www-authenticate".into(), "Basic realm=\"vault\"".into())],
            body: body.as_bytes().to_vec(),
        };
        let d = g.ex.on_answer(pending, answer, Some(START), &mut g.cache);
        assert_eq!(d.verdict, Verdict::Refused);
        assert_eq!(refused(&d, 502)["error"], "server_error");
        let Step::Respond(r) = &d.step else { panic!() };
        assert_eq!(header(r, "www-authenticate"), None);
    }
}

#[test]
fn a_200_with_an_unusable_body_answers_503() {
    let mut g = Gateway::new();
    for body in [
        "not json at all",
        "",
        r#"{"token_type":"Bearer","expires_in":120}"#,
        r#"{"access_token":"","token_type":"Bearer"}"#,
        r#"{"access_token":"up-1","token_type":"MAC"}"#,
        "{\"access_token\":\"up-1\\r\\nx-injected: 1\",\"token_type\":\"Bearer\"}",
    ] {
        let d = g.decide(&Request::portfolio("alice", ALICE_TOKEN));
        let d = g.vault(d, 200, body);
        assert_eq!(d.verdict, Verdict::VaultUnavailable, "{body}");
        refused(&d, 503);
    }
    assert!(g
        .cache
        .keys()
        .all(|k| !k.starts_with("agentward.upstream_token.")));
}

#[test]
fn an_oversized_answer_is_not_read_and_answers_503_naming_the_limit() {
    let mut g = Gateway::new();
    let d = g.decide(&Request::portfolio("alice", ALICE_TOKEN));
    let d = g.answer(
        d,
        Answer::TooLarge {
            status: 200,
            size: 70_000,
        },
    );
    assert_eq!(d.verdict, Verdict::VaultUnavailable);
    assert_eq!(refused(&d, 503)["error"], "temporarily_unavailable");
    assert!(d.warning.unwrap().contains("65536-byte limit"));
}

// ================================================================ hosts that start afresh

#[test]
fn a_pending_exchange_survives_serialisation_and_a_fresh_instance() {
    // A Spin host: one instance decides, another one reads the answer.
    let mut first = Gateway::new();
    let d = first.decide(&Request::portfolio("alice", ALICE_TOKEN));
    let json = serde_json::to_string(d.pending.as_ref().unwrap()).unwrap();
    assert!(!json.contains(ALICE_TOKEN));
    let pending: Pending = serde_json::from_str(&json).unwrap();
    let mut second = Gateway::with(exchanger(), first.cache);
    let d = second.ex.on_answer(
        pending,
        response(200, OK_ANSWER),
        Some(START),
        &mut second.cache,
    );
    assert_eq!(upstream(&d), "Bearer up-1");
    // A third one finds it in the shared cache.
    let mut third = Gateway::with(exchanger(), second.cache);
    assert_eq!(
        third
            .decide(&Request::portfolio("alice", ALICE_TOKEN))
            .verdict,
        Verdict::CacheHit
    );
}

// ================================================================ configuration

#[test]
fn a_policy_without_vault_is_refused_naming_vault() {
    let mut p = policy_json("rfc8693");
    p.as_object_mut().unwrap().remove("vault");
    for route in p["routes"].as_array_mut().unwrap() {
        route.as_object_mut().unwrap().remove("exchange");
    }
    let policy = Policy::parse(p.to_string().as_bytes()).unwrap();
    let Err(e) = Exchanger::new(policy, |_| None) else {
        panic!("an exchanger without a vault")
    };
    assert_eq!(e.field, "vault");
}

#[test]
fn the_client_secret_is_read_from_the_environment_it_names() {
    let mut p = policy_json("rfc8693");
    p["vault"].as_object_mut().unwrap().remove("client_secret");
    p["vault"]["client_secret_env"] = json!("AGENTWARD_VAULT_SECRET");
    let policy = || Policy::parse(p.to_string().as_bytes()).unwrap();
    let env = |name: &str| (name == "AGENTWARD_VAULT_SECRET").then(|| "env:s3cret".to_string());
    let mut g = Gateway::with(Exchanger::new(policy(), env).unwrap(), shared());
    let d = g.decide(&Request::portfolio("alice", ALICE_TOKEN));
    let basic = format!("Basic {}", STANDARD.encode("gateway:env%3As3cret"));
    assert!(call(&d).headers.contains(&("authorization".into(), basic)));
    let Err(e) = Exchanger::new(policy(), |_| None) else {
        panic!("started without its secret")
    };
    assert_eq!(e.field, "vault.client_secret_env");
    assert!(e.to_string().contains("AGENTWARD_VAULT_SECRET"));
}
