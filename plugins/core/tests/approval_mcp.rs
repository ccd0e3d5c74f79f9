//! ciba-hold's decisions on MCP tool calls (`approval::gate::Gate` on a
//! route whose tools have approval rules), natively: both pending forms,
//! the retries, and what the upstream is sent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agentward_core::approval::gate::{BodyDecision, Decision, Gate, RequestHead, Verdict};
use agentward_core::identity::ReceivedIdentity;
use agentward_core::mcp::McpHeaders;
use agentward_core::proof::{ProofKey, KEY_NAME};
use agentward_core::shared_cache::{MemoryCache, SharedCache};
use agentward_core::step::{Answer, BodyStep, Step};
use agentward_core::Policy;
use serde_json::{json, Value};

const TOKEN: &str = "h.p.alice-signature";
const KEY: [u8; 16] = *b"gate-proof-key!!";
const NOW: u64 = 1_700_000_000_000;
const NEW: &str = "2026-07-28";
const OLD: &str = "2025-11-25";
const URL: &str = "https://vault.example.com/ciba/approvals";

fn gate() -> Gate {
    let policy = json!({
        "resource": "https://api.example.com",
        "issuers": [{"issuer": "https://idp/", "audiences": ["https://api.example.com"],
                     "jwks_uri": "https://idp/jwks", "jwks_cluster": "idp"}],
        "routes": [{
            "match": {"methods": ["POST"], "path": "/mcp"},
            "mcp": {"tools": {
                "place_order": {"approval": {
                    "when": {"field": "body.qty", "gt": 10},
                    "binding_message": "Buy {body.qty} {body.ticker}"}},
                "get_price": {}
            }}
        }],
        "approval": {"cluster": "vault", "client_id": "gateway", "client_secret": "s",
                     "handle_key_env": "KEY", "approval_url": URL}
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

/// The headers phase of a POST /mcp by `sub`, `name` in `Mcp-Name`.
fn head(gate: &Gate, sub: &str, version: &str, name: Option<&str>) -> Decision {
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
    let new = version == NEW;
    gate.decide(&RequestHead {
        method: "POST",
        path: "/mcp",
        bearer: Some(TOKEN),
        identity,
        mcp: McpHeaders {
            method: new.then_some("tools/call"),
            name: if new { name } else { None },
        },
        protocol_version: Some(version),
        ..Default::default()
    })
}

fn call(id: u32, tool: &str, qty: u32, extra: Value) -> Vec<u8> {
    let mut params = json!({"name": tool, "arguments": {"ticker": "ACME", "qty": qty},
                            "_meta": {"progressToken": id}});
    for (k, v) in extra.as_object().unwrap() {
        params[k] = v.clone();
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
        .to_string()
        .into_bytes()
}

/// Headers then body, as the host does; `shared` is the VM's shared data.
fn send(
    gate: &Gate,
    sub: &str,
    version: &str,
    body: &[u8],
    shared: &mut MemoryCache,
    now: u64,
) -> BodyDecision {
    let name: Value = serde_json::from_slice(body).unwrap();
    let name = name["params"]["name"].as_str().unwrap().to_string();
    let d = head(gate, sub, version, Some(&name));
    let Step::ReadBody { edits, .. } = &d.step else {
        panic!("{d:?}")
    };
    assert!(edits.remove.iter().any(|h| h == "content-length"));
    let mut b = gate.on_body(d.wait.unwrap(), body, false, now, shared);
    if let Some(w) = b.remember.take() {
        shared.set(&w.key, &w.value);
    }
    b
}

fn answered(gate: &Gate, b: BodyDecision, answer: Value, shared: &mut MemoryCache) -> Decision {
    let (status, body) = match answer.get("error") {
        Some(_) => (400, answer),
        None => (200, answer),
    };
    let mut d = gate.on_answer(
        b.wait.unwrap(),
        &Answer::Response {
            status,
            headers: vec![],
            body: body.to_string().into_bytes(),
        },
        NOW,
    );
    if let Some(w) = d.remember.take() {
        shared.set(&w.key, &w.value);
    }
    d
}

fn started() -> Value {
    json!({"auth_req_id": "r1", "expires_in": 600, "interval": 5})
}

fn rpc(d: &Decision) -> (u32, Value) {
    let Step::Respond(r) = &d.step else {
        panic!("{d:?}")
    };
    (r.status, serde_json::from_str(&r.body).unwrap())
}

#[test]
fn a_2026_client_gets_input_required_and_its_approved_retry_goes_on_without_request_state() {
    let gate = gate();
    let mut shared = MemoryCache::new();
    let asked = send(
        &gate,
        "alice",
        NEW,
        &call(1, "place_order", 50, json!({})),
        &mut shared,
        NOW,
    );
    assert_eq!(asked.verdict, Verdict::Asked);
    let pending = answered(&gate, asked, started(), &mut shared);
    let (status, body) = rpc(&pending);
    assert_eq!(status, 200);
    let result = &body["result"];
    assert_eq!(body["id"], 1);
    assert_eq!(result["resultType"], "input_required");
    let elicit = &result["inputRequests"]["agentward_approval"];
    assert_eq!(elicit["method"], "elicitation/create");
    assert_eq!(elicit["params"]["mode"], "url");
    assert_eq!(elicit["params"]["url"], URL);
    assert!(elicit["params"]["message"]
        .as_str()
        .unwrap()
        .contains("Buy 50 ACME"));
    let state = result["requestState"].as_str().unwrap().to_string();
    assert!(
        shared.is_empty(),
        "2026 clients echo the state: nothing kept"
    );

    let retry = call(
        2,
        "place_order",
        50,
        json!({"requestState": state, "inputResponses": {"agentward_approval": {"action": "accept"}}}),
    );
    let polled = send(&gate, "alice", NEW, &retry, &mut shared, NOW + 1_000);
    assert_eq!(polled.verdict, Verdict::Retried);
    let done = answered(&gate, polled, json!({"access_token": "t"}), &mut shared);
    assert_eq!(done.verdict, Verdict::Approved);
    assert!(matches!(done.step, Step::Continue(_)));
    let sent: Value = serde_json::from_slice(done.body.as_ref().unwrap()).unwrap();
    assert_eq!(
        sent,
        serde_json::from_slice::<Value>(&call(2, "place_order", 50, json!({}))).unwrap(),
        "the upstream sees the call without the gateway's fields"
    );
}

#[test]
fn a_2026_retry_still_pending_is_asked_again_with_the_same_state() {
    let gate = gate();
    let mut shared = MemoryCache::new();
    let asked = send(
        &gate,
        "alice",
        NEW,
        &call(1, "place_order", 50, json!({})),
        &mut shared,
        NOW,
    );
    let (_, body) = rpc(&answered(&gate, asked, started(), &mut shared));
    let state = body["result"]["requestState"].clone();
    let retry = call(2, "place_order", 50, json!({"requestState": state}));
    let polled = send(&gate, "alice", NEW, &retry, &mut shared, NOW);
    let again = answered(
        &gate,
        polled,
        json!({"error": "authorization_pending"}),
        &mut shared,
    );
    assert_eq!(again.verdict, Verdict::Pending);
    assert_eq!(rpc(&again).1["result"]["requestState"], state);
}

#[test]
fn a_2026_retry_for_other_arguments_another_user_or_a_replay_is_refused() {
    let gate = gate();
    let mut shared = MemoryCache::new();
    let asked = send(
        &gate,
        "alice",
        NEW,
        &call(1, "place_order", 50, json!({})),
        &mut shared,
        NOW,
    );
    let (_, body) = rpc(&answered(&gate, asked, started(), &mut shared));
    let state = body["result"]["requestState"].clone();
    let changed = send(
        &gate,
        "alice",
        NEW,
        &call(2, "place_order", 500, json!({"requestState": state})),
        &mut shared,
        NOW,
    );
    assert_eq!(changed.verdict, Verdict::HandleRefused);
    let BodyStep::Respond(r) = &changed.step else {
        panic!()
    };
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!((r.status, &body["error"]["code"]), (200, &json!(-32010)));
    assert_eq!(body["error"]["data"]["reason"], "approval_other_request");
    assert_eq!(body["id"], 2);
    let bob = send(
        &gate,
        "bob",
        NEW,
        &call(3, "place_order", 50, json!({"requestState": state})),
        &mut shared,
        NOW,
    );
    assert_eq!(bob.verdict, Verdict::HandleRefused);
    let retry = call(4, "place_order", 50, json!({"requestState": state}));
    let polled = send(&gate, "alice", NEW, &retry, &mut shared, NOW);
    let used = answered(
        &gate,
        polled,
        json!({"error": "invalid_grant"}),
        &mut shared,
    );
    assert_eq!(used.verdict, Verdict::Used);
    assert_eq!(rpc(&used).1["error"]["data"]["reason"], "approval_used");
    // After its expiry the state is refused without asking anyone.
    let late = send(&gate, "alice", NEW, &retry, &mut shared, NOW + 601_000);
    assert_eq!(late.verdict, Verdict::HandleRefused);
}

#[test]
fn a_2025_client_gets_32042_and_its_plain_retry_is_matched_by_digest_once() {
    let gate = gate();
    let mut shared = MemoryCache::new();
    let asked = send(
        &gate,
        "alice",
        OLD,
        &call(1, "place_order", 50, json!({})),
        &mut shared,
        NOW,
    );
    let pending = answered(&gate, asked, started(), &mut shared);
    let (status, body) = rpc(&pending);
    assert_eq!(status, 200);
    assert_eq!(body["error"]["code"], -32042);
    let e = &body["error"]["data"]["elicitations"][0];
    assert_eq!(
        (e["mode"].as_str(), e["url"].as_str()),
        (Some("url"), Some(URL))
    );
    assert!(e["elicitationId"]
        .as_str()
        .unwrap()
        .starts_with("agentward-"));
    assert_eq!(shared.len(), 1, "the handle waits in shared data");

    // Bob's identical call is his own: a new approval, not alice's.
    let bob = send(
        &gate,
        "bob",
        OLD,
        &call(1, "place_order", 50, json!({})),
        &mut shared,
        NOW,
    );
    assert_eq!(bob.verdict, Verdict::Asked);
    // Alice's retry (another id, other `_meta`) polls her approval.
    let polled = send(
        &gate,
        "alice",
        OLD,
        &call(7, "place_order", 50, json!({})),
        &mut shared,
        NOW,
    );
    assert_eq!(polled.verdict, Verdict::Retried);
    let still = answered(
        &gate,
        polled,
        json!({"error": "authorization_pending"}),
        &mut shared,
    );
    let (_, again) = rpc(&still);
    assert_eq!(again["error"]["code"], -32042);
    assert_eq!(
        again["error"]["data"]["elicitations"][0]["elicitationId"],
        e["elicitationId"]
    );
    let polled = send(
        &gate,
        "alice",
        OLD,
        &call(8, "place_order", 50, json!({})),
        &mut shared,
        NOW,
    );
    let done = answered(&gate, polled, json!({"access_token": "t"}), &mut shared);
    assert_eq!(done.verdict, Verdict::Approved);
    assert_eq!(done.body, None, "nothing to strip");
    // Used: forgotten, so the same call again is a new approval.
    let next = send(
        &gate,
        "alice",
        OLD,
        &call(9, "place_order", 50, json!({})),
        &mut shared,
        NOW,
    );
    assert_eq!(next.verdict, Verdict::Asked);
}

#[test]
fn a_2025_denial_or_expiry_is_a_json_rpc_error_and_forgotten() {
    let gate = gate();
    let mut shared = MemoryCache::new();
    let asked = send(
        &gate,
        "alice",
        OLD,
        &call(1, "place_order", 50, json!({})),
        &mut shared,
        NOW,
    );
    answered(&gate, asked, started(), &mut shared);
    let polled = send(
        &gate,
        "alice",
        OLD,
        &call(2, "place_order", 50, json!({})),
        &mut shared,
        NOW,
    );
    let denied = answered(
        &gate,
        polled,
        json!({"error": "access_denied"}),
        &mut shared,
    );
    assert_eq!(denied.verdict, Verdict::Denied);
    let (status, body) = rpc(&denied);
    assert_eq!((status, &body["error"]["code"]), (200, &json!(-32010)));
    assert_eq!(body["error"]["data"]["error"], "access_denied");
    assert_eq!(
        shared.get(shared.keys().next().unwrap()).unwrap(),
        b"",
        "forgotten"
    );
    let asked = send(
        &gate,
        "alice",
        OLD,
        &call(3, "place_order", 50, json!({})),
        &mut shared,
        NOW,
    );
    assert_eq!(asked.verdict, Verdict::Asked);
    answered(&gate, asked, started(), &mut shared);
    let late = send(
        &gate,
        "alice",
        OLD,
        &call(4, "place_order", 50, json!({})),
        &mut shared,
        NOW + 601_000,
    );
    assert_eq!(late.verdict, Verdict::HandleRefused);
    let BodyStep::Respond(r) = &late.step else {
        panic!()
    };
    assert!(r.body.contains("expired_token"), "{}", r.body);
}

#[test]
fn a_declined_elicitation_refuses_the_call() {
    let gate = gate();
    let mut shared = MemoryCache::new();
    let retry = call(
        2,
        "place_order",
        50,
        json!({"requestState": "x", "inputResponses": {"agentward_approval": {"action": "decline"}}}),
    );
    let d = send(&gate, "alice", NEW, &retry, &mut shared, NOW);
    assert_eq!(d.verdict, Verdict::Denied);
    let BodyStep::Respond(r) = &d.step else {
        panic!()
    };
    assert!(r.body.contains("approval_declined"));
}

#[test]
fn calls_without_approval_pass_and_headers_that_disagree_are_refused() {
    let gate = gate();
    let mut shared = MemoryCache::new();
    for body in [
        call(1, "get_price", 50, json!({})),
        call(2, "place_order", 5, json!({})),
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
            .to_string()
            .into_bytes(),
    ] {
        let d = head(&gate, "alice", OLD, None);
        let b = gate.on_body(d.wait.unwrap(), &body, false, NOW, &shared);
        assert_eq!((b.step, b.verdict), (BodyStep::Keep, Verdict::NotNeeded));
    }
    // A small order with a stale requestState: on, without it.
    let b = send(
        &gate,
        "alice",
        NEW,
        &call(4, "place_order", 5, json!({"requestState": "x"})),
        &mut shared,
        NOW,
    );
    let BodyStep::Replace(sent) = b.step else {
        panic!("{b:?}")
    };
    assert!(!String::from_utf8(sent).unwrap().contains("requestState"));
    // Mcp-Name says get_price, the body calls place_order.
    let d = head(&gate, "alice", NEW, Some("get_price"));
    let b = gate.on_body(
        d.wait.unwrap(),
        &call(5, "place_order", 50, json!({})),
        false,
        NOW,
        &shared,
    );
    let BodyStep::Respond(r) = &b.step else {
        panic!("{b:?}")
    };
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (r.status, &body["error"]["code"], &body["id"]),
        (400, &json!(-32020), &json!(5))
    );
}
