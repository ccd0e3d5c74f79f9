//! token-exchange: for routes with an `exchange`, swaps the user's bearer
//! token for an upstream access token from the vault (RFC 8693 or Auth0
//! Token Vault dialect), caches it in shared data across worker VMs until
//! shortly before expiry, and sends it upstream in `Authorization`. The
//! agent's token never reaches the upstream; the upstream token never
//! reaches the agent. Decisions live in `agentward_core::exchange`; this
//! file is the proxy-wasm glue: read the request, ask the exchanger, carry
//! out its steps, dispatch its calls, count its verdicts.

use agentward_core::exchange::{Decision, Exchanger, Pending, RequestHead, Verdict};
use agentward_core::identity::ReceivedIdentity;
use agentward_core::response;
use agentward_core::step::{Answer, Step};
use agentward_envoy::step::{self, Carried, Phase};
use agentward_envoy::{hostcall, log, now_ms, respond, Counter, SharedData};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

agentward_envoy::callbacks!(
    "proxy_on_request_headers",
    "proxy_on_http_call_response",
    "proxy_on_tick"
);

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(Root::default()));
}}

/// The request headers the exchanger reads, in one pass over the map.
const HEAD: [&str; 11] = {
    let id = ReceivedIdentity::HEADERS;
    [
        ":method",
        ":path",
        "authorization",
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

struct Plugin {
    exchanger: RefCell<Exchanger>,
    /// The counters of [`Verdict::COUNTED`], in that order.
    counters: [Counter; 6],
    /// Cache hits not yet added to their counter: a cached request then
    /// makes no metric call (added on tick).
    hits: Cell<u64>,
}

impl Plugin {
    fn counter(&self, verdict: Verdict) -> Counter {
        let i = Verdict::COUNTED.iter().position(|v| *v == verdict);
        i.map_or(Counter::default(), |i| self.counters[i])
    }

    fn count(&self, verdict: Verdict) {
        if verdict == Verdict::CacheHit {
            self.hits.set(self.hits.get() + 1);
        } else {
            self.counter(verdict).inc();
        }
    }

    /// The host's clock in Unix seconds, `None` when it cannot be read.
    fn clock() -> Option<u64> {
        now_ms().ok().map(|ms| ms / 1000)
    }
}

#[derive(Default)]
struct Root {
    plugin: Option<Rc<Plugin>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let Some(exchanger) = agentward_envoy::after_identity(Exchanger::new) else {
            return false;
        };
        let counters = Verdict::COUNTED.map(|v| Counter::define(v.metric().unwrap_or_default()));
        self.plugin = Some(Rc::new(Plugin {
            exchanger: RefCell::new(exchanger),
            counters,
            hits: Cell::new(0),
        }));
        if hostcall::set_tick_period(Duration::from_secs(Exchanger::TICK_SECONDS)).is_err() {
            log(
                LogLevel::Warn,
                "agentward: no tick period: the clock is read on every request",
            );
        }
        true
    }

    fn on_tick(&mut self) {
        if let Some(plugin) = &self.plugin {
            if let Some(now) = Plugin::clock() {
                plugin.exchanger.borrow().tick(now);
            }
            plugin
                .counter(Verdict::CacheHit)
                .add(plugin.hits.replace(0));
        }
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            plugin: self.plugin.clone(),
            pending: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    plugin: Option<Rc<Plugin>>,
    /// The exchange waiting for the vault's answer, and the largest answer read.
    pending: Option<(Pending, usize)>,
}

impl Request {
    /// Logs, counts and carries out a decision; a call that cannot be
    /// dispatched is decided again as a failed one.
    fn carry_out(&mut self, plugin: &Plugin, decision: Decision, phase: Phase) -> Action {
        if let Some(warning) = &decision.warning {
            log(LogLevel::Warn, warning);
        }
        match step::carry_out(&decision.step, phase) {
            Carried::CallFailed(_) => {
                let Some(pending) = decision.pending else {
                    return Action::Pause;
                };
                let failed = plugin.exchanger.borrow_mut().on_answer(
                    pending,
                    Answer::Failed,
                    Plugin::clock(),
                    &mut SharedData,
                );
                self.carry_out(plugin, failed, phase)
            }
            carried => {
                plugin.count(decision.verdict);
                if let (Carried::Called(_), Step::Call(call)) = (carried, &decision.step) {
                    self.pending = decision.pending.map(|p| (p, call.max_answer_bytes));
                }
                carried.action()
            }
        }
    }
}

impl Context for Request {
    fn on_http_call_response(&mut self, _: u32, num_headers: usize, body_size: usize, _: usize) {
        let (Some(plugin), Some((pending, max_bytes))) = (self.plugin.clone(), self.pending.take())
        else {
            return;
        };
        let answer = step::read_answer(num_headers, body_size, max_bytes);
        let decision = plugin.exchanger.borrow_mut().on_answer(
            pending,
            answer,
            Plugin::clock(),
            &mut SharedData,
        );
        self.carry_out(&plugin, decision, Phase::Held);
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(plugin) = self.plugin.clone() else {
            respond(&response::unavailable(
                "not_configured",
                "the token-exchange filter has no valid policy",
            ));
            return Action::Pause;
        };
        let headers = hostcall::request_headers().unwrap_or_default();
        let [method, path, authorization, id @ ..] = headers.get_many(HEAD);
        let head = RequestHead {
            method: method.unwrap_or_default(),
            path: path.unwrap_or_default(),
            authorization,
            identity: ReceivedIdentity::from_values(id),
        };
        let decision = plugin
            .exchanger
            .borrow_mut()
            .decide(&head, Plugin::clock, &mut SharedData);
        self.carry_out(&plugin, decision, Phase::Headers)
    }
}
