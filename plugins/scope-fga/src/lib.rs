//! scope-fga: for routes with an `fga` rule, the token's scopes (all or
//! any) and OpenFGA relationship checks for the user, the agent or both,
//! against an OpenFGA-compatible API (the vault's, or an OpenFGA server),
//! decisions cached in shared data; for routes with a `filter`, the JSON
//! response cut to the items the user (and the agent) may see before the
//! agent gets it. Decisions live in `agentward_core::fga::gate`; this file
//! is the proxy-wasm glue: read the request, ask the gate, carry out its
//! steps (`agentward_envoy::step`, `agentward_envoy::response_body`),
//! dispatch its calls, count its verdicts.

use agentward_core::fga::gate::{Gate, RequestHead};
use agentward_core::identity::ReceivedIdentity;
use agentward_core::mcp::McpHeaders;
use agentward_envoy::fga::{FgaPlugin, FgaStream, HEAD, TICK_SECONDS};
use agentward_envoy::{hostcall, log};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::rc::Rc;
use std::time::Duration;

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
    proxy_wasm::set_root_context(|_| Box::new(Root::default()));
}}

#[derive(Default)]
struct Root {
    plugin: Option<Rc<FgaPlugin>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let Some(gate) = agentward_envoy::after_identity(Gate::new) else {
            return false;
        };
        self.plugin = Some(Rc::new(FgaPlugin::new(gate)));
        if hostcall::set_tick_period(Duration::from_secs(TICK_SECONDS)).is_err() {
            log(
                LogLevel::Warn,
                "agentward: no tick period: the clock is read on every request",
            );
        }
        true
    }

    fn on_tick(&mut self) {
        if let Some(plugin) = &self.plugin {
            plugin.tick();
        }
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request(FgaStream::new(self.plugin.clone()))))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request(FgaStream);

impl Context for Request {
    fn on_http_call_response(&mut self, _: u32, num_headers: usize, body_size: usize, _: usize) {
        self.0.on_call_answer(num_headers, body_size);
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        if !self.0.configured() {
            return self.0.on_head(&RequestHead::default(), end_of_stream);
        }
        let headers = hostcall::request_headers().unwrap_or_default();
        let [method, path, authorization, mcp_method, mcp_name, id @ ..] = headers.get_many(HEAD);
        let binding = agentward_envoy::identity::binding(authorization);
        let head = RequestHead {
            method: method.unwrap_or_default(),
            path: path.unwrap_or_default(),
            bearer: binding.as_deref(),
            identity: ReceivedIdentity::from_values(id),
            mcp: McpHeaders {
                method: mcp_method,
                name: mcp_name,
            },
        };
        self.0.on_head(&head, end_of_stream)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.0.on_request_body(body_size, end_of_stream)
    }

    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        self.0.on_request_trailers()
    }

    fn on_http_response_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        self.0.on_response_headers(end_of_stream)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.0.on_response_body(body_size, end_of_stream)
    }

    fn on_http_response_trailers(&mut self, _: usize) -> Action {
        self.0.on_response_trailers()
    }
}
