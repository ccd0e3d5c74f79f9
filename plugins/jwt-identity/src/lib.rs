//! jwt-identity: verifies the bearer JWT of each request and forwards the
//! verified identity as `x-agentward-*` headers. Decisions live in
//! `agentward_core::authn`, the proxy-wasm glue in `agentward_envoy::jwt`
//! (shared with `identity_fga.wasm`); this file makes it a filter of its
//! own: a request it lets go on goes on.

use agentward_core::step::Edits;
use agentward_envoy::held::{self, Released};
use agentward_envoy::jwt::{Allowed, JwtRoot, JwtStream};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

agentward_envoy::callbacks!(
    "proxy_on_request_headers",
    "proxy_on_http_call_response",
    "proxy_on_tick"
);

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|id| Box::new(Root(JwtRoot::new(id))));
}}

struct Root(JwtRoot);

/// A request allowed after a hold goes on.
fn go_on(_: u32, _: &Allowed<'_>) -> Released {
    held::resume_current(&Edits::none())
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body_size: usize, _: usize) {
        self.0.on_call_answer(token, headers, body_size, &mut go_on);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let Some(policy) = agentward_envoy::configured_policy() else {
            return false;
        };
        self.0.configure(policy);
        true
    }

    fn on_tick(&mut self) {
        self.0.tick(&mut go_on);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request(self.0.stream(context_id))))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request(JwtStream);

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        self.0.on_request_headers(|_| Action::Continue).action()
    }
}
