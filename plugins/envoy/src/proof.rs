//! The identity proof's key in shared data (see `agentward_core::proof`):
//! jwt-identity makes it, every filter with the same `vm_id` reads it.

use agentward_core::proof::{ProofKey, KEY_NAME};

/// The proof key in shared data, if one is there.
pub fn shared_key() -> Option<ProofKey> {
    let (bytes, _) = crate::hostcall::shared_data(KEY_NAME).ok()??;
    ProofKey::from_bytes(&bytes)
}

/// The proof key in shared data, made at random by the first VM that asks.
/// Shared data cannot "create if absent": two VMs that start at the same
/// moment may both write, and each then uses what it reads back. A VM that
/// lost that race finds the other key on a later [`shared_key`] (jwt-identity
/// reads it on every tick, token-exchange before it refuses a proof).
pub fn shared_key_or_create() -> Option<ProofKey> {
    if let Some(key) = shared_key() {
        return Some(key);
    }
    let fresh = ProofKey::generate().to_bytes();
    crate::hostcall::set_shared_data(KEY_NAME, &fresh, 0).ok()?;
    shared_key()
}
