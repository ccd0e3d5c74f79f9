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

fn policy(routes: Value, approval: Option<Value>) -> Result<agentward_core::Policy, String> {
    let mut doc = json!({
        "resource": "https://api.example.com",
        "issuers": [{"issuer": "https://idp.example.com/", "audiences": ["https://api.example.com"],
                     "jwks_uri": "https://idp.example.com/jwks", "jwks_cluster": "idp"}],
        "routes": routes,
    });
    if let Some(a) = approval {
        doc["approval"] = a;
    }
    agentward_core::Policy::parse(doc.to_string().as_bytes()).map_err(|e| e.to_string())
}

fn authority() -> Value {
    json!({"cluster": "vault", "client_id": "gateway", "client_secret_env": "CIBA_SECRET",
           "handle_key_env": "CIBA_KEY", "wait_seconds": 20, "token_header": "x-approval-token",
           "approval_url": "https://vault.example.com/ciba/approve"})
}

#[test]
fn a_policy_carries_route_and_tool_approvals_and_the_authority() {
    let p = policy(
        json!([
            {"match": {"methods": ["POST"], "path": "/accounts/{account}/trades"},
             "approval": {"when": {"field": "body.amount", "gt": 1000},
                          "binding_message": "Buy {body.qty} {body.ticker} on {path.account}",
                          "mode": "deferred"}},
            {"match": {"path": "/mcp"},
             "mcp": {"tools": {"place_order": {"approval": {"binding_message": "Buy {body.qty} {body.ticker}"}},
                               "get_price": {}}}}
        ]),
        Some(authority()),
    )
    .unwrap();
    let rule = p.routes[0].approval.as_ref().unwrap();
    assert_eq!(rule.mode, agentward_core::approval::Mode::Deferred);
    let tools = &p.routes[1].mcp.as_ref().unwrap().tools.0;
    assert!(tools["place_order"].approval.is_some());
    assert!(tools["get_price"].approval.is_none());
    let a = p.approval.as_ref().unwrap();
    assert_eq!(a.wait_seconds, 20);
    assert_eq!(a.token_header.as_deref(), Some("x-approval-token"));
}

#[test]
fn approval_policy_errors_name_the_field() {
    let route = |approval: Value| json!([{"match": {"path": "/accounts/{account}/trades"}, "approval": approval}]);
    for (routes, approval, field) in [
        (
            route(json!({"binding_message": "Buy {secret}"})),
            Some(authority()),
            "routes[0].approval.binding_message",
        ),
        (
            route(json!({"binding_message": "Buy <b>"})),
            Some(authority()),
            "routes[0].approval.binding_message",
        ),
        (
            route(json!({"binding_message": "On {path.acct}"})),
            Some(authority()),
            "routes[0].approval.binding_message",
        ),
        (
            route(json!({"binding_message": "x"})),
            None,
            "routes[0].approval",
        ),
        (
            route(json!({"binding_message": "x", "mode": "deferred"})),
            Some(json!({"cluster": "vault", "client_id": "g", "client_secret": "s"})),
            "routes[0].approval.mode",
        ),
        (
            json!([{"match": {"path": "/mcp"}, "mcp": {"tools": {"t": {"approval": {"binding_message": "x"}}}}}]),
            Some(json!({"cluster": "vault", "client_id": "g", "client_secret": "s"})),
            "routes[0].mcp.tools.t.approval.mode",
        ),
        (
            json!([{"match": {"path": "/p"}, "public": true, "approval": {"binding_message": "x"}}]),
            Some(authority()),
            "routes[0].approval",
        ),
        (
            route(json!({"binding_message": "x"})),
            Some(json!({"cluster": "vault"})),
            "approval",
        ),
        (
            route(json!({"binding_message": "x"})),
            Some(
                json!({"cluster": "vault", "client_id": "g", "client_secret": "s", "scope": "trade"}),
            ),
            "approval.scope",
        ),
    ] {
        let e = policy(routes.clone(), approval.clone()).unwrap_err();
        assert!(
            e.contains(&format!("`{field}`")),
            "{routes} {approval:?}: {e}"
        );
    }
}

#[test]
fn the_schema_takes_approval_policies_and_refuses_bad_predicates() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../policies/agentward.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let doc = |when: Value| {
        json!({
            "resource": "https://api.example.com",
            "issuers": [{"issuer": "https://idp.example.com/", "audiences": ["a"],
                         "jwks_uri": "https://idp.example.com/jwks", "jwks_cluster": "idp"}],
            "routes": [{"match": {"path": "/trades"},
                        "approval": {"when": when, "binding_message": "Buy {body.qty}",
                                     "authorization_details": [{"type": "stock_trade", "qty": "{body.qty}"}]}}],
            "approval": authority(),
        })
    };
    let good = doc(json!({"all": [{"field": "body.amount", "gt": 1000},
                                  {"any": [{"field": "body.ticker", "in": ["ACME"]},
                                           {"not": {"field": "agent", "eq": "x"}}]}]}));
    let errors: Vec<String> = validator
        .iter_errors(&good)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    agentward_core::Policy::parse(good.to_string().as_bytes()).unwrap();
    for bad in [
        json!({"field": "secret.x", "eq": 1}),
        json!({"field": "body.a", "gt": "x"}),
        json!({"field": "body.a"}),
        json!({"any": []}),
    ] {
        let doc = doc(bad.clone());
        assert!(!validator.is_valid(&doc), "schema took {bad}");
        assert!(
            agentward_core::Policy::parse(doc.to_string().as_bytes()).is_err(),
            "parser took {bad}"
        );
    }
}
