//! A bounded cache of verified tokens: the hash of a token maps to what its
//! verification produced, until the token expires. Verification is the
//! costly part of a request; a repeated token skips it.

use siphasher::sip128::{Hasher128, SipHasher13};
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

/// Key of a cached entry: a 128-bit hash of the token (and of whatever else
/// selects the entry), see [`TokenCache::key`]. The cache holds no bearer
/// tokens.
pub type TokenKey = [u8; 16];

/// Verified tokens, evicted at `exp` and first-in first-out beyond the bound.
/// `V` is cheap to clone: an `Rc` in a wasm VM, an `Arc` in a threaded host.
#[derive(Debug)]
pub struct TokenCache<V> {
    entries: HashMap<TokenKey, (u64, V), BuildHasherDefault<KeyHasher>>,
    order: VecDeque<TokenKey>,
    max_entries: usize,
    /// The keys' secret, drawn at random when the cache is made.
    secret: (u64, u64),
}

/// Hashes a [`TokenKey`] in the map by taking its first eight bytes: the
/// key is already a keyed hash nobody outside can aim at, so hashing it
/// again would only cost time.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }

    // The slice's length prefix carries nothing: every key is 16 bytes.
    fn write_usize(&mut self, _: usize) {}
}

/// Two random 64-bit words from the standard library's per-process
/// random source (the host's `random_get` in a wasm VM).
pub(crate) fn random_secret() -> (u64, u64) {
    let word = |n: u8| {
        let mut h = RandomState::new().build_hasher();
        h.write_u8(n);
        h.finish()
    };
    (word(0), word(1))
}

impl<V: Clone> TokenCache<V> {
    /// A cache of at most `max_entries` tokens (0 disables caching).
    pub fn new(max_entries: usize) -> Self {
        TokenCache {
            entries: HashMap::default(),
            order: VecDeque::new(),
            max_entries,
            secret: random_secret(),
        }
    }

    /// The key of an entry selected by `parts` (a token, then what else
    /// tells entries apart): the 128-bit SipHash-1-3 of the length-prefixed
    /// parts under this cache's random secret, in one pass. Nobody outside
    /// the process knows the secret, so nobody can aim for a collision; on a
    /// 500-byte token it costs a twentieth of SHA-256, which shows on every
    /// cached request.
    pub fn key(&self, parts: &[&str]) -> TokenKey {
        let mut h = SipHasher13::new_with_keys(self.secret.0, self.secret.1);
        for part in parts {
            h.write(&(part.len() as u64).to_le_bytes());
            h.write(part.as_bytes());
        }
        h.finish128().as_bytes()
    }

    /// The cached value, if present and `now` is not past `valid_until`.
    pub fn get(&mut self, key: &TokenKey, now: u64) -> Option<V> {
        match self.entries.get(key) {
            Some((valid_until, value)) if now <= *valid_until => Some(value.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Caches a value until `valid_until` (Unix seconds).
    pub fn insert(&mut self, key: TokenKey, valid_until: u64, value: V) {
        if self.max_entries == 0 {
            return;
        }
        while self.entries.len() >= self.max_entries {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
        if self.entries.insert(key, (valid_until, value)).is_none() {
            self.order.push_back(key);
        }
        // Keys of entries removed at expiry linger in `order`; trim them.
        if self.order.len() > 2 * self.max_entries {
            let entries = &self.entries;
            self.order.retain(|k| entries.contains_key(k));
        }
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops everything (e.g. when an issuer's keys change).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn entries_expire_at_their_time() {
        let mut c = TokenCache::new(10);
        let k = c.key(&["a.b.c"]);
        c.insert(k, 100, Rc::new(1));
        assert_eq!(c.get(&k, 100).as_deref(), Some(&1));
        assert_eq!(c.get(&k, 101), None);
        assert!(c.is_empty());
    }

    #[test]
    fn the_bound_holds() {
        let mut c = TokenCache::new(3);
        for i in 0..10 {
            let k = c.key(&[&i.to_string()]);
            c.insert(k, 1000, Rc::new(i));
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(&c.key(&["9"]), 0).is_some());
        assert!(c.get(&c.key(&["0"]), 0).is_none());
    }

    #[test]
    fn zero_disables() {
        let mut c = TokenCache::new(0);
        c.insert(c.key(&["x"]), 1000, Rc::new(()));
        assert!(c.is_empty());
    }

    #[test]
    fn keys_are_length_prefixed_and_secret() {
        let c: TokenCache<()> = TokenCache::new(1);
        assert_eq!(c.key(&["ab", "c"]), c.key(&["ab", "c"]));
        assert_ne!(c.key(&["ab", "c"]), c.key(&["a", "bc"]));
        assert_ne!(c.key(&["ab"]), c.key(&["ab", ""]));
        let k = c.key(&["token"]);
        assert_ne!(k[..8], k[8..], "128 bits, not 64 twice");
        let other: TokenCache<()> = TokenCache::new(1);
        assert_ne!(k, other.key(&["token"]), "each cache draws its own secret");
    }
}
