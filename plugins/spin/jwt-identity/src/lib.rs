//! jwt-identity as a Spin component (wasi:http 0.2): verifies the bearer
//! JWT and sends the request on to the `next` hop with the verified
//! identity as `x-agentward-*` headers (every inbound one stripped) and,
//! for the components after it, the proof's binding
//! ([`agentward_spin::config::BINDING_HEADER`]).
//! Decisions live in `agentward_core::authn`, as in the Envoy filter; this
//! file reads the request, fetches the issuer's keys when core holds the
//! request for them, and carries the step out.
//!
//! A Spin host starts a fresh instance per request, so the keys of an
//! issuer with a `jwks_uri` are fetched for the request that needs them
//! and verified tokens are not cached across requests. Signatures are
//! verified in pure Rust.

use agentward_core::authn::{Authenticator, Decision, RequestHead};
use agentward_core::response;
use agentward_core::signature::PureRust;
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
    let Some(now) = now_ms() else {
        return respond(out, &response::clock_unavailable()).await;
    };
    let mut auth = Authenticator::new(policy);
    match agentward_spin::proof_key() {
        Some(key) => auth.set_proof_key(key),
        None => {
            log("agentward: no `proof_key` variable: token-exchange will refuse these identities")
        }
    }
    let mut head = Head::of(&request);
    let decision = decide(&mut auth, &head, now).await;
    match decision.step {
        Step::Continue(edits) => {
            // Inbound identity headers go, the verified ones come in, and
            // the proof's binding goes to the components after this one
            // (Envoy: filter state; `send_on` keeps it from the upstream).
            head.headers.retain(|(name, _)| !auth.strips(name));
            if let Some(binding) = &decision.binding {
                let name = config::BINDING_HEADER.to_string();
                head.headers.push((name, binding.as_bytes().to_vec()));
            }
            forward(request, head, &edits, |_| false, out).await
        }
        Step::Respond(answer) => respond(out, &answer).await,
        Step::Hold { .. } => respond(out, &auth.wait_timed_out()).await,
        Step::Call(_) | Step::ReadBody { .. } => {
            let answer = response::unavailable(
                "unsupported_step",
                "jwt-identity decided a step it never takes",
            );
            respond(out, &answer).await
        }
    }
}

/// Decides; when core holds the request for an issuer's keys, fetches them
/// now (this instance lives for this request only) and decides again.
async fn decide(auth: &mut Authenticator, head: &Head, now: u64) -> Decision {
    let token_header = auth.policy().identity.token_header.clone();
    let request = RequestHead {
        method: &head.method,
        path: &head.path,
        authorization: head.header("authorization"),
        token_header: token_header.as_deref().and_then(|name| head.header(name)),
    };
    let decision = auth.decide(&request, now, &PureRust);
    let (Step::Hold { .. }, Some(issuer)) = (&decision.step, decision.waits_for) else {
        return decision;
    };
    for fetch in auth.fetches_due(now) {
        if fetch.issuer != issuer {
            continue;
        }
        let answer = call(&fetch.call).await;
        if !auth.jwks_fetched(fetch.issuer, &answer, now_ms().unwrap_or(now)) {
            log(&format!(
                "agentward: JWKS fetch for issuer {issuer} failed (status {:?})",
                answer.status()
            ));
        }
    }
    auth.decide(&request, now_ms().unwrap_or(now), &PureRust)
}
