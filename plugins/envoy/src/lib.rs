//! Glue between proxy-wasm hosts (Envoy) and `agentward-core`, shared by the
//! agentward plugins. The SDK's own wrappers panic on any unexpected status,
//! and a panic in Envoy kills the worker's VM: the calls a request path makes
//! go through [`hostcall`], which returns the status instead.

pub mod fga;
pub mod held;
pub mod hostcall;
pub mod identity;
pub mod jwt;
pub mod metrics;
pub mod proof;
pub mod request_body;
pub mod response_body;
pub mod shared_data;
pub mod step;
pub mod verify;

pub use metrics::{Counter, Metrics};
pub use shared_data::SharedData;
pub use verify::EnvoyVerifier;

use agentward_core::policy::PolicyError;
use agentward_core::proof::ChecksProofs;
use agentward_core::response::LocalResponse;
use agentward_core::Policy;
use proxy_wasm::types::{BufferType, LogLevel, Status};

/// Names the proxy-wasm callbacks a plugin implements, beyond the ones the
/// SDK always needs (context creation and deletion, configuration, memory).
/// The SDK exports every `proxy_on_*` callback and Envoy calls each export
/// it finds, so `cargo xtask build` unexports the others: a filter that
/// implements `proxy_on_request_headers` alone is no longer called for the
/// response headers, the body, the log and the end of the stream. The list
/// goes into a custom section, `agentward.callbacks`, that the build reads
/// and removes; a module built with plain `cargo build` keeps every export
/// and behaves the same, only slower.
///
/// ```ignore
/// agentward_envoy::callbacks!("proxy_on_request_headers", "proxy_on_http_call_response");
/// ```
#[macro_export]
macro_rules! callbacks {
    ($($name:literal),+ $(,)?) => {
        const _: () = {
            const LIST: &str = concat!($($name, "\n"),+);
            #[cfg(target_arch = "wasm32")]
            #[link_section = "agentward.callbacks"]
            #[used]
            static CALLBACKS: [u8; LIST.len()] = $crate::section_bytes(LIST);
        };
    };
}

/// The bytes of `text` as an array, for [`callbacks!`].
#[doc(hidden)]
pub const fn section_bytes<const N: usize>(text: &str) -> [u8; N] {
    let bytes = text.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// Milliseconds since the Unix epoch, from the host's clock; an error when
/// the host cannot tell (a caller deciding on expiry then fails closed).
pub fn now_ms() -> Result<u64, Status> {
    hostcall::now_nanos().map(|ns| ns / 1_000_000)
}

/// The answer to a request when the host's clock cannot be read: expiry
/// cannot be checked, so nothing is let through.
pub fn clock_unavailable() -> LocalResponse {
    agentward_core::response::clock_unavailable()
}

/// Logs, ignoring a host that refuses (there is nothing better to do).
pub fn log(level: LogLevel, message: &str) {
    let _ = hostcall::log(level, message);
}

/// Sends a local response on the current context; logs when the host refuses.
pub fn respond(answer: &LocalResponse) {
    let headers: Vec<(&str, &str)> = answer
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    if let Err(status) =
        hostcall::send_local_response(answer.status, &headers, answer.body.as_bytes())
    {
        log(
            LogLevel::Warn,
            &format!("agentward: local response refused by the host (status {status:?})"),
        );
    }
}

/// Reads and validates the plugin configuration (the policy document);
/// logs the field at fault and returns `None` when it is not valid, so that
/// `on_configure` refuses to start.
pub fn configured_policy() -> Option<Policy> {
    let config = hostcall::buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .ok()
        .flatten()
        .unwrap_or_default();
    match Policy::parse(&config) {
        Ok(policy) => Some(policy),
        Err(e) => {
            log(LogLevel::Error, &format!("agentward: {e}"));
            None
        }
    }
}

/// The start of a filter after jwt-identity (scope-fga, ciba-hold,
/// token-exchange): the policy from the plugin configuration, made into the
/// filter's decision maker by `make` with the VM's environment (Envoy:
/// `vm_config.environment_variables`), then jwt-identity's proof key read
/// from shared data. `None` (logged, naming the field at fault) refuses
/// to start.
pub fn after_identity<T: ChecksProofs>(
    make: impl FnOnce(Policy, fn(&str) -> Option<String>) -> Result<T, PolicyError>,
) -> Option<T> {
    let policy = configured_policy()?;
    match make(policy, |name| std::env::var(name).ok()) {
        Ok(filter) => {
            filter.proofs().read_key(&SharedData);
            Some(filter)
        }
        Err(e) => {
            log(LogLevel::Error, &format!("agentward: {e}"));
            None
        }
    }
}
