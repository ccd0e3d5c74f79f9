//! Glue between a wasi:http 0.2 host (Spin 3.x and later, the harness's
//! runner) and `agentward-core`, shared by the Spin components. Each
//! component is a small proxy: it reads the request, asks core, carries out
//! the step (callouts through `wasi:http/outgoing-handler`), and sends the
//! edited request on to its next hop, another component
//! (`http://<component>.spin.internal`, Spin's local service chaining) or
//! the upstream.
//!
//! Why a hop and not `wac plug`: in wasi:http 0.2 only the host can make an
//! `incoming-request`, so a component that imports the next component's
//! `incoming-handler` can hand it the request it got, untouched, and
//! nothing else. jwt-identity must strip spoofed identity headers and set
//! verified ones; token-exchange must replace `Authorization`: both edit
//! the request, which 0.2 composition cannot carry.
//!
//! Configuration comes from Spin variables (`fermyon:spin/variables`), see
//! [`config`].

pub mod config;
pub mod http;
pub mod kv;

pub use config::{now_ms, policy, proof_key, variable};
pub use http::{
    body_too_large, call, forward, read_body, relay, relay_replaced, respond, send_on, Head,
    Upstream,
};
pub use kv::KeyValue;

/// Writes a line to the host's log (stderr: Spin keeps it per component).
pub fn log(message: &str) {
    eprintln!("{message}");
}
