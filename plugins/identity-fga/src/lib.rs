//! identity-fga: jwt-identity and scope-fga in one filter. A request is
//! read once and lives in one context: jwt-identity verifies its token and
//! sets the identity headers (`agentward_envoy::jwt`), then scope-fga
//! decides on that identity as it is in memory (`agentward_envoy::fga`),
//! where two filters would each pay a context, a read of the request and a
//! read of the binding jwt-identity leaves for the next. The identity
//! headers, the proof and the binding are still set for the filters after
//! it (ciba-hold, token-exchange) and the upstream. Use it where nothing
//! runs between the two; the separate filters stay for chains that need
//! something in between.
//!
//! A request jwt-identity holds until its issuer's keys arrive is decided
//! by the root: scope-fga's part of it is kept here ([`Held`]), and a call
//! scope-fga makes for it then is answered at the root and routed back to
//! the request's context.

use agentward_core::fga::gate::{Gate, RequestHead};
use agentward_core::mcp::{self, McpHeaders};
use agentward_core::step::Edits;
use agentward_envoy::fga::{FgaPlugin, FgaStream};
use agentward_envoy::held::{self, Released};
use agentward_envoy::jwt::{Allowed, Headed, JwtRoot, JwtStream};
use agentward_envoy::{log, respond, SharedData};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

agentward_envoy::callbacks!(
    "proxy_on_request_headers",
    "proxy_on_request_body",
    "proxy_on_request_trailers",
    "proxy_on_response_headers",
    "proxy_on_response_body",
    "proxy_on_response_trailers",
    "proxy_on_http_call_response",
    "proxy_on_tick"
);

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|id| Box::new(Root {
        id,
        jwt: JwtRoot::new(id),
        fga: None,
        held: Rc::new(Held::default()),
    }));
}}

/// scope-fga's part of a request, shared by its context and the root.
type Part = Rc<RefCell<FgaStream>>;

/// The requests jwt-identity holds, as the root decides them later.
#[derive(Default)]
struct Held {
    /// By context id: scope-fga's part, and whether the request ended
    /// with its headers.
    streams: RefCell<HashMap<u32, (Part, bool)>>,
    /// Calls scope-fga made from the root for one of them: token → its
    /// context id.
    calls: RefCell<HashMap<u32, u32>>,
}

impl Held {
    /// Notes the call `stream` (of request `id`) made last, if any: its
    /// answer comes to the root.
    fn note_call(&self, id: u32, stream: &mut FgaStream) {
        if let Some(token) = stream.take_called() {
            self.calls.borrow_mut().insert(token, id);
        }
    }

    /// scope-fga's part of held request `id`.
    fn stream(&self, id: u32) -> Option<(Part, bool)> {
        self.streams.borrow().get(&id).cloned()
    }

    /// Hands request `id`, which jwt-identity allowed after holding it,
    /// to scope-fga (in its context, from the root).
    fn hand_on(&self, id: u32, allowed: &Allowed<'_>) -> Released {
        let Some((stream, end_of_stream)) = self.stream(id) else {
            return unavailable("the gateway lost track of this request");
        };
        let Ok(mut fga) = stream.try_borrow_mut() else {
            return busy();
        };
        let action = fga.on_head(&fga_head(allowed), end_of_stream);
        self.note_call(id, &mut fga);
        drop(fga);
        if action == Action::Continue {
            held::resume_current(&Edits::none())
        } else {
            Released::Done // answered, or waiting for its checks
        }
    }
}

/// A request found busy where it cannot be (a host calling back into it
/// while it is being decided): answered 503 rather than decided twice.
fn busy() -> Released {
    unavailable("the gateway was deciding this request already")
}

/// Answers the current request 503 (`internal`): the gateway cannot
/// decide it, so it does not go on.
fn unavailable(why: &str) -> Released {
    respond(&agentward_core::response::unavailable("internal", why));
    Released::Done
}

/// scope-fga's view of a request jwt-identity allowed: the identity as set,
/// the binding as left, the path as rewritten.
fn fga_head<'a>(allowed: &Allowed<'a>) -> RequestHead<'a> {
    let [method, name] = allowed
        .headers
        .get_many([mcp::METHOD_HEADER, mcp::NAME_HEADER]);
    RequestHead {
        method: allowed.method,
        path: allowed.path,
        bearer: allowed.binding,
        identity: allowed.identity(),
        mcp: McpHeaders { method, name },
    }
}

struct Root {
    id: u32,
    jwt: JwtRoot,
    fga: Option<Rc<FgaPlugin>>,
    held: Rc<Held>,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body_size: usize, _: usize) {
        let held = self.held.clone();
        let mut hand_on = |id: u32, allowed: &Allowed<'_>| held.hand_on(id, allowed);
        if self
            .jwt
            .on_call_answer(token, headers, body_size, &mut hand_on)
        {
            return;
        }
        // A check scope-fga made for a request the root handed on.
        let Some(id) = held.calls.borrow_mut().remove(&token) else {
            return;
        };
        let Some((stream, _)) = held.stream(id) else {
            return; // its client went away
        };
        held::within(id, self.id, || match stream.try_borrow_mut() {
            Ok(mut fga) => {
                fga.on_call_answer(headers, body_size);
                held.note_call(id, &mut fga);
            }
            Err(_) => {
                busy();
            }
        });
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let Some(policy) = agentward_envoy::configured_policy() else {
            return false;
        };
        let mut gate = match Gate::new(policy.clone(), |name| std::env::var(name).ok()) {
            Ok(gate) => gate,
            Err(e) => {
                log(LogLevel::Error, &format!("agentward: {e}"));
                return false;
            }
        };
        self.jwt.configure(policy);
        gate.read_proof_key(&SharedData);
        self.fga = Some(Rc::new(FgaPlugin::new(gate)));
        true
    }

    fn on_tick(&mut self) {
        let held = self.held.clone();
        self.jwt.tick(&mut |id, allowed| held.hand_on(id, allowed));
        if let Some(fga) = &self.fga {
            fga.tick();
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            id: context_id,
            jwt: self.jwt.stream(context_id),
            fga: Rc::new(RefCell::new(FgaStream::new(self.fga.clone()))),
            held: self.held.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    id: u32,
    jwt: JwtStream,
    fga: Part,
    held: Rc<Held>,
}

impl Request {
    /// Runs `f` on scope-fga's part of the request.
    fn fga(&self, f: impl FnOnce(&mut FgaStream) -> Action) -> Action {
        match self.fga.try_borrow_mut() {
            Ok(mut fga) => f(&mut fga),
            Err(_) => {
                busy();
                Action::Pause
            }
        }
    }
}

impl Context for Request {
    fn on_http_call_response(&mut self, _: u32, num_headers: usize, body_size: usize, _: usize) {
        self.fga(|fga| {
            fga.on_call_answer(num_headers, body_size);
            Action::Continue
        });
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        let fga = &self.fga;
        let headed = self
            .jwt
            .on_request_headers(|allowed| match fga.try_borrow_mut() {
                Ok(mut fga) => fga.on_head(&fga_head(allowed), end_of_stream),
                Err(_) => {
                    busy();
                    Action::Pause
                }
            });
        if headed == Headed::Held {
            let kept = (self.fga.clone(), end_of_stream);
            self.held.streams.borrow_mut().insert(self.id, kept);
        }
        headed.action()
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.fga(|fga| fga.on_request_body(body_size, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        self.fga(|fga| fga.on_request_trailers())
    }

    fn on_http_response_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        self.fga(|fga| fga.on_response_headers(end_of_stream))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.fga(|fga| fga.on_response_body(body_size, end_of_stream))
    }

    fn on_http_response_trailers(&mut self, _: usize) -> Action {
        self.fga(|fga| fga.on_response_trailers())
    }
}

/// A request the root may still decide is forgotten when its stream ends.
impl Drop for Request {
    fn drop(&mut self) {
        let held = match self.held.streams.try_borrow_mut() {
            Ok(mut streams) => streams.remove(&self.id),
            Err(_) => None,
        };
        if let (Some(_), Ok(mut calls)) = (held, self.held.calls.try_borrow_mut()) {
            calls.retain(|_, id| *id != self.id);
        }
    }
}
