//! A store that outlives one request and one VM: Envoy's shared data (seen
//! by every worker VM with the same `vm_id`), a Spin key-value store (a Spin
//! host starts a fresh instance per request), or a map in tests. Decisions
//! keep what must survive there, as bytes (serde JSON), and nothing else.

use std::collections::HashMap;

/// Bytes by key, shared beyond this instance. Writes are last-writer-wins
/// and may be lost (a host that refuses is a miss next time): a cache, not
/// a database.
pub trait SharedCache {
    /// The value under `key`; `None` when absent or unreadable.
    fn get(&self, key: &str) -> Option<Vec<u8>>;

    /// Stores `value` under `key`; false when the host refused.
    fn set(&mut self, key: &str, value: &[u8]) -> bool;
}

/// A [`SharedCache`] that holds nothing: for a decision that reads no
/// shared data (ciba-hold reads jwt-identity's proof key on tick instead).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSharedCache;

impl SharedCache for NoSharedCache {
    fn get(&self, _: &str) -> Option<Vec<u8>> {
        None
    }

    fn set(&mut self, _: &str, _: &[u8]) -> bool {
        false
    }
}

/// A [`SharedCache`] in memory: for tests, and for hosts whose instances
/// live as long as the process.
#[derive(Debug, Clone, Default)]
pub struct MemoryCache {
    entries: HashMap<String, Vec<u8>>,
}

impl MemoryCache {
    /// An empty cache.
    pub fn new() -> MemoryCache {
        MemoryCache::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The keys, in no order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

impl SharedCache for MemoryCache {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.entries.get(key).cloned()
    }

    fn set(&mut self, key: &str, value: &[u8]) -> bool {
        self.entries.insert(key.to_string(), value.to_vec());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_write_stays() {
        let mut c = MemoryCache::new();
        assert_eq!(c.get("k"), None);
        assert!(c.set("k", b"1") && c.set("k", b"2"));
        assert_eq!(c.get("k").as_deref(), Some(&b"2"[..]));
        assert_eq!(c.len(), 1);
        assert_eq!(c.keys().collect::<Vec<_>>(), ["k"]);
    }
}
