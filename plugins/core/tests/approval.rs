//! The deferred approval flow end to end, without a host: a rule decides a
//! large order needs approval, the gateway seals a handle bound to the
//! request's digest, and only an exact retry by the same user and agent
//! opens it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agentward_core::approval::handle::{principal, HandleError};
use agentward_core::approval::mcp;
use agentward_core::approval::{
    ApprovalRule, DigestInput, Facts, HandleKey, RequestBody, RequestDigest,
};
use serde_json::{json, Value};

const ORDER: &[u8] = br#"{"ticker": "ACME", "qty": 50, "amount": 5000}"#;
const SAME_ORDER: &[u8] = br#"{"amount":5000,"qty":50,"ticker":"ACME"}"#;
const BIGGER: &[u8] = br#"{"ticker": "ACME", "qty": 50, "amount": 50000}"#;

fn rule() -> ApprovalRule {
    let rule: ApprovalRule = serde_json::from_value(json!({
        "when": {"field": "body.amount", "gt": 1000},
        "binding_message": "Buy {body.qty} {body.ticker} for {sub}",
        "mode": "deferred"
    }))
    .unwrap();
    rule.validate("routes[0].approval", |_| false).unwrap();
    rule
}

fn digest(body: &[u8], sub: &str, agent: &str) -> RequestDigest {
    let body = RequestBody::read(body, 64 * 1024, true).unwrap();
    RequestDigest::of(&DigestInput {
        method: "POST",
        path: "/trades",
        query: None,
        body: body.digest_body(&[]),
        sub,
        issuer: "https://idp.example.com/",
        agent: Some(agent),
    })
    .unwrap()
}

#[test]
fn only_the_exact_request_of_the_same_user_and_agent_opens_the_handle() {
    let body = RequestBody::read(ORDER, 64 * 1024, true).unwrap();
    let facts = Facts {
        body: body.json(),
        params: &[],
        sub: "alice",
        issuer: "https://idp.example.com/",
        agent: Some("trading-agent"),
        tool: None,
    };
    let needed = rule().evaluate(&facts).unwrap().unwrap();
    assert_eq!(needed.binding_message, "Buy 50 ACME for alice");

    let key = HandleKey::from_bytes(&[42; 32]).unwrap();
    let alice = principal("https://idp.example.com/", "alice", Some("trading-agent"));
    let d = digest(ORDER, "alice", "trading-agent");
    let handle = key.seal("auth-req-1", &d, &alice, 10_000, [1; 16]);

    // The same order, keys reordered and spaces gone: accepted.
    let opened = key
        .open(
            &handle,
            &digest(SAME_ORDER, "alice", "trading-agent"),
            &alice,
            9_999,
        )
        .unwrap();
    assert_eq!(opened.auth_req_id, "auth-req-1");
    // A changed amount: refused.
    assert_eq!(
        key.open(
            &handle,
            &digest(BIGGER, "alice", "trading-agent"),
            &alice,
            0
        ),
        Err(HandleError::OtherRequest)
    );
    // Bob retrying alice's approval, or another agent: refused.
    let bob = principal("https://idp.example.com/", "bob", Some("trading-agent"));
    assert_eq!(
        key.open(&handle, &digest(ORDER, "bob", "trading-agent"), &bob, 0),
        Err(HandleError::OtherPrincipal)
    );
    let other = principal("https://idp.example.com/", "alice", Some("other-agent"));
    assert_eq!(
        key.open(&handle, &digest(ORDER, "alice", "other-agent"), &other, 0),
        Err(HandleError::OtherPrincipal)
    );
    // Too late: refused.
    assert_eq!(
        key.open(&handle, &d, &alice, 10_000),
        Err(HandleError::Expired)
    );
}

#[test]
fn an_mcp_retry_has_the_digest_of_the_first_call_and_reaches_the_upstream_clean() {
    let first: Value = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "place_order", "arguments": {"ticker": "ACME", "qty": 50, "amount": 5000}}});
    let mut retry: Value = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "place_order", "arguments": {"amount": 5000, "qty": 50, "ticker": "ACME"},
                   "requestState": "HANDLE",
                   "inputResponses": {"agentward_approval": {"action": "accept"}}}});
    let digest_of = |message: &Value| {
        RequestDigest::of(&DigestInput {
            method: "POST",
            path: "/mcp",
            query: None,
            body: agentward_core::approval::DigestBody::Json(&mcp::digest_view(message)),
            sub: "alice",
            issuer: "https://idp.example.com/",
            agent: Some("trading-agent"),
        })
        .unwrap()
    };
    assert_eq!(digest_of(&first), digest_of(&retry));
    let stripped = mcp::strip_retry(&mut retry);
    assert_eq!(stripped.request_state.as_deref(), Some("HANDLE"));
    assert!(retry["params"].get("requestState").is_none());
    assert!(retry["params"].get("inputResponses").is_none());
    assert_eq!(retry["params"]["arguments"], first["params"]["arguments"]);
}
