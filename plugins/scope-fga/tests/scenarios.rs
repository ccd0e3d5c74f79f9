//! Layer-2 scenarios: the real `scope_fga.wasm`, loaded into the
//! host-test proxy-wasm host, driven as Envoy would drive it after
//! jwt-identity (which sets the `x-agentward-*` identity and its
//! `x-agentward-proof` under the key it keeps in shared data). The tests
//! hold that key, make the proofs jwt-identity would make, and answer the
//! FGA service's callouts as an OpenFGA server would.
//!
//! Build the plugin first:
//! `cargo build --release --target wasm32-wasip1 -p scope-fga`.
//! `AGENTWARD_WASM_DIR` points at another build directory. Without the
//! `.wasm` the tests skip, unless `CI` is set: then they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agentward_core::proof::{ProofKey, KEY_NAME, PROOF};
use host_test::{Action, CallState, HostOptions, HttpCall, HttpContext, SharedData};
use host_test::{Host, Status};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.YWxpY2Utc2lnbmF0dXJl";
const START: u64 = 1_700_000_000;
const JSON: [(&str, &str); 1] = [("content-type", "application/json")];
const PROOF_KEY: [u8; 16] = *b"test-proof-key!!";

fn wasm() -> Option<PathBuf> {
    let dir = std::env::var_os("AGENTWARD_WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/wasm32-wasip1/release")
        });
    let wasm = dir.join("scope_fga.wasm");
    if wasm.exists() {
        return Some(wasm);
    }
    let build = "cargo build --release --target wasm32-wasip1 -p scope-fga";
    if std::env::var_os("CI").is_some() {
        panic!("{} is not built (CI is set): run `{build}`", wasm.display());
    }
    eprintln!("skipped: {} is not built; run `{build}`", wasm.display());
    None
}

fn options() -> HostOptions {
    let shared = SharedData::new();
    shared.set(KEY_NAME, &PROOF_KEY, 0).unwrap();
    HostOptions {
        start_time: UNIX_EPOCH + Duration::from_secs(START),
        shared_data: shared,
        ..HostOptions::default()
    }
}

fn policy() -> Value {
    json!({
        "resource": "https://api.example.com",
        "issuers": [{"issuer": "https://idp.example.com/", "audiences": ["https://api.example.com"],
                     "jwks_uri": "https://idp.example.com/jwks.json", "jwks_cluster": "idp"}],
        "routes": [
            {"match": {"methods": ["GET"], "path": "/health"}},
            {"match": {"methods": ["GET"], "path": "/documents/{id}"},
             "fga": {"scopes": {"all": ["docs:read"]},
                     "checks": [{"relation": "viewer", "object": "document:{path.id}"}]}},
            {"match": {"methods": ["POST"], "path": "/accounts/{account}/trades"},
             "fga": {"scopes": {"any": ["trade", "admin"]}, "principal": "both",
                     "checks": [{"relation": "trader", "object": "account:{path.account}"}],
                     "contextual_tuples": [{"user": "agent:{agent}", "relation": "acts_for", "object": "user:{sub}"}]}},
            {"match": {"methods": ["POST"], "path": "/transfers"},
             "fga": {"checks": [{"relation": "owner", "object": "account:{body.from}"}],
                     "max_body_bytes": 64}},
            {"match": {"methods": ["POST"], "path": "/rag/search"},
             "fga": {"filter": {"items": "results", "id": "id", "object": "document:{id}",
                                "relation": "viewer", "max_body_bytes": 4096}}},
            {"match": {"methods": ["POST"], "path": "/mcp"},
             "mcp": {"tools": {
                "get_quote": {},
                "place_order": {"scopes": ["trade"], "fga": {"principal": "both",
                    "checks": [{"relation": "can_use", "object": "tool:{tool}"}]}},
                "wire_funds": {"fga": {"principal": "both",
                    "checks": [{"relation": "can_use", "object": "tool:{tool}"},
                               {"relation": "owner", "object": "account:{body.account}"}]}},
                "admin_reset": {"scopes": ["admin"]}
             },
             "prompts": {
                "brief": {"scopes": ["docs:read"]},
                "board_pack": {"fga": {"checks": [{"relation": "viewer", "object": "prompt:board_pack"}]}}
             },
             "unlisted_prompts": "deny",
             "resources": {"notes://outlook": {"scopes": ["admin"]}}}}
        ],
        "fga": {"cluster": "vault", "authority": "vault.local", "store_id": "01STORE",
                "authorization_model_id": "01MODEL", "preshared_key": "fga-key",
                "batch_limit": 5, "cache_seconds": 10}
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
    plugin_with(&policy())
}

/// Who a request is for, as jwt-identity would have verified it.
struct Who<'a> {
    sub: &'a str,
    agent: &'a str,
    scope: &'a str,
}

const ALICE: Who = Who {
    sub: "alice",
    agent: "bot",
    scope: "docs:read trade",
};

/// Request headers as jwt-identity leaves them, proof included.
fn request(host: &Host, method: &str, path: &str, who: &Who) -> (HttpContext, Action) {
    let req = host.http_context().expect("an HTTP context");
    let issuer = "https://idp.example.com/";
    let proof = ProofKey::from_bytes(&PROOF_KEY).unwrap().prove(
        |name| match name {
            "x-agentward-sub" => Some(who.sub),
            "x-agentward-agent" => Some(who.agent),
            "x-agentward-scope" => Some(who.scope),
            "x-agentward-issuer" => Some(issuer),
            _ => None,
        },
        TOKEN,
    );
    let authorization = format!("Bearer {TOKEN}");
    let headers = [
        (":method", method),
        (":path", path),
        (":authority", "api.example.com"),
        ("authorization", authorization.as_str()),
        ("x-agentward-sub", who.sub),
        ("x-agentward-agent", who.agent),
        ("x-agentward-scope", who.scope),
        ("x-agentward-issuer", issuer),
        (PROOF, proof.as_str()),
    ];
    let action = req.request_headers(&headers, true).expect("no trap");
    (req, action)
}

fn pending_call(host: &Host, req: &HttpContext) -> HttpCall {
    let tokens = req.record().http_calls;
    let token = *tokens.last().expect("a callout");
    let call = host
        .http_calls()
        .into_iter()
        .find(|c| c.token == token)
        .unwrap();
    assert_eq!(call.state, CallState::Pending);
    call
}

fn call_body(call: &HttpCall) -> Value {
    serde_json::from_slice(&call.body).unwrap()
}

fn local_json(req: &HttpContext, status: u32) -> Value {
    let record = req.record();
    let answer = record.local_response.clone().expect("a local answer");
    assert_eq!(answer.status, status, "{}", answer.body_text());
    assert!(!record.sent_upstream());
    let body = answer.body_text();
    assert!(!body.contains(TOKEN) && !body.contains("fga-key"));
    serde_json::from_str(&body).expect("a JSON body")
}

fn metric(host: &Host, name: &str) -> u64 {
    host.metric(name).map_or(0, |m| m.value)
}

/// Answers every check of a call: allowed when `may(user, object)`.
fn answer_checks(host: &Host, call: &HttpCall, may: impl Fn(&str, &str) -> bool) {
    let body = call_body(call);
    let verdict = |c: &Value| {
        may(
            c["tuple_key"]["user"].as_str().unwrap(),
            c["tuple_key"]["object"].as_str().unwrap(),
        )
    };
    let answer = match body["checks"].as_array() {
        None => json!({ "allowed": verdict(&body) }),
        Some(checks) => {
            let result: serde_json::Map<String, Value> = checks
                .iter()
                .map(|c| {
                    (
                        c["correlation_id"].as_str().unwrap().to_string(),
                        json!({ "allowed": verdict(c) }),
                    )
                })
                .collect();
            json!({ "result": result })
        }
    };
    host.answer_http_call(call.token, 200, &JSON, answer.to_string().as_bytes())
        .unwrap();
}

#[test]
fn an_allowed_request_is_checked_once_then_served_from_the_shared_cache() {
    let Some(host) = plugin() else { return };
    let (req, action) = request(&host, "GET", "/documents/7", &ALICE);
    assert_eq!(action, Action::Pause);
    let call = pending_call(&host, &req);
    assert_eq!(call.cluster, "vault");
    assert_eq!(call.header(":path"), Some("/stores/01STORE/check"));
    assert_eq!(call.header(":authority"), Some("vault.local"));
    assert_eq!(call.header("authorization"), Some("Bearer fga-key"));
    assert_eq!(
        call_body(&call),
        json!({"tuple_key": {"user": "user:alice", "relation": "viewer", "object": "document:7"},
               "authorization_model_id": "01MODEL"})
    );
    host.answer_http_call(call.token, 200, &JSON, br#"{"allowed":true}"#)
        .unwrap();
    assert!(req.record().sent_upstream());

    let (again, action) = request(&host, "GET", "/documents/7", &ALICE);
    assert_eq!(action, Action::Continue);
    assert!(again.record().http_calls.is_empty());
    // Allowed requests are counted on the tick (no metric call per request).
    host.tick().unwrap();
    assert_eq!(metric(&host, "agentward.fga.allowed"), 2);
    assert_eq!(metric(&host, "agentward.fga.fga_call"), 1);

    let (open, action) = request(&host, "GET", "/health", &ALICE);
    assert_eq!(action, Action::Continue);
    assert!(open.record().sent_upstream());
}

#[test]
fn a_missing_scope_gets_the_step_up_challenge_without_a_check() {
    let Some(host) = plugin() else { return };
    let reader = Who {
        scope: "profile",
        ..ALICE
    };
    let (req, _) = request(&host, "GET", "/documents/7", &reader);
    let body = local_json(&req, 403);
    assert_eq!(body["error"], "insufficient_scope");
    let record = req.record();
    let challenge = record
        .local_response
        .unwrap()
        .headers
        .get("www-authenticate")
        .unwrap()
        .to_string();
    assert!(challenge.contains("error=\"insufficient_scope\""));
    assert!(challenge.contains("scope=\"docs:read\""));
    assert!(record.http_calls.is_empty());
}

#[test]
fn a_denial_names_the_relation_and_nobody_s_ids() {
    let Some(host) = plugin() else { return };
    let (req, _) = request(&host, "GET", "/documents/secret-9", &ALICE);
    let call = pending_call(&host, &req);
    host.answer_http_call(call.token, 200, &JSON, br#"{"allowed":false}"#)
        .unwrap();
    let body = local_json(&req, 403);
    assert_eq!(body["reason"], "fga_denied");
    assert_eq!(body["relation"], "viewer");
    assert!(!body.to_string().contains("secret-9") && !body.to_string().contains("alice"));
    assert_eq!(metric(&host, "agentward.fga.denied"), 1);
}

#[test]
fn the_agent_is_denied_where_the_user_is_allowed_with_the_contextual_tuple_sent() {
    let Some(host) = plugin() else { return };
    let (req, _) = request(&host, "POST", "/accounts/acc-1/trades", &ALICE);
    let call = pending_call(&host, &req);
    let body = call_body(&call);
    assert_eq!(call.header(":path"), Some("/stores/01STORE/batch-check"));
    assert_eq!(
        body["checks"][0]["contextual_tuples"]["tuple_keys"][0],
        json!({"user": "agent:bot", "relation": "acts_for", "object": "user:alice"})
    );
    answer_checks(&host, &call, |user, _| user == "user:alice");
    let body = local_json(&req, 403);
    assert_eq!(body["principal"], "agent");
    assert_eq!(body["relation"], "trader");
}

#[test]
fn an_fga_service_down_slow_or_answering_garbage_is_503_never_forwarded() {
    let Some(host) = plugin() else { return };
    let (req, _) = request(&host, "GET", "/documents/1", &ALICE);
    host.fail_http_call(pending_call(&host, &req).token)
        .unwrap();
    assert_eq!(local_json(&req, 503)["reason"], "fga_unavailable");

    let (req, _) = request(&host, "GET", "/documents/2", &ALICE);
    let call = pending_call(&host, &req);
    host.answer_http_call(call.token, 200, &JSON, b"<html>oops</html>")
        .unwrap();
    assert_eq!(local_json(&req, 503)["reason"], "fga_bad_answer");

    let (req, _) = request(&host, "GET", "/documents/3", &ALICE);
    let call = pending_call(&host, &req);
    host.answer_http_call(call.token, 500, &JSON, b"{}")
        .unwrap();
    assert_eq!(local_json(&req, 503)["reason"], "fga_error");
    assert_eq!(metric(&host, "agentward.fga.unavailable"), 3);
}

#[test]
fn an_unknown_fga_cluster_is_503() {
    let mut p = policy();
    p["fga"]["cluster"] = json!("nowhere");
    let Some(host) = plugin_with(&p) else { return };
    host.fail_hostcall("proxy_http_call", Status::BadArgument);
    let (req, _) = request(&host, "GET", "/documents/1", &ALICE);
    assert_eq!(local_json(&req, 503)["reason"], "fga_unavailable");
    assert!(!host.is_broken());
}

#[test]
fn forged_identities_and_paths_not_in_normal_form_are_refused() {
    let Some(host) = plugin() else { return };
    let req = host.http_context().unwrap();
    let authorization = format!("Bearer {TOKEN}");
    req.request_headers(
        &[
            (":method", "GET"),
            (":path", "/documents/7"),
            ("authorization", authorization.as_str()),
            ("x-agentward-sub", "alice"),
            ("x-agentward-issuer", "https://idp.example.com/"),
            ("x-agentward-scope", "docs:read"),
            (PROOF, "forged"),
        ],
        true,
    )
    .unwrap();
    assert_eq!(local_json(&req, 401)["reason"], "identity_unproven");
    for path in [
        "//documents/7",
        "/health/../documents/7",
        "/documents/%2e%2e/7",
    ] {
        let (req, _) = request(&host, "GET", path, &ALICE);
        assert_eq!(local_json(&req, 400)["error"], "invalid_request", "{path}");
    }
}

/// A RAG search answered by the upstream with these results; returns the
/// request after the response went through the plugin.
fn rag_search(host: &Host, results: &Value, may: impl Fn(&str, &str) -> bool) -> HttpContext {
    let (req, action) = request(host, "POST", "/rag/search", &ALICE);
    assert_eq!(action, Action::Continue);
    let body = json!({"query": "research", "results": results}).to_string();
    let len = body.len().to_string();
    let action = req
        .response_headers(
            &[
                (":status", "200"),
                ("content-type", "application/json"),
                ("content-length", len.as_str()),
            ],
            false,
        )
        .unwrap();
    assert_eq!(action, Action::Continue);
    assert_eq!(req.record().response_headers.get("content-length"), None);
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    assert_eq!(req.response_body(first, false).unwrap(), Action::Pause);
    assert!(req.record().response_body.is_empty());
    req.response_body(rest, true).unwrap();
    while let Some(call) = host
        .http_calls()
        .into_iter()
        .find(|c| c.state == CallState::Pending)
    {
        answer_checks(host, &call, &may);
    }
    req
}

#[test]
fn a_rag_search_of_ten_documents_gives_exactly_the_four_the_user_may_see() {
    let Some(host) = plugin() else { return };
    let results: Vec<Value> = (0..10)
        .map(|i| json!({"id": format!("n{i}"), "title": format!("note {i}")}))
        .collect();
    let visible = ["document:n1", "document:n4", "document:n5", "document:n8"];
    let req = rag_search(&host, &json!(results), |user, object| {
        user == "user:alice" && visible.contains(&object)
    });
    let out: Value = serde_json::from_slice(&req.record().response_body).unwrap();
    let ids: Vec<&str> = out["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["n1", "n4", "n5", "n8"]);
    assert_eq!(out["query"], "research");
    // Ten checks, batched by five.
    assert_eq!(req.record().http_calls.len(), 2);
    assert_eq!(metric(&host, "agentward.fga.filtered"), 1);
}

#[test]
fn a_response_that_cannot_be_filtered_is_replaced_never_passed_on() {
    let Some(host) = plugin() else { return };
    for (body, reason) in [
        ("<html>results</html>".to_string(), "fga_filter_not_json"),
        (
            json!({"results": [{"id": "n1"}], "x": "y".repeat(5000)}).to_string(),
            "fga_filter_too_large",
        ),
        (
            json!({"hits": [{"id": "n1"}]}).to_string(),
            "fga_filter_shape",
        ),
    ] {
        let (req, _) = request(&host, "POST", "/rag/search", &ALICE);
        req.response_headers(&[(":status", "200")], false).unwrap();
        req.response_body(body.as_bytes(), true).unwrap();
        let out = String::from_utf8(req.record().response_body).unwrap();
        assert!(!out.contains("n1") && !out.contains("results"), "{out}");
        let out: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(out["reason"], reason);
        assert!(req.record().http_calls.is_empty());
    }
    // The FGA service down while filtering: replaced too.
    let (req, _) = request(&host, "POST", "/rag/search", &ALICE);
    req.response_headers(&[(":status", "200")], false).unwrap();
    req.response_body(br#"{"results":[{"id":"n1"},{"id":"n2"}]}"#, true)
        .unwrap();
    host.fail_http_call(pending_call(&host, &req).token)
        .unwrap();
    let out: Value = serde_json::from_slice(&req.record().response_body).unwrap();
    assert_eq!(out["reason"], "fga_unavailable");
}

#[test]
fn an_error_response_passes_as_it_came() {
    let Some(host) = plugin() else { return };
    let (req, _) = request(&host, "POST", "/rag/search", &ALICE);
    req.response_headers(&[(":status", "500"), ("content-length", "5")], false)
        .unwrap();
    assert_eq!(req.response_body(b"oops!", true).unwrap(), Action::Continue);
    assert_eq!(req.record().response_body, b"oops!");
    assert_eq!(
        req.record().response_headers.get("content-length"),
        Some("5")
    );
}

#[test]
fn a_policy_without_the_fga_section_is_refused() {
    let mut p = policy();
    p.as_object_mut().unwrap().remove("fga");
    p["routes"] = json!([{"match": {"path": "/a"}}]);
    let Some(path) = wasm() else { return };
    let host = Host::load(path, options()).unwrap();
    assert_eq!(host.configure(p.to_string()), Ok(false));
    assert!(host.logged("fga"));
}

/// An MCP POST through the plugin: headers (with `Mcp-Method` and
/// `Mcp-Name` when given), then the JSON-RPC body.
fn mcp_request(host: &Host, body: &Value, method: Option<&str>, name: Option<&str>) -> HttpContext {
    let req = host.http_context().expect("an HTTP context");
    let issuer = "https://idp.example.com/";
    let who = ALICE;
    let proof = ProofKey::from_bytes(&PROOF_KEY).unwrap().prove(
        |n| match n {
            "x-agentward-sub" => Some(who.sub),
            "x-agentward-agent" => Some(who.agent),
            "x-agentward-scope" => Some(who.scope),
            "x-agentward-issuer" => Some(issuer),
            _ => None,
        },
        TOKEN,
    );
    let authorization = format!("Bearer {TOKEN}");
    let mut headers = vec![
        (":method", "POST"),
        (":path", "/mcp"),
        ("content-type", "application/json"),
        ("authorization", authorization.as_str()),
        ("x-agentward-sub", who.sub),
        ("x-agentward-agent", who.agent),
        ("x-agentward-scope", who.scope),
        ("x-agentward-issuer", issuer),
        (PROOF, proof.as_str()),
    ];
    if let Some(m) = method {
        headers.push(("mcp-method", m));
    }
    if let Some(n) = name {
        headers.push(("mcp-name", n));
    }
    assert_eq!(
        req.request_headers(&headers, false).unwrap(),
        Action::Continue,
        "the body is read"
    );
    req.request_body(body.to_string().as_bytes(), true).unwrap();
    req
}

fn tools_answer(names: &[&str]) -> String {
    let tools: Vec<Value> = names
        .iter()
        .map(|n| json!({"name": n, "inputSchema": {"type": "object"}}))
        .collect();
    json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}}).to_string()
}

fn listed(body: &[u8]) -> Vec<String> {
    let v: Value = serde_json::from_slice(body).unwrap();
    v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

const ALL_TOOLS: [&str; 5] = [
    "get_quote",
    "place_order",
    "wire_funds",
    "admin_reset",
    "drop_tables",
];

#[test]
fn tools_list_keeps_only_the_tools_the_user_and_the_agent_may_use() {
    let Some(host) = plugin() else { return };
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let req = mcp_request(&host, &list, Some("tools/list"), None);
    assert!(req.record().sent_upstream());
    req.response_headers(
        &[(":status", "200"), ("content-type", "application/json")],
        false,
    )
    .unwrap();
    req.response_body(tools_answer(&ALL_TOOLS).as_bytes(), true)
        .unwrap();
    let call = pending_call(&host, &req);
    let asked: Vec<String> = call_body(&call)["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["tuple_key"]["user"].as_str().unwrap(),
                c["tuple_key"]["object"].as_str().unwrap()
            )
        })
        .collect();
    // The owner check needs a call's arguments: not asked for the list.
    assert_eq!(
        asked,
        [
            "user:alice tool:place_order",
            "agent:bot tool:place_order",
            "user:alice tool:wire_funds",
            "agent:bot tool:wire_funds"
        ]
    );
    // The agent may not use wire_funds (dual authorization).
    answer_checks(&host, &call, |user, object| {
        !(user == "agent:bot" && object == "tool:wire_funds")
    });
    assert_eq!(
        listed(&req.record().response_body),
        ["get_quote", "place_order"]
    );
}

#[test]
fn an_event_stream_list_is_cut_too() {
    let Some(host) = plugin() else { return };
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let req = mcp_request(&host, &list, None, None);
    req.response_headers(
        &[(":status", "200"), ("content-type", "text/event-stream")],
        false,
    )
    .unwrap();
    let stream = format!(
        "event: message\ndata: {}\n\n",
        tools_answer(&["get_quote", "drop_tables", "admin_reset"])
    );
    req.response_body(stream.as_bytes(), true).unwrap();
    let out = String::from_utf8(req.record().response_body).unwrap();
    let data = out.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    assert_eq!(listed(data.as_bytes()), ["get_quote"]);
    assert!(out.starts_with("event: message\n"));
}

#[test]
fn a_hidden_or_unlisted_tool_is_refused_at_tools_call() {
    let Some(host) = plugin() else { return };
    for tool in ["drop_tables", "admin_reset"] {
        let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                          "params": {"name": tool, "arguments": {}}});
        let req = mcp_request(&host, &call, Some("tools/call"), Some(tool));
        let record = req.record();
        assert!(!record.sent_upstream());
        let answer = record.local_response.expect("answered");
        let body: Value = serde_json::from_str(&answer.body_text()).unwrap();
        if tool == "drop_tables" {
            assert_eq!(
                (answer.status, body["error"]["code"].as_i64()),
                (200, Some(-32602))
            );
            assert_eq!(body["id"], 7);
        } else {
            assert_eq!(answer.status, 403);
            assert_eq!(body["error"], "insufficient_scope");
        }
    }
}

#[test]
fn a_tool_call_is_checked_with_its_arguments_and_may_go_on() {
    let Some(host) = plugin() else { return };
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                      "params": {"name": "wire_funds", "arguments": {"account": "acc-9", "amount": 5}}});
    let req = mcp_request(&host, &call, Some("tools/call"), Some("wire_funds"));
    let fga = pending_call(&host, &req);
    let objects: Vec<String> = call_body(&fga)["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["tuple_key"]["object"].as_str().unwrap().to_string())
        .collect();
    assert!(
        objects.contains(&"account:acc-9".to_string()),
        "{objects:?}"
    );
    answer_checks(&host, &fga, |_, _| true);
    assert!(req.record().sent_upstream());
    assert_eq!(req.record().request_body, call.to_string().as_bytes());

    // Another account: can_use is cached now, the owner checks are asked.
    let other = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                       "params": {"name": "wire_funds", "arguments": {"account": "acc-10"}}});
    let req = mcp_request(&host, &other, Some("tools/call"), Some("wire_funds"));
    let fga = pending_call(&host, &req);
    answer_checks(&host, &fga, |user, object| {
        !(user == "agent:bot" && object == "account:acc-10")
    });
    let body = local_json(&req, 403);
    assert_eq!(
        (body["relation"].as_str(), body["principal"].as_str()),
        (Some("owner"), Some("agent"))
    );
}

#[test]
fn headers_that_disagree_with_the_body_get_32020() {
    let Some(host) = plugin() else { return };
    let call = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                      "params": {"name": "drop_tables", "arguments": {}}});
    // Decided as the harmless get_quote from the header, the body calls another.
    let req = mcp_request(&host, &call, Some("tools/call"), Some("get_quote"));
    let record = req.record();
    let answer = record.local_response.expect("answered");
    assert_eq!(answer.status, 400);
    let body: Value = serde_json::from_str(&answer.body_text()).unwrap();
    assert_eq!(body["error"]["code"], -32020);
    // A list header over a call body.
    let req = mcp_request(&host, &call, Some("tools/list"), None);
    assert_eq!(req.record().local_response.unwrap().status, 400);
    // Not JSON-RPC at all.
    let req = mcp_request(&host, &json!([call]), None, None);
    assert_eq!(req.record().local_response.unwrap().status, 400);
}

/// A POST to `/transfers` for alice: headers (end of stream only when
/// there is no body), then the body in the chunks given.
fn transfer(host: &Host, chunks: &[&[u8]]) -> HttpContext {
    let req = host.http_context().expect("an HTTP context");
    let issuer = "https://idp.example.com/";
    let who = ALICE;
    let proof = ProofKey::from_bytes(&PROOF_KEY).unwrap().prove(
        |n| match n {
            "x-agentward-sub" => Some(who.sub),
            "x-agentward-agent" => Some(who.agent),
            "x-agentward-scope" => Some(who.scope),
            "x-agentward-issuer" => Some(issuer),
            _ => None,
        },
        TOKEN,
    );
    let authorization = format!("Bearer {TOKEN}");
    let headers = [
        (":method", "POST"),
        (":path", "/transfers"),
        ("content-type", "application/json"),
        ("authorization", authorization.as_str()),
        ("x-agentward-sub", who.sub),
        ("x-agentward-agent", who.agent),
        ("x-agentward-scope", who.scope),
        ("x-agentward-issuer", issuer),
        (PROOF, proof.as_str()),
    ];
    let action = req.request_headers(&headers, chunks.is_empty()).unwrap();
    if chunks.is_empty() {
        return req;
    }
    // Trap 1: a decision on the body lets the headers go on.
    assert_eq!(action, Action::Continue);
    for (i, chunk) in chunks.iter().enumerate() {
        req.request_body(chunk, i + 1 == chunks.len()).unwrap();
    }
    req
}

#[test]
fn a_route_check_reads_the_body_to_its_end_and_decides_on_it() {
    let Some(host) = plugin() else { return };
    let req = transfer(&host, &[br#"{"amount": 5, "#, br#""from": "acc-1"}"#]);
    let fga = pending_call(&host, &req);
    assert_eq!(
        call_body(&fga)["tuple_key"],
        json!({"user": "user:alice", "relation": "owner", "object": "account:acc-1"})
    );
    answer_checks(&host, &fga, |_, _| true);
    assert!(req.record().sent_upstream());
    assert_eq!(
        req.record().request_body,
        br#"{"amount": 5, "from": "acc-1"}"#
    );

    let req = transfer(&host, &[br#"{"from": "acc-2"}"#]);
    let fga = pending_call(&host, &req);
    answer_checks(&host, &fga, |_, object| object != "account:acc-2");
    let body = local_json(&req, 403);
    assert_eq!(body["relation"], "owner");
    // The first decision is cached: no call.
    let req = transfer(&host, &[br#"{"from": "acc-1"}"#]);
    assert!(req.record().http_calls.is_empty());
    assert!(req.record().sent_upstream());
    assert!(metric(&host, "agentward.fga.body_read") >= 3);
}

#[test]
fn a_route_body_over_the_bound_or_not_json_is_refused() {
    let Some(host) = plugin() else { return };
    let long = format!(r#"{{"from": "acc-1", "memo": "{}"}}"#, "x".repeat(80));
    let req = transfer(&host, &[long.as_bytes()]);
    let record = req.record();
    assert_eq!(record.local_response.expect("answered").status, 413);
    assert!(record.http_calls.is_empty());

    for body in [&b"from=acc-1"[..], br#"{"from": "acc-1", "from": "acc-2"}"#] {
        let req = transfer(&host, &[body]);
        let answer = local_json(&req, 400);
        assert_eq!(answer["reason"], "fga_body_not_json");
    }
    // A field that is absent, a request without a body.
    let req = transfer(&host, &[br#"{"to": "acc-1"}"#]);
    local_json(&req, 400);
    let req = transfer(&host, &[]);
    local_json(&req, 400);
}

#[test]
fn prompts_and_resources_lists_are_cut_and_a_hidden_prompt_is_refused() {
    let Some(host) = plugin() else { return };
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "prompts/list"});
    let req = mcp_request(&host, &list, Some("prompts/list"), None);
    req.response_headers(
        &[(":status", "200"), ("content-type", "application/json")],
        false,
    )
    .unwrap();
    let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {"prompts": [
        {"name": "brief"}, {"name": "board_pack"}, {"name": "unlisted"}]}});
    req.response_body(answer.to_string().as_bytes(), true)
        .unwrap();
    let call = pending_call(&host, &req);
    assert_eq!(
        call_body(&call)["tuple_key"]["object"],
        json!("prompt:board_pack")
    );
    answer_checks(&host, &call, |_, _| false);
    let out: Value = serde_json::from_slice(&req.record().response_body).unwrap();
    assert_eq!(out["result"]["prompts"], json!([{"name": "brief"}]));

    // Resources by URI: one needs a scope alice lacks; unlisted ones pass.
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "resources/list"});
    let req = mcp_request(&host, &list, None, None);
    req.response_headers(
        &[(":status", "200"), ("content-type", "application/json")],
        false,
    )
    .unwrap();
    let answer = json!({"jsonrpc": "2.0", "id": 2, "result": {"resources": [
        {"uri": "notes://outlook", "name": "o"}, {"uri": "notes://faq", "name": "f"}]}});
    req.response_body(answer.to_string().as_bytes(), true)
        .unwrap();
    let out: Value = serde_json::from_slice(&req.record().response_body).unwrap();
    assert_eq!(
        out["result"]["resources"],
        json!([{"uri": "notes://faq", "name": "f"}])
    );

    // Getting one left out: answered as the server would a missing one.
    let get = json!({"jsonrpc": "2.0", "id": 3, "method": "prompts/get",
                     "params": {"name": "unlisted"}});
    let req = mcp_request(&host, &get, Some("prompts/get"), Some("unlisted"));
    let record = req.record();
    assert!(!record.sent_upstream());
    let body: Value =
        serde_json::from_str(&record.local_response.expect("answered").body_text()).unwrap();
    assert_eq!(body["error"]["code"], -32602);
    let read = json!({"jsonrpc": "2.0", "id": 4, "method": "resources/read",
                      "params": {"uri": "notes://outlook"}});
    let req = mcp_request(
        &host,
        &read,
        Some("resources/read"),
        Some("notes://outlook"),
    );
    local_json(&req, 403);
    let get = json!({"jsonrpc": "2.0", "id": 5, "method": "prompts/get",
                     "params": {"name": "brief"}});
    let req = mcp_request(&host, &get, Some("prompts/get"), Some("brief"));
    assert!(req.record().sent_upstream());
}
