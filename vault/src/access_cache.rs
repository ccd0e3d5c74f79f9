//! A short-lived in-memory copy of decrypted upstream access tokens per
//! (user, connection), the user being an issuer and a subject, so a repeated exchange skips the database read and the
//! AES-GCM open. Each entry is what the vault read from (or wrote to) the row
//! at one `version` and is served for at most [`TTL`]: every write in this
//! process (refresh, relink, unlink, broken link) drops the entry first, and a
//! relink, unlink or broken link at another replica (PostgreSQL) drops it on
//! that replica's notice ([`crate::link_events`]), or within [`TTL`] at the
//! latest (another replica's refresh leaves a token that still works). A token is
//! still only served while it has more than the refresh margin left.

use crate::secret::Secret;
use crate::subject::User;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest time an entry is served without looking at the database.
pub const TTL: Duration = Duration::from_secs(5);
/// Most entries kept; beyond that the cache starts over.
const MAX_ENTRIES: usize = 10_000;

/// A decrypted access token as of one row version.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The upstream access token.
    pub token: Secret,
    /// Unix time it expires at.
    pub expires_at: i64,
    /// Scope granted to the link.
    pub scope: Option<String>,
    /// The row version it was read at or written as.
    pub version: i64,
    cached_at: Instant,
}

impl Entry {
    /// An entry cached now.
    pub fn new(token: String, expires_at: i64, scope: Option<String>, version: i64) -> Entry {
        Entry {
            token: Secret::new(token),
            expires_at,
            scope,
            version,
            cached_at: Instant::now(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Moves on every invalidation, so a read that raced a write is not cached.
    generation: u64,
    entries: HashMap<(User, String), Entry>,
}

/// The cache; see the module documentation.
#[derive(Debug, Default)]
pub struct AccessCache {
    inner: Mutex<Inner>,
}

impl AccessCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Take this before reading the row whose contents will be cached.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The entry for (`user`, `connection`) if it is younger than [`TTL`].
    pub fn get(&self, user: &User, connection: &str) -> Option<Entry> {
        let mut inner = self.lock();
        let key = (user.clone(), connection.to_string());
        match inner.entries.get(&key) {
            Some(e) if e.cached_at.elapsed() < TTL => Some(e.clone()),
            Some(_) => {
                inner.entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Caches an entry read or written after [`AccessCache::generation`]
    /// returned `generation`; ignored if an invalidation came in between.
    pub fn insert(&self, generation: u64, user: &User, connection: &str, entry: Entry) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.entries.len() >= MAX_ENTRIES {
            inner.entries.retain(|_, e| e.cached_at.elapsed() < TTL);
            if inner.entries.len() >= MAX_ENTRIES {
                inner.entries.clear();
            }
        }
        inner
            .entries
            .insert((user.clone(), connection.to_string()), entry);
    }

    /// Drops every entry (notices of other replicas' writes may have been missed).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.clear();
    }

    /// Drops the entry of (`user`, `connection`); call after writing its row.
    pub fn invalidate(&self, user: &User, connection: &str) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner
            .entries
            .remove(&(user.clone(), connection.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(issuer: &str, sub: &str) -> User {
        User::new(issuer, sub)
    }

    #[test]
    fn entries_expire_and_invalidation_wins_races() {
        let cache = AccessCache::default();
        let alice = user("https://a/", "alice");
        let g = cache.generation();
        cache.insert(g, &alice, "stocks", Entry::new("t1".into(), 100, None, 1));
        assert_eq!(cache.get(&alice, "stocks").unwrap().token.expose(), "t1");
        assert!(!format!("{cache:?}").contains("t1"));
        assert!(cache.get(&user("https://a/", "bob"), "stocks").is_none());
        // The same `sub` at another issuer is another user.
        assert!(cache.get(&user("https://b/", "alice"), "stocks").is_none());
        cache.invalidate(&alice, "stocks");
        assert!(cache.get(&alice, "stocks").is_none());
        // A read taken before the invalidation is not cached.
        cache.insert(g, &alice, "stocks", Entry::new("t0".into(), 100, None, 1));
        assert!(cache.get(&alice, "stocks").is_none());
        // An entry older than the TTL is not served.
        let g = cache.generation();
        let mut old = Entry::new("t2".into(), 100, None, 2);
        old.cached_at = Instant::now()
            .checked_sub(TTL + Duration::from_millis(1))
            .unwrap();
        cache.insert(g, &alice, "stocks", old);
        assert!(cache.get(&alice, "stocks").is_none());
    }
}
