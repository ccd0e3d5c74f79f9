//! token-exchange as a Spin component (wasi:http 0.2): for routes with an
//! `exchange`, swaps the user's bearer token for an upstream token from the
//! vault and sends the request on to the `next` hop with it in
//! `Authorization`. Decisions live in `agentward_core::exchange::Exchanger`,
//! as in the Envoy filter; this file reads the request, makes the vault call
//! the exchanger asks for, and carries the step out.
//!
//! jwt-identity's proof key comes from the `proof_key` variable (Envoy keeps
//! it in shared data); a Spin host starts a fresh instance per request, so
//! exchanged tokens are not cached across requests (the vault caches the
//! upstream token itself).

use agentward_core::exchange::{Decision, Exchanger, RequestHead};
use agentward_core::identity::ReceivedIdentity;
use agentward_core::proof::KEY_NAME;
use agentward_core::response;
use agentward_core::shared_cache::{MemoryCache, SharedCache};
use agentward_core::step::Step;
use agentward_spin::{call, config, forward, log, now_ms, respond, Head};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

#[http_component]
async fn handle(request: IncomingRequest, out: ResponseOutparam) {
    let policy = match agentward_spin::policy() {
        Ok(policy) => policy,
        Err(answer) => return respond(out, &answer).await,
    };
    let mut exchanger = match Exchanger::new(policy, config::env) {
        Ok(exchanger) => exchanger,
        Err(e) => {
            log(&format!("agentward: {e}"));
            let answer = response::unavailable("not_configured", "the gateway has no valid policy");
            return respond(out, &answer).await;
        }
    };
    let mut cache = MemoryCache::new();
    if let Some(key) = agentward_spin::proof_key() {
        cache.set(KEY_NAME, &key.to_bytes());
    }
    exchanger.read_proof_key(&cache);
    let head = Head::of(&request);
    let decision = decide(&mut exchanger, &head, &mut cache).await;
    if let Some(warning) = &decision.warning {
        log(warning);
    }
    match decision.step {
        Step::Continue(edits) => forward(request, head, &edits, |_| false, out).await,
        Step::Respond(answer) => respond(out, &answer).await,
        Step::Call(_) | Step::Hold { .. } | Step::ReadBody { .. } => {
            let answer = response::unavailable(
                "unsupported_step",
                "token-exchange decided a step it never takes",
            );
            respond(out, &answer).await
        }
    }
}

fn seconds() -> Option<u64> {
    now_ms().map(|ms| ms / 1000)
}

/// Decides; makes the vault call the exchanger asks for and decides on its
/// answer.
async fn decide(exchanger: &mut Exchanger, head: &Head, cache: &mut MemoryCache) -> Decision {
    let request = RequestHead {
        method: &head.method,
        path: &head.path,
        authorization: head.header("authorization"),
        identity: ReceivedIdentity::from_headers(|name| head.header(name)),
    };
    let decision = exchanger.decide(&request, seconds, cache);
    let (Step::Call(callout), Some(pending)) = (&decision.step, decision.pending.clone()) else {
        return decision;
    };
    let answer = call(callout).await;
    exchanger.on_answer(pending, answer, seconds(), cache)
}
