//! scope-fga's glue for one request, shared by `scope_fga.wasm` and
//! `identity_fga.wasm` (jwt-identity and scope-fga in one filter): read
//! the body and the response where the gate says, carry out its steps
//! (`crate::step`, `crate::response_body`), dispatch its calls, count its
//! verdicts. The decisions live in `agentward_core::fga::gate`; the
//! request's head is the host plugin's to read ([`FgaStream::on_head`]).

use crate::request_body::{self, BodyRead, Started};
use crate::response_body::{self, Chunk, Rewrite};
use crate::step::{self, Carried, Phase};
use crate::{hostcall, now_ms, respond, Counter, SharedData};
use agentward_core::clock::TickClock;
use agentward_core::fga::gate::{
    BodyPlan, Decision, Gate, Pending, RequestHead, ResponsePlan, ResponseRun, Verdict,
};
use agentward_core::identity::ReceivedIdentity;
use agentward_core::mcp;
use agentward_core::step::{Answer, BodyStep, Step};
use proxy_wasm::types::Action;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// The request headers scope-fga reads, in one pass over the map:
/// `:method`, `:path`, `authorization`, `Mcp-Method`, `Mcp-Name`, then
/// the identity headers ([`ReceivedIdentity::HEADERS`]).
pub const HEAD: [&str; 13] = {
    let id = ReceivedIdentity::HEADERS;
    [
        ":method",
        ":path",
        "authorization",
        mcp::METHOD_HEADER,
        mcp::NAME_HEADER,
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

/// Seconds between ticks (the clock's resolution, and how late counters are).
pub const TICK_SECONDS: u64 = 1;

/// scope-fga's per-VM state: the gate, its counters, the clock.
pub struct FgaPlugin {
    gate: RefCell<Gate>,
    /// The counters of [`Verdict::COUNTED`], in that order.
    counters: [Counter; 9],
    /// Responses cut, and responses that could not be (replaced by a refusal).
    filtered: Counter,
    filter_refused: Counter,
    /// Allowed requests not yet added to their counter: a request decided
    /// from the cache then makes no metric call (added on tick).
    allowed: Cell<u64>,
    /// The host's clock, read once a tick (ahead, never behind: a cached
    /// decision expires up to a tick early, never late).
    clock: TickClock,
}

impl FgaPlugin {
    /// The plugin around a configured gate, its counters defined.
    pub fn new(gate: Gate) -> FgaPlugin {
        FgaPlugin {
            gate: RefCell::new(gate),
            counters: Verdict::COUNTED.map(|v| Counter::define(v.metric())),
            filtered: Counter::define("agentward.fga.filtered"),
            filter_refused: Counter::define("agentward.fga.filter_refused"),
            allowed: Cell::new(0),
            clock: TickClock::new(TICK_SECONDS),
        }
    }

    /// On the root's tick: the clock read, the allowed requests counted.
    pub fn tick(&self) {
        if let Ok(ms) = now_ms() {
            self.clock.tick(ms / 1000);
        }
        self.counter(Verdict::Allowed).add(self.allowed.replace(0));
    }

    fn count(&self, verdict: Verdict) {
        if verdict == Verdict::Allowed {
            self.allowed.set(self.allowed.get() + 1);
        } else if let Some(i) = Verdict::COUNTED.iter().position(|v| *v == verdict) {
            self.counters[i].inc();
        }
    }

    fn counter(&self, verdict: Verdict) -> Counter {
        let i = Verdict::COUNTED.iter().position(|v| *v == verdict);
        i.map_or(Counter::default(), |i| self.counters[i])
    }

    /// Unix milliseconds for the decision cache; 0 when the host cannot
    /// tell (no cached decision is then fresh: the service is asked).
    fn now_ms(&self) -> u64 {
        self.clock
            .now(|| now_ms().map_or(0, |ms| ms / 1000))
            .saturating_mul(1000)
    }
}

/// What a call's answer is for, with the largest answer read.
enum Waiting {
    Nothing,
    /// The request's checks.
    Request(Box<Pending>, usize),
    /// The response's checks.
    Response(ResponseRun, usize),
}

/// The decision on checks whose call could not be dispatched.
fn failed(plugin: &FgaPlugin, pending: Pending) -> Decision {
    plugin
        .gate
        .borrow()
        .answered(pending, &Answer::Failed, &mut SharedData, plugin.now_ms())
}

/// scope-fga on one request: what it waits for, reads and cuts.
pub struct FgaStream {
    plugin: Option<Rc<FgaPlugin>>,
    waiting: Waiting,
    /// How the response is to be cut, once the request went on.
    plan: Option<ResponsePlan>,
    rewrite: Option<Rewrite>,
    /// The response is `text/event-stream`.
    event_stream: bool,
    /// An MCP request's body being read, and what to decide on it with.
    reading: Option<(BodyRead, BodyPlan)>,
    /// `end_of_stream` came with the request headers.
    headers_only: bool,
    /// The token of the last call dispatched ([`FgaStream::take_called`]).
    called: Option<u32>,
}

impl FgaStream {
    /// A request of `plugin` (`None`: not configured, every request refused).
    pub fn new(plugin: Option<Rc<FgaPlugin>>) -> FgaStream {
        FgaStream {
            plugin,
            waiting: Waiting::Nothing,
            plan: None,
            rewrite: None,
            event_stream: false,
            reading: None,
            headers_only: false,
            called: None,
        }
    }

    /// Whether the plugin has a valid policy.
    pub fn configured(&self) -> bool {
        self.plugin.is_some()
    }

    /// The token of the call dispatched last, taken: a host that carries
    /// a request out from its root (a request jwt-identity held) routes
    /// that call's answer back with it.
    pub fn take_called(&mut self) -> Option<u32> {
        self.called.take()
    }

    /// Decides the request on its head, in its headers callback
    /// (`end_of_stream`: no body follows).
    pub fn on_head(&mut self, head: &RequestHead<'_>, end_of_stream: bool) -> Action {
        self.headers_only = end_of_stream;
        let Some(plugin) = self.plugin.clone() else {
            respond(&agentward_core::response::unavailable(
                "not_configured",
                "the scope-fga filter has no valid policy",
            ));
            return Action::Pause;
        };
        let decision =
            plugin
                .gate
                .borrow_mut()
                .decide(head, &SharedData, &SharedData, plugin.now_ms());
        self.carry_out(&plugin, decision, Phase::Headers)
    }

    /// Counts and carries out a decision on the request; a call that
    /// cannot be dispatched is decided again as a failed one.
    fn carry_out(&mut self, plugin: &FgaPlugin, decision: Decision, phase: Phase) -> Action {
        plugin.count(decision.verdict);
        if let Step::ReadBody { edits, max_bytes } = &decision.step {
            let Some(plan) = decision.body else {
                return Action::Continue;
            };
            return match request_body::start(edits, *max_bytes, self.headers_only) {
                Started::Read(reader) => {
                    self.reading = Some((reader, plan));
                    Action::Continue
                }
                // Ended with its headers: decided now, headers still held.
                Started::Whole => self.decide_body(plugin, &plan, &[], 0),
                Started::Answered => Action::Pause,
            };
        }
        let carried = step::carry_out(&decision.step, phase);
        if let Carried::CallFailed(_) = carried {
            let Some(pending) = decision.pending else {
                return Action::Pause;
            };
            return self.carry_out(plugin, failed(plugin, pending), phase);
        }
        let answer_bytes = match &decision.step {
            Step::Call(call) => Some(call.max_answer_bytes),
            _ => None,
        };
        self.settle(carried, decision, answer_bytes)
    }

    /// What a request decision carried out leaves: a dispatched call's
    /// checks waited for (answers up to `answer_bytes`), the response's
    /// plan kept when the request goes on.
    fn settle(
        &mut self,
        carried: Carried,
        decision: Decision,
        answer_bytes: Option<usize>,
    ) -> Action {
        match carried {
            Carried::Called(token) => {
                self.called = Some(token);
                if let (Some(pending), Some(bytes)) = (decision.pending, answer_bytes) {
                    self.waiting = Waiting::Request(Box::new(pending), bytes);
                }
                Action::Pause
            }
            carried => {
                if carried == Carried::Continue {
                    self.plan = decision.response;
                }
                carried.action()
            }
        }
    }

    /// Decides an MCP request on its whole body and carries it out in the
    /// body callback (`body_size`: the buffered body's).
    fn decide_body(
        &mut self,
        plugin: &FgaPlugin,
        plan: &BodyPlan,
        body: &[u8],
        body_size: usize,
    ) -> Action {
        let decision = plugin
            .gate
            .borrow()
            .decide_body(plan, body, &SharedData, plugin.now_ms());
        self.carry_out_on_body(plugin, decision, body_size)
    }

    fn carry_out_on_body(
        &mut self,
        plugin: &FgaPlugin,
        decision: Decision,
        body_size: usize,
    ) -> Action {
        plugin.count(decision.verdict);
        let step = match &decision.step {
            Step::Call(call) => BodyStep::Call(call.clone()),
            Step::Respond(answer) => BodyStep::Respond(answer.clone()),
            _ => BodyStep::Keep,
        };
        let carried = request_body::carry_out(&step, body_size);
        if let Carried::CallFailed(_) = carried {
            let Some(pending) = decision.pending else {
                return Action::Pause;
            };
            return self.carry_out_on_body(plugin, failed(plugin, pending), body_size);
        }
        let answer_bytes = match &step {
            BodyStep::Call(call) => Some(call.max_answer_bytes),
            _ => None,
        };
        self.settle(carried, decision, answer_bytes)
    }

    /// Carries out a decision on the response body.
    fn carry_out_body(
        &mut self,
        plugin: &FgaPlugin,
        step: BodyStep,
        run: Option<ResponseRun>,
        phase: Phase,
    ) -> Action {
        match (&step, response_body::carry_out(&step, phase)) {
            (_, Carried::CallFailed(_)) => {
                let Some(mut run) = run else {
                    return Action::Continue;
                };
                let next = plugin.gate.borrow().response_answered(
                    &mut run,
                    &Answer::Failed,
                    &mut SharedData,
                    plugin.now_ms(),
                );
                self.carry_out_body(plugin, next, Some(run), phase)
            }
            (BodyStep::Call(call), Carried::Called(token)) => {
                self.called = Some(token);
                if let Some(run) = run {
                    self.waiting = Waiting::Response(run, call.max_answer_bytes);
                }
                Action::Pause
            }
            (BodyStep::Replace(_), carried) => {
                plugin.filtered.inc();
                carried.action()
            }
            (BodyStep::Respond(_), carried) => {
                plugin.filter_refused.inc();
                carried.action()
            }
            (_, carried) => carried.action(),
        }
    }

    /// A call's answer (`num_headers`, `body_size` from
    /// `on_http_call_response`), with this request's context current.
    pub fn on_call_answer(&mut self, num_headers: usize, body_size: usize) {
        let Some(plugin) = self.plugin.clone() else {
            return;
        };
        match std::mem::replace(&mut self.waiting, Waiting::Nothing) {
            Waiting::Nothing => {}
            Waiting::Request(pending, max_bytes) => {
                let answer = step::read_answer(num_headers, body_size, max_bytes);
                let decision = plugin.gate.borrow().answered(
                    *pending,
                    &answer,
                    &mut SharedData,
                    plugin.now_ms(),
                );
                self.carry_out(&plugin, decision, Phase::Held);
            }
            Waiting::Response(mut run, max_bytes) => {
                let answer = step::read_answer(num_headers, body_size, max_bytes);
                let next = plugin.gate.borrow().response_answered(
                    &mut run,
                    &answer,
                    &mut SharedData,
                    plugin.now_ms(),
                );
                self.carry_out_body(&plugin, next, Some(run), Phase::Held);
            }
        }
    }

    /// A request body chunk (`on_http_request_body`).
    pub fn on_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(plugin) = self.plugin.clone() else {
            return Action::Continue;
        };
        let Some((reader, _)) = &self.reading else {
            return Action::Continue;
        };
        match reader.on_body(body_size, end_of_stream) {
            request_body::Chunk::More | request_body::Chunk::Answered => Action::Pause,
            request_body::Chunk::Whole(body) => {
                let Some((_, plan)) = self.reading.take() else {
                    return Action::Pause;
                };
                self.decide_body(&plugin, &plan, &body, body_size)
            }
        }
    }

    /// The request trailers (`on_http_request_trailers`).
    pub fn on_request_trailers(&mut self) -> Action {
        let (Some(plugin), Some((reader, plan))) = (self.plugin.clone(), self.reading.take())
        else {
            return Action::Continue;
        };
        match reader.on_trailers() {
            request_body::Chunk::Whole(body) => {
                let size = body.len();
                self.decide_body(&plugin, &plan, &body, size)
            }
            _ => Action::Pause,
        }
    }

    /// The response headers (`on_http_response_headers`).
    pub fn on_response_headers(&mut self, end_of_stream: bool) -> Action {
        // Most routes cut nothing: back to Envoy before any other work.
        if self.plan.is_none() {
            return Action::Continue;
        }
        let (Some(plugin), Some(plan)) = (self.plugin.clone(), self.plan.as_ref()) else {
            return Action::Continue;
        };
        if end_of_stream {
            return Action::Continue; // no body: nothing to cut
        }
        let headers = hostcall::response_headers().unwrap_or_default();
        let [status, content_type] = headers.get_many([":status", "content-type"]);
        let status = status.and_then(|s| s.parse::<u16>().ok());
        self.event_stream = content_type.is_some_and(|t| {
            t.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        });
        // Only a success carries the items; an error passes as it came.
        if !matches!(status, Some(200..=299)) {
            self.plan = None;
            return Action::Continue;
        }
        let bound = plugin.gate.borrow().response_bound(plan);
        match Rewrite::begin(bound) {
            Ok(rewrite) => {
                self.rewrite = Some(rewrite);
                Action::Continue
            }
            Err(answer) => {
                plugin.filter_refused.inc();
                respond(&answer);
                Action::Pause
            }
        }
    }

    /// A response body chunk (`on_http_response_body`).
    pub fn on_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.rewrite.is_none() {
            return Action::Continue;
        }
        let (Some(plugin), Some(rewrite)) = (self.plugin.clone(), self.rewrite.as_mut()) else {
            return Action::Continue;
        };
        let too_large = plugin.gate.borrow().too_large();
        match rewrite.on_body(body_size, end_of_stream, &too_large) {
            Chunk::Wait => Action::Pause,
            Chunk::Replaced => Action::Continue,
            Chunk::Complete(body) => {
                let Some(plan) = self.plan.take() else {
                    return Action::Continue;
                };
                let (step, run) = plugin.gate.borrow().filter_response(
                    &plan,
                    self.event_stream,
                    &body,
                    &SharedData,
                    plugin.now_ms(),
                );
                self.carry_out_body(&plugin, step, run, Phase::Headers)
            }
        }
    }

    /// The response trailers (`on_http_response_trailers`).
    pub fn on_response_trailers(&mut self) -> Action {
        let (Some(plugin), Some(rewrite)) = (self.plugin.clone(), self.rewrite.as_mut()) else {
            return Action::Continue;
        };
        if !rewrite.is_done() {
            plugin.filter_refused.inc();
        }
        let refusal = plugin.gate.borrow().too_large();
        rewrite.on_trailers(&refusal)
    }
}
