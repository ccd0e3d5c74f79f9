//! The app's key-value store (Spin's `default` store, `key_value_stores =
//! ["default"]` in the manifest) as the caches core keeps between requests:
//! a Spin host starts a fresh instance per request, so what must outlive
//! one goes here. A host that gives the component no store (or refuses a
//! read or a write) is a cache that always misses: correctness never
//! depends on it.

use agentward_core::fga::DecisionCache;
use agentward_core::shared_cache::SharedCache;
use spin_sdk::key_value::Store;

/// The `default` store, if the host gives this component one.
pub struct KeyValue {
    store: Option<Store>,
}

impl KeyValue {
    /// Opens the `default` store; without one, every read misses and every
    /// write is refused.
    pub fn open() -> KeyValue {
        KeyValue {
            store: Store::open_default().ok(),
        }
    }

    /// Whether the host gave a store.
    pub fn is_open(&self) -> bool {
        self.store.is_some()
    }
}

impl SharedCache for KeyValue {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.store.as_ref()?.get(key).ok().flatten()
    }

    fn set(&mut self, key: &str, value: &[u8]) -> bool {
        self.store
            .as_ref()
            .is_some_and(|store| store.set(key, value).is_ok())
    }
}

impl DecisionCache for KeyValue {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        SharedCache::get(self, key)
    }

    fn set(&mut self, key: &str, value: &[u8]) -> bool {
        SharedCache::set(self, key, value)
    }
}
