//! jwt-identity's glue, shared by `jwt_identity.wasm` and
//! `identity_fga.wasm` (jwt-identity and scope-fga in one filter): read the
//! request's head, ask `agentward_core::authn`, apply the answer (the
//! identity headers, the binding for later filters), hold requests whose
//! issuer's keys are being fetched and fetch them from the root. What
//! happens to a request jwt-identity lets go on is the host plugin's
//! ([`Allowed`]): `jwt_identity.wasm` lets it go, `identity_fga.wasm` hands
//! it to scope-fga in the same context.

use crate::held::{self, Released};
use crate::hostcall::{self, Headers};
use crate::{clock_unavailable, log, now_ms, respond, Counter, EnvoyVerifier, Metrics};
use agentward_core::authn::{Authenticator, Decision, JwksFetch, RequestHead, Verdict};
use agentward_core::held::HeldQueue;
use agentward_core::identity::ReceivedIdentity;
use agentward_core::jwt::Rejection;
use agentward_core::response;
use agentward_core::step::{Answer, Edits, Step};
use agentward_core::Policy;
use proxy_wasm::types::{Action, LogLevel};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// A request jwt-identity lets go on, its identity headers set, as the
/// filter's host plugin gets it (still in its headers phase).
pub struct Allowed<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path` as the request goes on (jwt-identity's rewrite, if any).
    pub path: &'a str,
    /// What the identity's proof is bound to (see `agentward_core::proof`).
    pub binding: Option<&'a str>,
    /// The edits made: the identity headers set.
    pub edits: &'a Edits,
    /// The request's headers as read before the edits.
    pub headers: &'a Headers,
}

impl<'a> Allowed<'a> {
    /// The identity headers the request goes on with, as a later filter
    /// would receive them (the inbound ones were stripped).
    pub fn identity(&self) -> ReceivedIdentity<'a> {
        let edits = self.edits;
        ReceivedIdentity::from_headers(|name| edits.value_of(name))
    }
}

/// What jwt-identity did with a request's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Headed {
    /// Decided (let go on, handed on, or answered): the callback's action.
    Decided(Action),
    /// Held until its issuer's keys arrive; the root decides it then.
    Held,
}

impl Headed {
    /// The headers callback's action.
    pub fn action(self) -> Action {
        match self {
            Headed::Decided(action) => action,
            Headed::Held => Action::Pause,
        }
    }
}

/// What a request allowed by the root (after a hold) is handed to, in its
/// context: returns how it was released.
pub type ThenHeld<'f> = &'f mut dyn FnMut(u32, &Allowed<'_>) -> Released;

/// Ticks start JWKS fetches (first, periodic, refetch on unknown `kid`) and
/// time out held requests.
pub const TICK: Duration = Duration::from_millis(250);

/// What a held request waits for, in the 503 sent when too many wait.
const KEYS_FETCHED: &str = "the token issuer's signing keys are fetched";

/// What a request held until its issuer's keys arrive keeps of its head.
struct Waiting {
    issuer: usize,
    method: String,
    path: String,
    authorization: Option<String>,
    token_header: Option<String>,
}

/// jwt-identity's per-VM state, shared by the root and the HTTP contexts.
pub struct State {
    auth: Authenticator,
    verifier: EnvoyVerifier,
    metrics: Metrics,
    /// `allowed` and `cache_hit`, the counters of a cached request.
    cached_counters: [Counter; 2],
    /// Cached requests not yet added to [`State::cached_counters`]: the
    /// common request makes no metric call (added on tick).
    cached: u64,
    held: HeldQueue<Waiting>,
}

impl State {
    fn decide(&mut self, head: &RequestHead<'_>, now_ms: u64) -> Decision {
        let decision = self.auth.decide(head, now_ms, &self.verifier);
        self.count(&decision.verdict);
        decision
    }

    /// Adds the cached requests counted since the last tick.
    fn flush_counts(&mut self) {
        let n = std::mem::take(&mut self.cached);
        for counter in self.cached_counters {
            counter.add(n);
        }
    }

    fn count(&mut self, verdict: &Verdict) {
        let name = match verdict {
            Verdict::Allowed { cached: true } => {
                self.cached += 1;
                return;
            }
            Verdict::Allowed { cached: false } => {
                self.metrics.inc("agentward.jwt.cache_miss");
                self.metrics.inc(if self.verifier.used_foreign() {
                    "agentward.jwt.verify_foreign"
                } else {
                    "agentward.jwt.verify_pure"
                });
                "agentward.jwt.allowed"
            }
            Verdict::Anonymous => "agentward.jwt.anonymous",
            Verdict::Metadata => "agentward.jwt.metadata",
            Verdict::MissingToken => "agentward.jwt.rejected.missing_token",
            Verdict::Rejected(why) => {
                let name = format!("agentward.jwt.rejected.{}", why.code());
                self.metrics.inc(&name);
                return;
            }
            Verdict::KeysPending => "agentward.jwt.keys_pending",
            Verdict::InsufficientScope => "agentward.jwt.rejected.insufficient_scope",
            Verdict::InvalidPath => "agentward.jwt.rejected.invalid_path",
            Verdict::NoRoute => "agentward.jwt.rejected.no_route",
        };
        self.metrics.inc(name);
    }

    /// Carries a decision out on the current context (its headers held):
    /// on going on, the inbound identity headers are stripped first and the
    /// proof's `binding` is left for the filters after this one. Returns
    /// whether the request may continue.
    fn apply(&self, step: &Step, current: &Headers, binding: Option<&str>) -> bool {
        if let (Step::Continue(_), Some(binding)) = (step, binding) {
            // Without it a later filter cannot check the proof and refuses
            // the request (401 identity_unproven): closed, not open.
            if crate::identity::bind(binding).is_err() {
                log(
                    LogLevel::Warn,
                    "agentward: could not leave the identity binding for later filters",
                );
            }
        }
        match step {
            Step::Continue(edits) => {
                if !self.strip_inbound(current) {
                    // Never forward a request whose identity headers are half set.
                    respond(&response::unavailable(
                        "header_edit_failed",
                        "the gateway could not set the identity headers",
                    ));
                    return false;
                }
                crate::step::edit_request(edits)
            }
            Step::Respond(answer) => {
                respond(answer);
                false
            }
            // jwt-identity decides on headers alone and calls out from the
            // root only; a hold is queued by the caller.
            Step::Hold { .. } | Step::Call(_) | Step::ReadBody { .. } => false,
        }
    }

    /// Removes every inbound header [`Authenticator::strips`] names.
    fn strip_inbound(&self, current: &Headers) -> bool {
        let mut ok = true;
        for (name, _) in current.pairs() {
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            if self.auth.strips(name) {
                ok &= hostcall::remove_request_header(name).is_ok();
            }
        }
        ok
    }
}

/// jwt-identity's root: the policy, the JWKS fetches and the requests held
/// for them.
pub struct JwtRoot {
    id: u32,
    state: Option<Rc<RefCell<State>>>,
    /// Callouts under way: token → (issuer, largest answer read).
    fetches: HashMap<u32, (usize, usize)>,
}

impl JwtRoot {
    /// The root context `id`, not configured yet.
    pub fn new(id: u32) -> JwtRoot {
        JwtRoot {
            id,
            state: None,
            fetches: HashMap::new(),
        }
    }

    /// Takes a validated policy: the counters defined, the proof key made
    /// or read, the tick set and the first JWKS fetches started.
    pub fn configure(&mut self, policy: Policy) {
        let mut metrics = Metrics::default();
        let mut names: Vec<String> = [
            "allowed",
            "anonymous",
            "metadata",
            "cache_hit",
            "cache_miss",
            "verify_foreign",
            "verify_pure",
            "keys_pending",
            "jwks_fetch_ok",
            "jwks_fetch_failed",
            "rejected.missing_token",
            "rejected.insufficient_scope",
            "too_many_held",
            "rejected.invalid_path",
            "rejected.no_route",
        ]
        .iter()
        .map(|n| format!("agentward.jwt.{n}"))
        .collect();
        names.extend(
            Rejection::REASONS
                .iter()
                .map(|r| format!("agentward.jwt.rejected.{}", r.code())),
        );
        metrics.define(&names.iter().map(String::as_str).collect::<Vec<_>>());
        let cached_counters =
            ["agentward.jwt.allowed", "agentward.jwt.cache_hit"].map(Counter::define);
        let held = HeldQueue::new(policy.identity.max_held_requests);
        let mut auth = Authenticator::new(policy);
        match crate::proof::shared_key_or_create() {
            Some(key) => auth.set_proof_key(key),
            None => log(
                LogLevel::Error,
                "agentward: no identity proof key in shared data: token-exchange will refuse these identities",
            ),
        }
        self.state = Some(Rc::new(RefCell::new(State {
            auth,
            verifier: EnvoyVerifier::default(),
            metrics,
            cached_counters,
            cached: 0,
            held,
        })));
        if hostcall::set_tick_period(TICK).is_err() {
            log(
                LogLevel::Warn,
                "agentward: no tick period: JWKS refreshes only on demand",
            );
        }
        self.start_fetches();
    }

    /// On the root's tick: the proof key another VM may have made, the
    /// counters, the fetches due, and the held requests overdue (answered
    /// 503, or handed to `then` if decided).
    pub fn tick(&mut self, then: ThenHeld<'_>) {
        // Another VM may have won the race to make the proof key.
        if let (Some(state), Some(key)) = (&self.state, crate::proof::shared_key()) {
            state.borrow_mut().auth.set_proof_key(key);
        }
        if let Some(state) = &self.state {
            state.borrow_mut().flush_counts();
        }
        self.start_fetches();
        let now = now_ms();
        let overdue = self
            .state
            .as_ref()
            .is_some_and(|s| s.borrow().held.any_overdue(now.unwrap_or(u64::MAX)));
        if overdue {
            self.release(None, then);
        }
    }

    /// A callout's answer at the root: whether it was a JWKS fetch (then
    /// the requests held for its issuer are decided, those allowed handed
    /// to `then`).
    pub fn on_call_answer(
        &mut self,
        token: u32,
        headers: usize,
        body_size: usize,
        then: ThenHeld<'_>,
    ) -> bool {
        let Some((issuer, max_bytes)) = self.fetches.remove(&token) else {
            return false;
        };
        let Some(state) = self.state.clone() else {
            return true;
        };
        let answer = crate::step::read_answer(headers, body_size, max_bytes);
        if let Answer::TooLarge { size, .. } = answer {
            log(
                LogLevel::Warn,
                &format!(
                    "agentward: JWKS answer for issuer {issuer} is {size} bytes, over the {max_bytes}-byte limit"
                ),
            );
        }
        let ok = {
            let mut s = state.borrow_mut();
            // Without a clock the keys are kept and refreshed on the next tick.
            let now = now_ms().unwrap_or(0);
            let ok = s.auth.jwks_fetched(issuer, &answer, now);
            let read = matches!(answer, Answer::Response { status: 200, .. });
            s.metrics.inc(if read && ok {
                "agentward.jwt.jwks_fetch_ok"
            } else {
                "agentward.jwt.jwks_fetch_failed"
            });
            ok
        };
        if !ok {
            let status = answer
                .status()
                .map_or("none".to_string(), |s| s.to_string());
            log(
                LogLevel::Warn,
                &format!("agentward: JWKS fetch for issuer {issuer} failed (status {status})"),
            );
        }
        self.release(Some(issuer), then);
        true
    }

    /// A request of this root's VM, with context id `id`.
    pub fn stream(&self, id: u32) -> JwtStream {
        JwtStream {
            id,
            state: self.state.clone(),
        }
    }

    fn start_fetches(&mut self) {
        let Some(state) = self.state.clone() else {
            return;
        };
        let Ok(now) = now_ms() else {
            return; // no clock, no schedule: retried on tick
        };
        let due = state.borrow_mut().auth.fetches_due(now);
        for fetch in due {
            self.dispatch(&state, fetch, now);
        }
    }

    fn dispatch(&mut self, state: &Rc<RefCell<State>>, fetch: JwksFetch, now: u64) {
        match crate::step::dispatch(&fetch.call) {
            Ok(token) => {
                self.fetches
                    .insert(token, (fetch.issuer, fetch.call.max_answer_bytes));
            }
            Err(status) => {
                // Typical on Envoy's base VM, which cannot call out; retried on tick.
                log(
                    LogLevel::Debug,
                    &format!(
                        "agentward: JWKS fetch from cluster `{}` not dispatched: {status:?}",
                        fetch.call.cluster
                    ),
                );
                let mut s = state.borrow_mut();
                s.auth.jwks_fetched(fetch.issuer, &Answer::Failed, now);
                s.metrics.inc("agentward.jwt.jwks_fetch_failed");
            }
        }
    }

    /// Decides again for requests held on `issuer`, now that its fetch
    /// ended (`None`: the overdue ones); an allowed one goes to `then`.
    fn release(&mut self, issuer: Option<usize>, then: ThenHeld<'_>) {
        let Some(state) = self.state.clone() else {
            return;
        };
        // Without a clock nothing can be decided: every held request is
        // overdue, and answers 503.
        let clock = now_ms();
        let now = clock.unwrap_or(u64::MAX);
        let due = state
            .borrow_mut()
            .held
            .take(now, |w| issuer == Some(w.issuer));
        for h in due {
            let (id, root) = (h.id, self.id);
            let released = held::within(id, root, || {
                let mut s = state.borrow_mut();
                let decision = if now >= h.deadline_ms {
                    let answer = if clock.is_ok() {
                        s.auth.wait_timed_out()
                    } else {
                        clock_unavailable()
                    };
                    Decision {
                        step: Step::Respond(answer),
                        verdict: Verdict::KeysPending,
                        waits_for: None,
                        binding: None,
                    }
                } else {
                    let w = &h.item;
                    let head = RequestHead {
                        method: &w.method,
                        path: &w.path,
                        authorization: w.authorization.as_deref(),
                        token_header: w.token_header.as_deref(),
                    };
                    s.decide(&head, now)
                };
                match (&decision.step, decision.waits_for) {
                    // Still waiting (a retry is under way): keep holding, to
                    // the first deadline.
                    (Step::Hold { .. }, Some(issuer)) if now < h.deadline_ms => {
                        let waiting = Waiting { issuer, ..h.item };
                        if s.held.hold(id, h.deadline_ms, waiting).is_err() {
                            respond(&response::too_many_held(KEYS_FETCHED));
                        }
                        Released::Done
                    }
                    (Step::Hold { .. }, _) => {
                        respond(&s.auth.wait_timed_out());
                        Released::Done
                    }
                    (step, _) => {
                        let current = hostcall::request_headers().unwrap_or_default();
                        let binding = decision.binding.as_deref();
                        if !s.apply(step, &current, binding) {
                            return Released::Done; // answered
                        }
                        drop(s);
                        let Step::Continue(edits) = step else {
                            return Released::Done;
                        };
                        let allowed =
                            allowed(&h.item.method, &h.item.path, binding, edits, &current);
                        then(id, &allowed)
                    }
                }
            });
            if released == Some(Released::Failed) {
                log(LogLevel::Warn, "agentward: could not resume a held request");
            }
        }
    }
}

/// What a request allowed with `edits` goes on with.
fn allowed<'a>(
    method: &'a str,
    path: &'a str,
    binding: Option<&'a str>,
    edits: &'a Edits,
    headers: &'a Headers,
) -> Allowed<'a> {
    Allowed {
        method,
        path: edits.value_of(":path").unwrap_or(path),
        binding,
        edits,
        headers,
    }
}

/// jwt-identity on one request.
pub struct JwtStream {
    id: u32,
    state: Option<Rc<RefCell<State>>>,
}

impl JwtStream {
    /// The request's headers callback: decides, and hands a request it lets
    /// go on to `then` (in this callback, its headers still held).
    pub fn on_request_headers(&mut self, then: impl FnOnce(&Allowed<'_>) -> Action) -> Headed {
        let Some(state) = self.state.clone() else {
            respond(&response::unavailable(
                "not_configured",
                "the identity filter has no valid policy",
            ));
            return Headed::Decided(Action::Pause);
        };
        let Ok(now) = now_ms() else {
            respond(&clock_unavailable());
            return Headed::Decided(Action::Pause);
        };
        let headers = hostcall::request_headers().unwrap_or_default();
        let [method, path, authorization] = headers.get_many([":method", ":path", "authorization"]);
        let mut s = state.borrow_mut();
        let token_header = s.auth.policy().identity.token_header.clone();
        let head = RequestHead {
            method: method.unwrap_or("GET"),
            path: path.unwrap_or("/"),
            authorization,
            token_header: token_header.as_deref().and_then(|name| headers.get(name)),
        };
        let decision = s.decide(&head, now);
        if let (Step::Hold { until_ms }, Some(issuer)) = (&decision.step, decision.waits_for) {
            let deadline_ms = *until_ms;
            let waiting = Waiting {
                issuer,
                method: head.method.to_string(),
                path: head.path.to_string(),
                authorization: head.authorization.map(str::to_string),
                token_header: head.token_header.map(str::to_string),
            };
            if s.held.hold(self.id, deadline_ms, waiting).is_err() {
                s.metrics.inc("agentward.jwt.too_many_held");
                respond(&response::too_many_held(KEYS_FETCHED));
                return Headed::Decided(Action::Pause);
            }
            // The root starts the fetch on its next tick: callouts made here
            // would answer to this request's context, which may go away.
            return Headed::Held;
        }
        let binding = decision.binding.as_deref();
        if !s.apply(&decision.step, &headers, binding) {
            return Headed::Decided(Action::Pause);
        }
        drop(s);
        let Step::Continue(edits) = &decision.step else {
            return Headed::Decided(Action::Pause);
        };
        Headed::Decided(then(&allowed(
            head.method,
            head.path,
            binding,
            edits,
            &headers,
        )))
    }
}

/// The SDK drops the context when the stream ends (`proxy_on_delete`): a
/// request still held for keys is forgotten then.
impl Drop for JwtStream {
    fn drop(&mut self) {
        if let Some(state) = &self.state {
            if let Ok(mut state) = state.try_borrow_mut() {
                state.held.forget(self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostcall::serialize;
    use agentward_core::identity::{ACT, AGENT, SUB};
    use agentward_core::proof::PROOF;
    use std::sync::Arc;

    #[test]
    fn allowed_goes_on_with_the_identity_set_and_the_path_rewritten() {
        let received = Headers::from_serialized(serialize(&[
            (":path", "/a/../docs"),
            (SUB, "mallory"),
            ("mcp-name", "get_quote"),
        ]));
        let edits = Edits {
            set: Arc::new(vec![
                (SUB.to_string(), "alice".to_string()),
                (AGENT.to_string(), "copilot".to_string()),
                (PROOF.to_string(), "v1.proof".to_string()),
            ]),
            ..Edits::set(":path", "/docs".to_string())
        };
        let a = allowed("GET", "/a/../docs", Some("sig"), &edits, &received);
        assert_eq!(a.path, "/docs");
        let identity = a.identity();
        // What jwt-identity set, never what the request carried.
        assert_eq!(identity.header(SUB), Some("alice"));
        assert_eq!(identity.header(AGENT), Some("copilot"));
        assert_eq!(identity.header(PROOF), Some("v1.proof"));
        assert_eq!(identity.header(ACT), None);
        assert_eq!(a.headers.get("mcp-name"), Some("get_quote"));

        let plain = Edits::none();
        let a = allowed("GET", "/docs", None, &plain, &received);
        assert_eq!(a.path, "/docs");
        assert!(a.identity().is_empty());
    }
}
