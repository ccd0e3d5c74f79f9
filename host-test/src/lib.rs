//! A proxy-wasm (ABI 0.2.1) host on wasmtime, for testing the real plugin
//! `.wasm` files without Envoy.
//!
//! It loads a `wasm32-wasip1` plugin built with the Rust `proxy-wasm` SDK,
//! creates its root context, and lets a test drive it the way Envoy would:
//! configuration, ticks on a clock the test controls, HTTP contexts through
//! headers, body and trailers, callouts the test answers (or forwards to a
//! real local server), shared data across several hosts, metrics, and
//! Envoy's `verify_signature` foreign function. It records what the plugin
//! did so the test can assert on it.
//!
//! Where Envoy 1.40 behaves in a way plugins trip over, the host does the
//! same (see DESIGN.md): a paused headers callback withholds the body,
//! headers already passed on cannot be edited (`BadArgument`), a stale CAS is
//! a `CasMismatch`, `proxy_set_effective_context` on a finished context is a
//! `BadArgument`, and a trap breaks the VM for every later call.
//!
//! ```no_run
//! use host_test::{Action, Host, HostOptions};
//!
//! let host = Host::load("jwt_identity.wasm", HostOptions::default())?;
//! assert!(host.configure(r#"{"issuers": []}"#)?);
//! let req = host.http_context()?;
//! let action = req.request_headers(&[(":method", "GET"), (":path", "/x")], true)?;
//! assert_eq!(action, Action::Pause);
//! let answer = req.record().local_response.expect("a local answer");
//! assert_eq!(answer.status, 401);
//! # Ok::<(), host_test::Error>(())
//! ```

mod abi;
mod foreign;
mod headers;
mod host;
mod hostcalls;
mod http_call;
mod metrics;
mod record;
pub mod serve;
mod shared;
mod state;
pub mod suite;
pub mod validate;
mod wasi;

pub use abi::{Action, LogLevel, MapType, Status, StreamType};
pub use foreign::{
    verify_signature, VerifySignatureArguments, VerifySignatureResult, VERIFY_SIGNATURE,
};
pub use headers::HeaderMap;
pub use host::{Error, Host, HostOptions, HttpContext, Result, ROOT_CONTEXT_ID};
pub use http_call::{CallState, Cluster, HttpCall, HttpCallResponse};
pub use metrics::{Metric, MetricKind};
pub use record::{Callback, HeaderEdit, HttpRecord, LocalResponse, LogEntry, LogSource};
pub use shared::SharedData;
