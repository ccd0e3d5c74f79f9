//! Human approval for risky requests (the ciba-hold plugin's core): which
//! requests need the user's approval ([`rule`], [`predicate`]), how the
//! action is described to the user ([`template`]), what the approval is
//! bound to ([`digest`], over [`canonical`] JSON), the CIBA client that asks
//! the authority and polls it ([`client`], configured by [`authority`]), the
//! deferred approval handle ([`handle`]) and the MCP forms of "approval
//! pending" ([`mcp`]). All pure: the plugin glue performs the calls.

pub mod authority;
pub mod canonical;
pub mod client;
pub mod digest;
pub mod field;
pub mod gate;
pub mod handle;
pub mod mcp;
pub mod predicate;
pub mod rule;
#[cfg(feature = "schema")]
mod schema;
pub mod template;

pub use authority::Authority;
pub use digest::{DigestBody, DigestInput, RequestDigest};
pub use field::Facts;
pub use handle::HandleKey;
pub use rule::{ApprovalRule, Mode, Needed, Refusal, RequestBody};

/// A random 128-bit nonce for [`HandleKey::seal`] (the host's randomness
/// in a wasm VM).
pub fn random_nonce() -> [u8; 16] {
    let (a, b) = crate::cache::random_secret();
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&b.to_le_bytes());
    out
}
