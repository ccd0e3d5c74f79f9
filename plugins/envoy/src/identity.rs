//! The verified identity from a later filter's side: jwt-identity leaves
//! what its proof is bound to in the request's [`BINDING`] property (Envoy
//! filter state, per stream, settable by no client), so filters after it
//! check the `x-agentward-proof` even where jwt-identity removed the bearer
//! token (see `agentward_core::proof`).

use crate::hostcall;
use agentward_core::bearer;
use agentward_core::proof::{signature_part, BINDING};
use proxy_wasm::types::Status;

/// Leaves `binding` (from `Authenticator::binding`) on the current request
/// for the filters after jwt-identity.
pub fn bind(binding: &str) -> Result<(), Status> {
    hostcall::set_property(BINDING, binding.as_bytes())
}

/// What the current request's identity proof is checked against: the
/// binding jwt-identity left on this request, else the bearer token of
/// `authorization` (a chain whose jwt-identity predates the binding).
/// `None`: nothing to check a proof against, so no identity is proven.
pub fn binding(authorization: Option<&str>) -> Option<String> {
    if let Ok(Some(bytes)) = hostcall::property(BINDING) {
        if let Ok(bound) = String::from_utf8(bytes) {
            if !bound.is_empty() {
                return Some(bound);
            }
        }
    }
    authorization
        .and_then(bearer::token)
        .map(|token| signature_part(token).to_string())
}
