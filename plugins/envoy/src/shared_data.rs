//! Envoy's shared data as core's [`SharedCache`]: one store for every VM
//! with the same `vm_id` (all workers), lost with the Envoy process.

use agentward_core::shared_cache::SharedCache;

/// Proxy-wasm shared data, through [`crate::hostcall`]: a host that cannot
/// answer is a miss, a refused write is lost.
#[derive(Debug, Clone, Copy, Default)]
pub struct SharedData;

impl SharedCache for SharedData {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let (bytes, _cas) = crate::hostcall::shared_data(key).ok()??;
        Some(bytes)
    }

    fn set(&mut self, key: &str, value: &[u8]) -> bool {
        crate::hostcall::set_shared_data(key, value, 0).is_ok()
    }
}

/// The same store holds scope-fga's decisions.
impl agentward_core::fga::DecisionCache for SharedData {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        SharedCache::get(self, key)
    }

    fn set(&mut self, key: &str, value: &[u8]) -> bool {
        SharedCache::set(self, key, value)
    }
}
