//! ciba-hold: for routes with an `approval` rule, asks the user to approve
//! the exact request through OpenID CIBA before it goes on: the request is
//! held (paused) until the user decides, or answered 202 with an approval
//! id to retry with (deferred). Decisions live in
//! `agentward_core::approval::gate`; this file is the proxy-wasm glue: read
//! the request and its body, carry out the gate's steps, dispatch its calls,
//! hold requests between polls, count its verdicts.
//!
//! On an MCP route whose tools have approval rules, the answers are
//! JSON-RPC (`input_required`, `-32042`, errors), and an approved retry's
//! body is rewritten (without the gateway's `requestState`) from the poll's
//! answer, in the request's context, before it is resumed; 2025-11-25
//! calls' pending approvals are kept in shared data, across workers.
//!
//! A request's first call (`/bc-authorize`, a retry's poll, a long-poll
//! right after) is made from its own context and answers there; a poll
//! started when a hold's timer ends is made by the root on its tick and
//! answers to the root, which releases the request from there
//! (`agentward_envoy::held`). A client that hangs up drops its context: its
//! slot, timer and pending poll are forgotten.

use agentward_core::approval::gate::{Decision, Gate, RequestHead, Verdict, Wait};
use agentward_core::approval::rule::APPROVAL_HEADER;
use agentward_core::held::HeldQueue;
use agentward_core::identity::ReceivedIdentity;
use agentward_core::mcp::{McpHeaders, METHOD_HEADER, NAME_HEADER};
use agentward_core::response;
use agentward_core::shared_cache::SharedCache;
use agentward_core::step::{Answer, Step};
use agentward_envoy::request_body::{self, BodyRead, Chunk, Started};
use agentward_envoy::step::{self, Carried, Phase};
use agentward_envoy::{held, hostcall, log, now_ms, respond, Counter, SharedData};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

agentward_envoy::callbacks!(
    "proxy_on_request_headers",
    "proxy_on_request_body",
    "proxy_on_request_trailers",
    "proxy_on_http_call_response",
    "proxy_on_tick"
);

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|id| Box::new(Root { id, plugin: None }));
}}

/// How often the root looks for holds whose next poll is due: with plain
/// polling an approval is seen at most this much after its poll's time.
const TICK: Duration = Duration::from_millis(100);

/// What the 503 says a request would have waited for.
const WAITING_FOR: &str = "waiting for users' approvals";

/// The request headers the gate reads, in one pass over the map.
const HEAD: [&str; 15] = {
    let id = ReceivedIdentity::HEADERS;
    [
        ":method",
        ":path",
        "authorization",
        APPROVAL_HEADER,
        METHOD_HEADER,
        NAME_HEADER,
        "mcp-protocol-version",
        id[0],
        id[1],
        id[2],
        id[3],
        id[4],
        id[5],
        id[6],
        id[7],
    ]
};

/// The requests this VM holds for approvals.
struct Holds {
    /// Every request waiting for the authority or the user: the cap counts these.
    waiting: HashSet<u32>,
    cap: usize,
    /// Requests whose next poll is not due yet.
    timers: HeldQueue<Wait>,
    /// Polls the root made: token → (request, what it waits for, largest answer read).
    calls: HashMap<u32, (u32, Wait, usize)>,
}

struct Plugin {
    gate: RefCell<Gate>,
    holds: RefCell<Holds>,
    /// The counters of [`Verdict::COUNTED`], in that order.
    counters: [Counter; 12],
    too_many_held: Counter,
}

/// Where a decision is carried out.
#[derive(Clone, Copy)]
enum At {
    /// In the request's own callback (its context is current).
    Request,
    /// In the root's callback (`root` is its id): the request is released
    /// from there.
    Root(u32),
}

impl Plugin {
    fn count(&self, verdict: Verdict) {
        if let Some(i) = Verdict::COUNTED.iter().position(|v| *v == verdict) {
            self.counters[i].inc();
        }
    }

    /// The request no longer waits.
    fn done(&self, id: u32) {
        self.holds.borrow_mut().waiting.remove(&id);
    }

    /// The request's client went away: forget everything it waited for.
    fn forget(&self, id: u32) {
        if let Ok(mut holds) = self.holds.try_borrow_mut() {
            holds.waiting.remove(&id);
            holds.timers.forget(id);
            holds.calls.retain(|_, (request, _, _)| *request != id);
        }
    }

    /// Carries out `decision` for held request `id` (`body_size`: the
    /// request body buffered, for a rewrite). Returns what to keep in the
    /// request's context when a call was made from it.
    fn advance(
        &self,
        id: u32,
        mut decision: Decision,
        at: At,
        body_size: usize,
    ) -> Option<(Wait, usize)> {
        loop {
            self.count(decision.verdict);
            remember(decision.remember.take());
            let wait = decision.wait.take();
            match (decision.step, wait) {
                (Step::Continue(edits), _) => {
                    self.done(id);
                    let released = match (at, decision.body.take()) {
                        (At::Request, None) => held::resume_current(&edits),
                        (At::Request, Some(body)) => {
                            // The headers went on before the body was read:
                            // no edits; `content-length` went then.
                            if !request_body::replace(body_size, &body) {
                                return None; // answered 503
                            }
                            held::resume_current(&edits)
                        }
                        (At::Root(root), None) => held::resume(id, root, &edits),
                        // Rewrites are decided in the request's own context
                        // (a retry's one poll): never here.
                        (At::Root(root), Some(_)) => {
                            held::answer(id, root, &lost_track());
                            held::Released::Failed
                        }
                    };
                    if released == held::Released::Failed {
                        log(
                            LogLevel::Warn,
                            "agentward: could not resume an approved request",
                        );
                    }
                    return None;
                }
                (Step::Respond(answer), _) => {
                    self.done(id);
                    match at {
                        At::Request => respond(&answer),
                        At::Root(root) => {
                            held::answer(id, root, &answer);
                        }
                    }
                    return None;
                }
                (Step::Call(call), Some(wait)) => match step::dispatch(&call) {
                    Ok(token) => match at {
                        At::Request => return Some((wait, call.max_answer_bytes)),
                        At::Root(_) => {
                            let entry = (id, wait, call.max_answer_bytes);
                            self.holds.borrow_mut().calls.insert(token, entry);
                            return None;
                        }
                    },
                    Err(status) => {
                        log(
                            LogLevel::Warn,
                            &format!(
                                "agentward: cannot call the cluster `{}`: {status:?}",
                                call.cluster
                            ),
                        );
                        decision = self.answered(wait, &Answer::Failed);
                    }
                },
                (Step::Hold { until_ms }, Some(wait)) => {
                    let held = self.holds.borrow_mut().timers.hold(id, until_ms, wait);
                    if held.is_err() {
                        decision = unavailable(response::too_many_held(WAITING_FOR));
                        continue;
                    }
                    return None;
                }
                _ => decision = unavailable(lost_track()),
            }
        }
    }

    /// The gate's decision on an answer, now.
    fn answered(&self, wait: Wait, answer: &Answer) -> Decision {
        match now_ms() {
            Ok(now) => self.gate.borrow().on_answer(wait, answer, now),
            Err(_) => clock_failed(),
        }
    }
}

fn clock_failed() -> Decision {
    unavailable(response::clock_unavailable())
}

fn unavailable(answer: response::LocalResponse) -> Decision {
    Decision {
        step: Step::Respond(answer),
        verdict: Verdict::AuthorityUnavailable,
        wait: None,
        body: None,
        remember: None,
    }
}

fn lost_track() -> response::LocalResponse {
    response::unavailable(
        "approval_state",
        "the gateway lost track of this request's approval",
    )
}

/// Writes (or forgets) a pending MCP approval in shared data; a write the
/// host refuses only means the retry asks for a new approval.
fn remember(write: Option<agentward_core::approval::gate::Remember>) {
    if let Some(write) = write {
        if !SharedData.set(&write.key, &write.value) {
            log(
                LogLevel::Warn,
                "agentward: could not keep a pending MCP approval in shared data",
            );
        }
    }
}

struct Root {
    id: u32,
    plugin: Option<Rc<Plugin>>,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        _: usize,
    ) {
        let Some(plugin) = self.plugin.clone() else {
            return;
        };
        let Some((id, wait, max_bytes)) = plugin.holds.borrow_mut().calls.remove(&token) else {
            return; // its client went away
        };
        let answer = step::read_answer(num_headers, body_size, max_bytes);
        let decision = plugin.answered(wait, &answer);
        plugin.advance(id, decision, At::Root(self.id), 0);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let Some(gate) = agentward_envoy::after_identity(Gate::new) else {
            return false;
        };
        let cap = gate.authority().max_held_requests;
        let counters = Verdict::COUNTED.map(|v| Counter::define(v.metric().unwrap_or_default()));
        self.plugin = Some(Rc::new(Plugin {
            gate: RefCell::new(gate),
            holds: RefCell::new(Holds {
                waiting: HashSet::new(),
                cap,
                timers: HeldQueue::new(cap),
                calls: HashMap::new(),
            }),
            counters,
            too_many_held: Counter::define("agentward.approval.too_many_held"),
        }));
        if hostcall::set_tick_period(TICK).is_err() {
            log(
                LogLevel::Warn,
                "agentward: no tick period: held approvals are polled only by long-poll",
            );
        }
        true
    }

    fn on_tick(&mut self) {
        let Some(plugin) = self.plugin.clone() else {
            return;
        };
        if !plugin.gate.borrow().has_proof_key() {
            plugin.gate.borrow_mut().read_proof_key(&SharedData);
        }
        // Without a clock every hold is overdue, and is answered 503.
        let clock = now_ms();
        let now = clock.unwrap_or(u64::MAX);
        if !plugin.holds.borrow().timers.any_overdue(now) {
            return;
        }
        let due = plugin.holds.borrow_mut().timers.take(now, |_| false);
        for h in due {
            let decision = match clock {
                Ok(now) => plugin.gate.borrow().wake(h.item, now),
                Err(_) => clock_failed(),
            };
            plugin.advance(h.id, decision, At::Root(self.id), 0);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            id: context_id,
            plugin: self.plugin.clone(),
            reading: None,
            wait: None,
            body_size: 0,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    id: u32,
    plugin: Option<Rc<Plugin>>,
    /// The body being read, and what the gate waits for with it.
    reading: Option<(BodyRead, Wait)>,
    /// The call this context made, and the largest answer read.
    wait: Option<(Wait, usize)>,
    /// The size of the body read (what a rewrite replaces).
    body_size: usize,
}

impl Request {
    /// Decides on the whole body and carries the decision out.
    fn decide_body(
        &mut self,
        plugin: &Plugin,
        wait: Wait,
        body: &[u8],
        headers_held: bool,
    ) -> Action {
        let Ok(now) = now_ms() else {
            respond(&response::clock_unavailable());
            return Action::Pause;
        };
        self.body_size = body.len();
        let mut decision = plugin
            .gate
            .borrow()
            .on_body(wait, body, headers_held, now, &SharedData);
        remember(decision.remember.take());
        let mut holds = plugin.holds.borrow_mut();
        if decision.wait.is_some() && holds.waiting.len() >= holds.cap {
            drop(holds);
            plugin.too_many_held.inc();
            respond(&response::too_many_held(WAITING_FOR));
            return Action::Pause;
        }
        if decision.wait.is_some() {
            holds.waiting.insert(self.id);
        }
        drop(holds);
        plugin.count(decision.verdict);
        match request_body::carry_out(&decision.step, body.len()) {
            Carried::Continue => Action::Continue,
            Carried::Pause => {
                plugin.done(self.id);
                Action::Pause
            }
            Carried::Called(_) => {
                if let (Some(wait), agentward_core::step::BodyStep::Call(call)) =
                    (decision.wait, &decision.step)
                {
                    self.wait = Some((wait, call.max_answer_bytes));
                }
                Action::Pause
            }
            Carried::CallFailed(_) => {
                if let Some(wait) = decision.wait {
                    let failed = plugin.answered(wait, &Answer::Failed);
                    self.wait = plugin.advance(self.id, failed, At::Request, self.body_size);
                }
                Action::Pause
            }
        }
    }

    fn on_chunk(&mut self, chunk: Chunk) -> Action {
        let (Some(plugin), Some((_, wait))) = (self.plugin.clone(), self.reading.take()) else {
            return Action::Continue;
        };
        match chunk {
            Chunk::Whole(body) => self.decide_body(&plugin, wait, &body, false),
            Chunk::Answered => Action::Pause,
            Chunk::More => Action::Pause,
        }
    }
}

impl Context for Request {
    fn on_http_call_response(&mut self, _: u32, num_headers: usize, body_size: usize, _: usize) {
        let (Some(plugin), Some((wait, max_bytes))) = (self.plugin.clone(), self.wait.take())
        else {
            return;
        };
        let answer = step::read_answer(num_headers, body_size, max_bytes);
        let decision = plugin.answered(wait, &answer);
        self.wait = plugin.advance(self.id, decision, At::Request, self.body_size);
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        let Some(plugin) = self.plugin.clone() else {
            respond(&response::unavailable(
                "not_configured",
                "the ciba-hold filter has no valid policy",
            ));
            return Action::Pause;
        };
        let headers = hostcall::request_headers().unwrap_or_default();
        let [method, path, authorization, approval_id, mcp_method, mcp_name, version, id @ ..] =
            headers.get_many(HEAD);
        let binding = agentward_envoy::identity::binding(authorization);
        let head = RequestHead {
            method: method.unwrap_or_default(),
            path: path.unwrap_or_default(),
            bearer: binding.as_deref(),
            identity: ReceivedIdentity::from_values(id),
            approval_id,
            mcp: McpHeaders {
                method: mcp_method,
                name: mcp_name,
            },
            protocol_version: version,
        };
        let decision = plugin.gate.borrow().decide(&head);
        plugin.count(decision.verdict);
        match (decision.step, decision.wait) {
            (Step::ReadBody { edits, max_bytes }, Some(wait)) => {
                match request_body::start(&edits, max_bytes, end_of_stream) {
                    Started::Read(reader) => {
                        self.reading = Some((reader, wait));
                        Action::Continue
                    }
                    Started::Whole => self.decide_body(&plugin, wait, &[], true),
                    Started::Answered => Action::Pause,
                }
            }
            (step, _) => step::carry_out(&step, Phase::Headers).action(),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some((reader, _)) = &self.reading else {
            return Action::Continue;
        };
        match reader.on_body(body_size, end_of_stream) {
            Chunk::More => Action::Pause,
            chunk => self.on_chunk(chunk),
        }
    }

    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        let Some((reader, _)) = &self.reading else {
            return Action::Continue;
        };
        let chunk = reader.on_trailers();
        self.on_chunk(chunk)
    }
}

/// The SDK drops the context when the stream ends (`proxy_on_delete`),
/// also when its client hangs up while held: its slot is freed.
impl Drop for Request {
    fn drop(&mut self) {
        if let Some(plugin) = &self.plugin {
            plugin.forget(self.id);
        }
    }
}
