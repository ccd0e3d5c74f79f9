//! scope-fga as a Spin component (wasi:http 0.2): for routes with an `fga`
//! rule, the token's scopes and the OpenFGA checks; for MCP routes, the
//! tool a `tools/call` names; for routes with a `filter` and MCP lists, the
//! response cut to what the caller may see. Decisions live in
//! `agentward_core::fga::gate`, as in the Envoy filter; this file reads the
//! request (its body whole), makes the checks the gate asks for through
//! `wasi:http/outgoing-handler`, sends the request on to the `next` hop and
//! cuts its answer.
//!
//! A Spin host starts a fresh instance per request: FGA decisions are
//! cached in the app's key-value store (Spin's `default` store), as Envoy
//! caches them in shared data, for the policy's `cache_seconds`; without a
//! store, for this request only. The identity proof is checked
//! against the binding jwt-identity hands on
//! ([`agentward_spin::config::BINDING_HEADER`]).

use agentward_core::fga::gate::{Decision, Gate, RequestHead, ResponsePlan};
use agentward_core::identity::ReceivedIdentity;
use agentward_core::mcp::{self, McpHeaders};
use agentward_core::proof::KEY_NAME;
use agentward_core::response::{self, LocalResponse};
use agentward_core::shared_cache::{MemoryCache, SharedCache};
use agentward_core::step::{BodyStep, Step};
use agentward_spin::KeyValue;
use agentward_spin::{
    body_too_large, call, config, log, read_body, relay, relay_replaced, respond, send_on, Head,
};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

/// FGA decisions: the app's key-value store.
type Decisions = KeyValue;

#[http_component]
async fn handle(request: IncomingRequest, out: ResponseOutparam) {
    let policy = match agentward_spin::policy() {
        Ok(policy) => policy,
        Err(answer) => return respond(out, &answer).await,
    };
    let mut gate = match Gate::new(policy, config::env) {
        Ok(gate) => gate,
        Err(e) => {
            log(&format!("agentward: {e}"));
            let answer = response::unavailable("not_configured", "the gateway has no valid policy");
            return respond(out, &answer).await;
        }
    };
    let mut keys = MemoryCache::new();
    if let Some(key) = agentward_spin::proof_key() {
        keys.set(KEY_NAME, &key.to_bytes());
    }
    gate.read_proof_key(&keys);
    let mut decisions = KeyValue::open();
    let mut head = Head::of(&request);
    let decision = {
        let binding = head.binding();
        let request_head = RequestHead {
            method: &head.method,
            path: &head.path,
            bearer: binding.as_deref(),
            identity: ReceivedIdentity::from_headers(|name| head.header(name)),
            mcp: McpHeaders {
                method: head.header(mcp::METHOD_HEADER),
                name: head.header(mcp::NAME_HEADER),
            },
        };
        gate.decide(&request_head, &keys, &decisions, now())
    };
    let decision = checked(&gate, decision, &mut decisions).await;
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(answer) => return respond(out, &answer).await,
    };
    let plan = match decision.step {
        Step::Continue(edits) => {
            head.apply(&edits);
            decision.response
        }
        Step::Respond(answer) => return respond(out, &answer).await,
        Step::ReadBody { edits, max_bytes } => {
            head.apply(&edits);
            if body.len() > max_bytes {
                return respond(out, &body_too_large(max_bytes)).await;
            }
            let Some(plan) = decision.body else {
                return respond(out, &lost()).await;
            };
            let decision = gate.decide_body(&plan, &body, &decisions, now());
            let decision = checked(&gate, decision, &mut decisions).await;
            match decision.step {
                Step::Continue(_) => decision.response,
                Step::Respond(answer) => return respond(out, &answer).await,
                _ => return respond(out, &lost()).await,
            }
        }
        Step::Call(_) | Step::Hold { .. } => return respond(out, &lost()).await,
    };
    let upstream = match send_on(&head, body).await {
        Ok(upstream) => upstream,
        Err(answer) => return respond(out, &answer).await,
    };
    let Some(plan) = plan else {
        return relay(out, upstream).await;
    };
    // Only a success carries the items; an error (or nothing) passes as it came.
    if !(200..=299).contains(&upstream.status) || upstream.body.is_empty() {
        return relay(out, upstream).await;
    }
    if upstream.body.len() > gate.response_bound(&plan) {
        return respond(out, &gate.too_large()).await;
    }
    let event_stream = upstream.header("content-type").is_some_and(|t| {
        t.trim_start()
            .to_ascii_lowercase()
            .starts_with("text/event-stream")
    });
    match cut(&gate, &plan, event_stream, &upstream.body, &mut decisions).await {
        BodyStep::Keep => relay(out, upstream).await,
        BodyStep::Replace(body) => relay_replaced(out, upstream, body).await,
        BodyStep::Respond(answer) => respond(out, &answer).await,
        BodyStep::Call(_) => respond(out, &lost()).await,
    }
}

/// Unix milliseconds for the decision cache; 0 when the host cannot tell
/// (no cached decision is then fresh).
fn now() -> u64 {
    agentward_spin::now_ms().unwrap_or(0)
}

/// Makes the checks a decision asks for, one after the other, until it
/// goes on or answers.
async fn checked(gate: &Gate, mut decision: Decision, decisions: &mut Decisions) -> Decision {
    loop {
        let Step::Call(callout) = &decision.step else {
            return decision;
        };
        let Some(pending) = decision.pending.take() else {
            return decision;
        };
        let answer = call(callout).await;
        decision = gate.answered(pending, &answer, decisions, now());
    }
}

/// Cuts a response body: the checks the cut asks for, then its last step.
async fn cut(
    gate: &Gate,
    plan: &ResponsePlan,
    event_stream: bool,
    body: &[u8],
    decisions: &mut Decisions,
) -> BodyStep {
    let (mut step, run) = gate.filter_response(plan, event_stream, body, decisions, now());
    let Some(mut run) = run else {
        return step;
    };
    while let BodyStep::Call(callout) = &step {
        let answer = call(callout).await;
        step = gate.response_answered(&mut run, &answer, decisions, now());
    }
    step
}

/// A step scope-fga never takes at this point.
fn lost() -> LocalResponse {
    response::unavailable(
        "unsupported_step",
        "scope-fga decided a step it never takes here",
    )
}
