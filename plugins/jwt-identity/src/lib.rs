//! jwt-identity: verifies the bearer JWT of each request and forwards the
//! verified identity as `x-agentward-*` headers. Decisions live in
//! `agentward_core::authn`; this file is the proxy-wasm glue: read the
//! request, ask core, apply the answer, fetch JWKS when core says so.

use agentward_core::authn::{Authenticator, Decision, JwksFetch, Outcome, RequestHead, Verdict};
use agentward_core::held::HeldQueue;
use agentward_core::jwt::Rejection;
use agentward_core::response;
use agentward_envoy::hostcall::{self, Headers};
use agentward_envoy::{clock_unavailable, log, now_ms, respond, EnvoyVerifier, Metrics};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

agentward_envoy::callbacks!(
    "proxy_on_request_headers",
    "proxy_on_http_call_response",
    "proxy_on_tick"
);

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|id| Box::new(Root::new(id)));
}}

/// The largest JWKS answer read; a larger one counts as a failed fetch.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Ticks start JWKS fetches (first, periodic, refetch on unknown `kid`) and
/// time out held requests.
const TICK: Duration = Duration::from_millis(250);

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

/// Per-VM state shared by the root and the HTTP contexts.
struct State {
    auth: Authenticator,
    verifier: EnvoyVerifier,
    metrics: Metrics,
    held: HeldQueue<Waiting>,
}

impl State {
    fn decide(&mut self, head: &RequestHead<'_>, now_ms: u64) -> Decision {
        let decision = self.auth.decide(head, now_ms, &self.verifier);
        self.count(&decision.verdict);
        decision
    }

    fn count(&mut self, verdict: &Verdict) {
        let name = match verdict {
            Verdict::Allowed { cached: true } => {
                self.metrics.inc("agentward.jwt.cache_hit");
                "agentward.jwt.allowed"
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

    /// Applies a decision to the current context. Returns whether the
    /// request may continue.
    fn apply(&self, outcome: &Outcome, current: &Headers) -> bool {
        match outcome {
            Outcome::Forward {
                set,
                remove_authorization,
                remove_token_header,
                path,
            } => {
                let mut ok = true;
                for (name, _) in current.pairs() {
                    let Ok(name) = std::str::from_utf8(name) else {
                        continue;
                    };
                    if self.auth.strips(name) {
                        ok &= hostcall::remove_request_header(name).is_ok();
                    }
                }
                if *remove_authorization {
                    ok &= hostcall::remove_request_header("authorization").is_ok();
                }
                let token_header = self.auth.policy().identity.token_header.as_deref();
                if let Some(name) = token_header.filter(|_| *remove_token_header) {
                    ok &= hostcall::remove_request_header(name).is_ok();
                }
                if let Some(path) = path {
                    ok &= hostcall::set_request_header(":path", path).is_ok();
                }
                for (name, value) in set.iter() {
                    ok &= hostcall::set_request_header(name, value).is_ok();
                }
                if !ok {
                    // Never forward a request whose identity headers are half set.
                    respond(&response::unavailable(
                        "header_edit_failed",
                        "the gateway could not set the identity headers",
                    ));
                }
                ok
            }
            Outcome::Respond(answer) => {
                respond(answer);
                false
            }
            Outcome::Wait { .. } => false,
        }
    }
}

struct Root {
    id: u32,
    state: Option<Rc<RefCell<State>>>,
    fetches: HashMap<u32, usize>,
}

impl Root {
    fn new(id: u32) -> Root {
        Root {
            id,
            state: None,
            fetches: HashMap::new(),
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
        let headers = [
            (":method", "GET"),
            (":path", fetch.path.as_str()),
            (":authority", fetch.authority.as_str()),
            ("accept", "application/json"),
        ];
        let timeout = Duration::from_millis(fetch.timeout_ms);
        match hostcall::dispatch_http_call(&fetch.cluster, &headers, None, timeout) {
            Ok(token) => {
                self.fetches.insert(token, fetch.issuer);
            }
            Err(status) => {
                // Typical on Envoy's base VM, which cannot call out; retried on tick.
                log(
                    LogLevel::Debug,
                    &format!(
                        "agentward: JWKS fetch from cluster `{}` not dispatched: {status:?}",
                        fetch.cluster
                    ),
                );
                let mut s = state.borrow_mut();
                s.auth.jwks_fetched(fetch.issuer, None, now);
                s.metrics.inc("agentward.jwt.jwks_fetch_failed");
            }
        }
    }

    /// Decides again for requests held on `issuer`, now that its fetch ended.
    fn release(&mut self, issuer: Option<usize>) {
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
            if hostcall::set_effective_context(h.id).is_err() {
                continue; // the client went away
            }
            let mut s = state.borrow_mut();
            let decision = if now >= h.deadline_ms {
                let answer = if clock.is_ok() {
                    s.auth.wait_timed_out()
                } else {
                    clock_unavailable()
                };
                Decision {
                    outcome: Outcome::Respond(answer),
                    verdict: Verdict::KeysPending,
                }
            } else {
                let w = &h.item;
                s.decide(
                    &RequestHead {
                        method: &w.method,
                        path: &w.path,
                        authorization: w.authorization.as_deref(),
                        token_header: w.token_header.as_deref(),
                    },
                    now,
                )
            };
            match decision.outcome {
                // Still waiting (a retry is under way): keep holding.
                Outcome::Wait { issuer } if now < h.deadline_ms => {
                    let waiting = Waiting { issuer, ..h.item };
                    if s.held.hold(h.id, h.deadline_ms, waiting).is_err() {
                        respond(&response::too_many_held(KEYS_FETCHED));
                    }
                }
                Outcome::Wait { .. } => respond(&s.auth.wait_timed_out()),
                outcome => {
                    let current = hostcall::request_headers().unwrap_or_default();
                    if s.apply(&outcome, &current) && hostcall::resume_request().is_err() {
                        log(LogLevel::Warn, "agentward: could not resume a held request");
                    }
                }
            }
        }
        let _ = hostcall::set_effective_context(self.id);
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize, _: usize) {
        let Some(issuer) = self.fetches.remove(&token) else {
            return;
        };
        let Some(state) = self.state.clone() else {
            return;
        };
        let status = hostcall::http_call_response_header(":status")
            .ok()
            .flatten();
        // An answer over the bound is never read: the fetch counts as failed.
        let too_big = body_size > MAX_JWKS_BYTES;
        let body = if status.as_deref() == Some("200") && !too_big {
            hostcall::buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
        } else {
            None
        };
        if too_big {
            log(
                LogLevel::Warn,
                &format!(
                    "agentward: JWKS answer for issuer {issuer} is {body_size} bytes, over the {MAX_JWKS_BYTES}-byte limit"
                ),
            );
        }
        let ok = {
            let mut s = state.borrow_mut();
            let had = body.is_some();
            // Without a clock the keys are kept and refreshed on the next tick.
            let now = now_ms().unwrap_or(0);
            let ok = s.auth.jwks_fetched(issuer, body.as_deref(), now);
            s.metrics.inc(if had && ok {
                "agentward.jwt.jwks_fetch_ok"
            } else {
                "agentward.jwt.jwks_fetch_failed"
            });
            ok
        };
        if !ok {
            log(
                LogLevel::Warn,
                &format!(
                    "agentward: JWKS fetch for issuer {} failed (status {})",
                    issuer,
                    status.as_deref().unwrap_or("none")
                ),
            );
        }
        self.release(Some(issuer));
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let Some(policy) = agentward_envoy::configured_policy() else {
            return false;
        };
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
        let held = HeldQueue::new(policy.identity.max_held_requests);
        let mut auth = Authenticator::new(policy);
        match agentward_envoy::proof::shared_key_or_create() {
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
            held,
        })));
        if hostcall::set_tick_period(TICK).is_err() {
            log(
                LogLevel::Warn,
                "agentward: no tick period: JWKS refreshes only on demand",
            );
        }
        self.start_fetches();
        true
    }

    fn on_tick(&mut self) {
        // Another VM may have won the race to make the proof key.
        if let (Some(state), Some(key)) = (&self.state, agentward_envoy::proof::shared_key()) {
            state.borrow_mut().auth.set_proof_key(key);
        }
        self.start_fetches();
        let now = now_ms();
        let overdue = self
            .state
            .as_ref()
            .is_some_and(|s| s.borrow().held.any_overdue(now.unwrap_or(u64::MAX)));
        if overdue {
            self.release(None);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            id: context_id,
            state: self.state.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    id: u32,
    state: Option<Rc<RefCell<State>>>,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(state) = self.state.clone() else {
            respond(&response::unavailable(
                "not_configured",
                "the identity filter has no valid policy",
            ));
            return Action::Pause;
        };
        let Ok(now) = now_ms() else {
            respond(&clock_unavailable());
            return Action::Pause;
        };
        let headers = hostcall::request_headers().unwrap_or_default();
        let get = |name: &str| headers.get(name);
        let mut s = state.borrow_mut();
        let token_header = s.auth.policy().identity.token_header.clone();
        let head = RequestHead {
            method: get(":method").unwrap_or("GET"),
            path: get(":path").unwrap_or("/"),
            authorization: get("authorization"),
            token_header: token_header.as_deref().and_then(get),
        };
        let decision = s.decide(&head, now);
        if let Outcome::Wait { issuer } = decision.outcome {
            let deadline_ms = now.saturating_add(s.auth.wait_limit_ms(issuer) + 1_000);
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
            }
            // The root starts the fetch on its next tick: callouts made here
            // would answer to this request's context, which may go away.
            return Action::Pause;
        }
        if s.apply(&decision.outcome, &headers) {
            Action::Continue
        } else {
            Action::Pause
        }
    }
}

/// The SDK drops the context when the stream ends (`proxy_on_delete`): a
/// request still held for keys is forgotten then.
impl Drop for Request {
    fn drop(&mut self) {
        if let Some(state) = &self.state {
            if let Ok(mut state) = state.try_borrow_mut() {
                state.held.forget(self.id);
            }
        }
    }
}
