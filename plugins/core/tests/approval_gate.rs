//! ciba-hold's decisions (`approval::gate::Gate`), natively: the same
//! sequence the host-test scenarios drive through the `.wasm`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agentward_core::approval::gate::{Gate, RequestHead, Verdict};
use agentward_core::identity::ReceivedIdentity;
use agentward_core::proof::{ProofKey, KEY_NAME};
use agentward_core::shared_cache::{MemoryCache, SharedCache};
use agentward_core::step::{Answer, BodyStep, Step};
use agentward_core::Policy;
use serde_json::{json, Value};

const TOKEN: &str = "h.p.alice-signature";
const KEY: [u8; 16] = *b"gate-proof-key!!";
const NOW: u64 = 1_700_000_000_000;

fn gate(mode: &str) -> Gate {
    let policy = json!({
        "resource": "https://api.example.com",
        "issuers": [{"issuer": "https://idp/", "audiences": ["https://api.example.com"],
                     "jwks_uri": "https://idp/jwks", "jwks_cluster": "idp"}],
        "routes": [{
            "match": {"methods": ["POST"], "path": "/trades"},
            "approval": {"when": {"field": "body.qty", "gt": 10},
                         "binding_message": "Buy {body.qty} {body.ticker}", "mode": mode}
        }],
        "approval": {"cluster": "vault", "client_id": "gateway", "client_secret": "s",
                     "handle_key_env": "KEY", "token_header": "x-approval"}
    });
    let policy = Policy::parse(policy.to_string().as_bytes()).unwrap();
    let mut gate = Gate::new(policy, |name| {
        (name == "KEY").then(|| "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string())
    })
    .unwrap();
    let mut cache = MemoryCache::default();
    cache.set(KEY_NAME, &KEY);
    assert!(gate.read_proof_key(&cache));
    gate
}

fn with_head<R>(sub: &str, approval_id: Option<&str>, f: impl FnOnce(&RequestHead<'_>) -> R) -> R {
    let proof = ProofKey::from_bytes(&KEY).unwrap().prove(
        |n| match n {
            "x-agentward-sub" => Some(sub),
            "x-agentward-issuer" => Some("https://idp/"),
            _ => None,
        },
        TOKEN,
    );
    let identity = ReceivedIdentity::from_headers(|n| match n {
        "x-agentward-sub" => Some(sub),
        "x-agentward-issuer" => Some("https://idp/"),
        "x-agentward-proof" => Some(proof.as_str()),
        _ => None,
    });
    f(&RequestHead {
        method: "POST",
        path: "/trades",
        bearer: Some(TOKEN),
        identity,
        approval_id,
        ..Default::default()
    })
}

fn answer(status: u16, body: Value) -> Answer {
    Answer::Response {
        status,
        headers: vec![],
        body: body.to_string().into_bytes(),
    }
}

#[test]
fn hold_reads_the_body_asks_and_goes_on_when_approved() {
    let gate = gate("hold");
    let decision = with_head("alice", None, |h| gate.decide(h));
    assert!(
        matches!(decision.step, Step::ReadBody { .. }),
        "{decision:?}"
    );
    let wait = decision.wait.unwrap();
    let small = gate.on_body(
        wait.clone(),
        br#"{"ticker": "ACME", "qty": 5}"#,
        false,
        NOW,
        &MemoryCache::new(),
    );
    assert_eq!(
        (small.step, small.verdict),
        (BodyStep::Keep, Verdict::NotNeeded)
    );
    let big = gate.on_body(
        wait,
        br#"{"ticker": "ACME", "qty": 50}"#,
        false,
        NOW,
        &MemoryCache::new(),
    );
    assert_eq!(big.verdict, Verdict::Asked);
    let BodyStep::Call(call) = &big.step else {
        panic!("{big:?}")
    };
    assert_eq!(call.path, "/bc-authorize");
    let started = answer(
        200,
        json!({"auth_req_id": "r1", "expires_in": 60, "interval": 2}),
    );
    let held = gate.on_answer(big.wait.unwrap(), &started, NOW);
    assert_eq!(
        held.step,
        Step::Hold {
            until_ms: NOW + 2_000
        }
    );
    let poll = gate.wake(held.wait.unwrap(), NOW + 2_000);
    assert!(matches!(poll.step, Step::Call(_)));
    let done = gate.on_answer(
        poll.wait.unwrap(),
        &answer(200, json!({"access_token": "t"})),
        NOW + 2_100,
    );
    assert_eq!(done.verdict, Verdict::Approved);
    // The headers went on before the body: no token header can be added.
    assert!(matches!(done.step, Step::Continue(e) if e.set.is_empty()));
}

#[test]
fn deferred_gives_an_id_that_only_the_same_request_of_the_same_user_can_use() {
    let gate = gate("deferred");
    let body = br#"{"ticker": "ACME", "qty": 50}"#;
    let wait = with_head("alice", None, |h| gate.decide(h)).wait.unwrap();
    let asked = gate.on_body(wait, body, false, NOW, &MemoryCache::new());
    let started = answer(
        200,
        json!({"auth_req_id": "r1", "expires_in": 60, "interval": 5}),
    );
    let pending = gate.on_answer(asked.wait.unwrap(), &started, NOW);
    assert_eq!(pending.verdict, Verdict::Pending);
    let Step::Respond(r) = pending.step else {
        panic!()
    };
    assert_eq!(r.status, 202);
    let id = serde_json::from_str::<Value>(&r.body).unwrap()["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!id.contains("r1"));
    // The same request: one poll.
    let wait = with_head("alice", Some(&id), |h| gate.decide(h))
        .wait
        .unwrap();
    let retry = gate.on_body(
        wait,
        br#"{"qty": 50, "ticker": "ACME"}"#,
        false,
        NOW + 1_000,
        &MemoryCache::new(),
    );
    assert_eq!(retry.verdict, Verdict::Retried);
    // Another amount, another user: refused without a call.
    let wait = with_head("alice", Some(&id), |h| gate.decide(h))
        .wait
        .unwrap();
    let other = gate.on_body(
        wait,
        br#"{"ticker": "ACME", "qty": 500}"#,
        false,
        NOW,
        &MemoryCache::new(),
    );
    assert_eq!(other.verdict, Verdict::HandleRefused);
    let wait = with_head("bob", Some(&id), |h| gate.decide(h))
        .wait
        .unwrap();
    let bob = gate.on_body(wait, body, false, NOW, &MemoryCache::new());
    assert_eq!(bob.verdict, Verdict::HandleRefused);
    // The authority's single issuance refuses a replay.
    let used = gate.on_answer(
        retry.wait.unwrap(),
        &answer(400, json!({"error": "invalid_grant"})),
        NOW,
    );
    assert_eq!(used.verdict, Verdict::Used);
}

#[test]
fn an_unproven_identity_is_refused_before_the_body_is_read() {
    let gate = gate("hold");
    let decision = gate.decide(&RequestHead {
        method: "POST",
        path: "/trades",
        bearer: Some(TOKEN),
        identity: ReceivedIdentity::from_headers(|n| (n == "x-agentward-sub").then_some("alice")),
        approval_id: None,
        ..Default::default()
    });
    let Step::Respond(r) = decision.step else {
        panic!()
    };
    assert_eq!((r.status, decision.verdict), (401, Verdict::NoIdentity));
}
