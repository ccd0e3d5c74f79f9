//! ciba-hold as a Spin component (wasi:http 0.2): for routes with an
//! `approval` rule, asks the user to approve the exact request through
//! OpenID CIBA before it goes on. Decisions live in
//! `agentward_core::approval::gate`, as in the Envoy filter; this file
//! reads the request (its body whole), makes the calls the gate asks for
//! through `wasi:http/outgoing-handler`, and sends the request on to the
//! `next` hop or answers.
//!
//! Hold mode waits inside the request: the vault's long-poll (`wait`), or
//! plain polls with the instance asleep in between (`wasi:clocks`), until
//! the user decides or the request expires. Deferred mode answers 202 with
//! the sealed handle and opens it on the retry, as in Envoy. Unlike Envoy,
//! the whole request is buffered before it goes on, so the approval token
//! (`token_header`) is added to requests with a body too. Each held
//! request is its own instance: `max_held_requests` is not counted across
//! them (the host's concurrency limit is what bounds them). A 2025-11-25
//! MCP tool call's pending approval is kept in the app's key-value store
//! (Spin's `default`, as Envoy keeps it in shared data), so the client's
//! retry of the same call finds it; without a store it asks anew.

use agentward_core::approval::gate::{Decision, Gate, Remember, RequestHead, Verdict, Wait};
use agentward_core::approval::rule::APPROVAL_HEADER;
use agentward_core::identity::ReceivedIdentity;
use agentward_core::proof::KEY_NAME;
use agentward_core::response::{self, LocalResponse};
use agentward_core::shared_cache::{MemoryCache, SharedCache};
use agentward_core::step::{BodyStep, Step};
use agentward_spin::{
    body_too_large, call, config, forward, log, now_ms, read_body, relay, respond, send_on, Head,
    KeyValue,
};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;
use std::time::Duration;

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
    let mut keys = Shared {
        proof_key: MemoryCache::new(),
        store: KeyValue::open(),
    };
    if let Some(key) = agentward_spin::proof_key() {
        keys.proof_key.set(KEY_NAME, &key.to_bytes());
    }
    gate.read_proof_key(&keys);
    let mut head = Head::of(&request);
    let decision = {
        let binding = head.binding();
        gate.decide(&RequestHead {
            method: &head.method,
            path: &head.path,
            bearer: binding.as_deref(),
            identity: ReceivedIdentity::from_headers(|name| head.header(name)),
            approval_id: head.header(APPROVAL_HEADER),
            mcp: agentward_core::mcp::McpHeaders::read(|name| head.header(name)),
            protocol_version: head.header("mcp-protocol-version"),
        })
    };
    let (edits, max_bytes, wait) = match (decision.step, decision.wait) {
        (Step::Continue(edits), _) => return forward(request, head, &edits, |_| false, out).await,
        (Step::Respond(answer), _) => return respond(out, &answer).await,
        (Step::ReadBody { edits, max_bytes }, Some(wait)) => (edits, max_bytes, wait),
        _ => return respond(out, &lost()).await,
    };
    head.apply(&edits);
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(answer) => return respond(out, &answer).await,
    };
    if body.len() > max_bytes {
        return respond(out, &body_too_large(max_bytes)).await;
    }
    let Some(now) = now_ms() else {
        return respond(out, &response::clock_unavailable()).await;
    };
    // The whole request is still here: its headers can take the token.
    let decided = gate.on_body(wait, &body, true, now, &keys);
    keys.keep(decided.remember);
    let decision = match (decided.step, decided.wait) {
        (BodyStep::Keep, _) => Decision {
            step: Step::Continue(agentward_core::step::Edits::none()),
            verdict: decided.verdict,
            wait: None,
            body: None,
            remember: None,
        },
        (BodyStep::Replace(new), _) => Decision {
            step: Step::Continue(agentward_core::step::Edits::none()),
            verdict: decided.verdict,
            wait: None,
            body: Some(new),
            remember: None,
        },
        (BodyStep::Respond(answer), _) => return respond(out, &answer).await,
        (BodyStep::Call(callout), Some(wait)) => {
            let answer = call(&callout).await;
            answered(&gate, wait, &answer)
        }
        _ => return respond(out, &lost()).await,
    };
    match settle(&gate, decision, &mut keys).await {
        Ok((edits, rewritten)) => {
            head.apply(&edits);
            match send_on(&head, rewritten.unwrap_or(body)).await {
                Ok(upstream) => relay(out, upstream).await,
                Err(answer) => respond(out, &answer).await,
            }
        }
        Err(answer) => respond(out, &answer).await,
    }
}

/// Carries a decision through its calls and holds until the request goes
/// on (its edits) or is answered.
async fn settle(
    gate: &Gate,
    mut decision: Decision,
    keys: &mut Shared,
) -> Result<(agentward_core::step::Edits, Option<Vec<u8>>), LocalResponse> {
    loop {
        keys.keep(decision.remember.take());
        decision = match (decision.step, decision.wait) {
            (Step::Continue(edits), _) => return Ok((edits, decision.body)),
            (Step::Respond(answer), _) => return Err(answer),
            (Step::Call(callout), Some(wait)) => {
                let answer = call(&callout).await;
                answered(gate, wait, &answer)
            }
            (Step::Hold { until_ms }, Some(wait)) => {
                let Some(now) = now_ms() else {
                    return Err(response::clock_unavailable());
                };
                // This instance serves this request only: it sleeps.
                std::thread::sleep(Duration::from_millis(until_ms.saturating_sub(now)));
                match now_ms() {
                    Some(now) => gate.wake(wait, now),
                    None => return Err(response::clock_unavailable()),
                }
            }
            _ => return Err(lost()),
        };
    }
}

/// What the gate reads: the chain's proof key (a Spin variable) and, for
/// everything else, the app's key-value store.
struct Shared {
    proof_key: MemoryCache,
    store: KeyValue,
}

impl Shared {
    /// Carries out a write the gate asks for (a pending 2025-11-25 MCP
    /// approval kept or forgotten); a lost write only means a new approval.
    fn keep(&mut self, write: Option<Remember>) {
        if let Some(write) = write {
            if !SharedCache::set(&mut self.store, &write.key, &write.value) {
                log("agentward: ciba-hold could not keep a pending MCP approval in the key-value store");
            }
        }
    }
}

impl SharedCache for Shared {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        if key == KEY_NAME {
            return self.proof_key.get(key);
        }
        SharedCache::get(&self.store, key)
    }

    fn set(&mut self, key: &str, value: &[u8]) -> bool {
        SharedCache::set(&mut self.store, key, value)
    }
}

/// The gate's decision on a call's answer, now.
fn answered(gate: &Gate, wait: Wait, answer: &agentward_core::step::Answer) -> Decision {
    match now_ms() {
        Some(now) => gate.on_answer(wait, answer, now),
        None => Decision {
            step: Step::Respond(response::clock_unavailable()),
            verdict: Verdict::AuthorityUnavailable,
            wait: None,
            body: None,
            remember: None,
        },
    }
}

/// The gate lost track of the request (a step it never takes here).
fn lost() -> LocalResponse {
    response::unavailable(
        "approval_state",
        "the gateway lost track of this request's approval",
    )
}
