//! A bounded in-memory copy of stored tuples, one entry per
//! (object, relation): its users, so that a check walks usersets and parents
//! in memory instead of asking the database at every step.
//!
//! Correctness rests on the store's *revision*, a counter every write bumps
//! in the write's own transaction (`fga_revisions`). Each request reads it
//! first, with the store itself. A revision newer than the cache's starts a
//! new *epoch* for that store: entries are keyed by epoch, so everything
//! read before is dead at once (another replica wrote). A write through this
//! vault removes just the entries of the (object, relation) pairs it wrote,
//! then moves the cache to its revision. An entry is stored only by a
//! request that read the cache's current revision, so an answer read from
//! the database before a write committed is never kept after it.
//! Contextual tuples are never cached: the evaluator overlays them on what
//! this cache answers. Models are immutable and not involved.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Users of one (object, relation) kept at most; an entry with more only
/// records that, and the evaluator asks the database for it.
pub const MAX_ENTRY_USERS: usize = 1000;

/// Rows one set-at-a-time load reads at most; past that, entries load one
/// by one.
pub const MAX_LOAD_ROWS: usize = 20_000;

/// The default bound: tuples kept in memory (`[fga] cached_tuples`).
pub const DEFAULT_CACHED_TUPLES: usize = 300_000;

/// A stored tuple's user (`type:id` or `type:id#relation`; `relation` empty
/// for plain objects). Ordered by type, relation, id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoredUser {
    /// The user's type.
    pub type_name: Box<str>,
    /// The userset's relation, or empty.
    pub relation: Box<str>,
    /// The user's id (`*` for a wildcard).
    pub id: Box<str>,
}

/// What the cache knows of one (object, relation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Users {
    /// All its users, sorted.
    Listed(Arc<Listed>),
    /// More than [`MAX_ENTRY_USERS`]: ask the database.
    Many,
}

/// An entry's users, sorted by type, relation and id, and where each
/// (type, relation) runs in that order. A check looks a user up in its run
/// by id alone: comparing the type and relation at every step of the
/// binary search, equal for almost every user, was most of the evaluator's
/// time (`memcmp` in a profile of `cargo xtask bench --only fga-vault`).
#[derive(Debug, PartialEq, Eq)]
pub struct Listed {
    users: Box<[StoredUser]>,
    /// Each run, in order; few per entry.
    runs: Box<[Run]>,
}

/// Where the users of one (type, relation) are in [`Listed`]'s users.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    type_name: Box<str>,
    relation: Box<str>,
    start: usize,
    end: usize,
}

impl Listed {
    /// The users of one (type, relation), sorted by id.
    fn run(&self, type_name: &str, relation: &str) -> &[StoredUser] {
        self.runs
            .iter()
            .find(|run| &*run.type_name == type_name && &*run.relation == relation)
            .and_then(|run| self.users.get(run.start..run.end))
            .unwrap_or_default()
    }
}

impl Users {
    /// From the rows of a load that asked for one more than
    /// [`MAX_ENTRY_USERS`].
    pub fn from_rows(mut rows: Vec<StoredUser>) -> Users {
        if rows.len() > MAX_ENTRY_USERS {
            return Users::Many;
        }
        rows.sort_unstable();
        let mut runs: Vec<Run> = Vec::new();
        for (i, u) in rows.iter().enumerate() {
            match runs.last_mut() {
                Some(run) if run.type_name == u.type_name && run.relation == u.relation => {
                    run.end = i + 1
                }
                _ => runs.push(Run {
                    type_name: u.type_name.clone(),
                    relation: u.relation.clone(),
                    start: i,
                    end: i + 1,
                }),
            }
        }
        Users::Listed(Arc::new(Listed {
            users: rows.into(),
            runs: runs.into(),
        }))
    }

    /// Whether `type_name:id#relation` is among them (`None`: not listed).
    pub fn contains(&self, type_name: &str, id: &str, relation: &str) -> Option<bool> {
        let Users::Listed(listed) = self else {
            return None;
        };
        let run = listed.run(type_name, relation);
        Some(run.binary_search_by(|u| (*u.id).cmp(id)).is_ok())
    }

    /// The ids of the users of `type_name` with `relation` (empty: plain
    /// objects), in id order (`None`: not listed).
    pub fn ids(&self, type_name: &str, relation: &str) -> Option<Vec<String>> {
        let Users::Listed(listed) = self else {
            return None;
        };
        let run = listed.run(type_name, relation);
        Some(run.iter().map(|u| u.id.to_string()).collect())
    }

    fn weight(&self) -> usize {
        match self {
            Users::Listed(listed) => listed.users.len() + 1,
            Users::Many => 1,
        }
    }
}

/// (epoch, object type, object id, relation).
type Key = (u64, String, String, String);

/// One store's place in the cache.
#[derive(Debug, Clone, Copy)]
struct StoreState {
    revision: i64,
    epoch: u64,
}

#[derive(Debug, Default)]
struct Inner {
    last_epoch: u64,
    stores: HashMap<String, StoreState>,
    /// Two generations: new entries go to `current`; when it holds half the
    /// bound, it becomes `old` (the previous `old` is dropped). A hit in
    /// `old` moves the entry back to `current`.
    current: HashMap<Key, Users>,
    current_weight: usize,
    old: HashMap<Key, Users>,
}

impl Inner {
    fn insert(&mut self, key: Key, users: Users, half: usize) {
        let weight = users.weight();
        if self.current_weight + weight > half {
            self.old = std::mem::take(&mut self.current);
            self.current_weight = 0;
        }
        self.current_weight += weight;
        if let Some(replaced) = self.current.insert(key, users) {
            self.current_weight = self.current_weight.saturating_sub(replaced.weight());
        }
    }

    fn next_epoch(&mut self) -> u64 {
        self.last_epoch += 1;
        self.last_epoch
    }
}

/// The cache (see the module's comment).
#[derive(Debug)]
pub struct TupleCache {
    /// Tuples kept at most (over both generations); 0: off.
    bound: usize,
    inner: Mutex<Inner>,
}

/// One request's view of a store in the cache: the revision it read.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    cache: &'a TupleCache,
    epoch: u64,
    revision: i64,
}

impl TupleCache {
    /// A cache keeping at most `bound` tuples (0: off).
    pub fn new(bound: usize) -> TupleCache {
        TupleCache {
            bound,
            inner: Mutex::default(),
        }
    }

    /// The view of a request that read `revision` of `store_id`; `None` when
    /// the cache is off.
    pub fn view(&self, store_id: &str, revision: i64) -> Option<View<'_>> {
        if self.bound == 0 {
            return None;
        }
        let mut inner = self.inner.lock().ok()?;
        let state = match inner.stores.get(store_id).copied() {
            Some(s) if s.revision >= revision => s,
            _ => {
                let state = StoreState {
                    revision,
                    epoch: inner.next_epoch(),
                };
                inner.stores.insert(store_id.to_string(), state);
                state
            }
        };
        Some(View {
            cache: self,
            epoch: state.epoch,
            revision,
        })
    }

    /// After this vault wrote `keys` ((object type, object id, relation)) to
    /// `store_id` in the transaction that made `revision`: forgets those
    /// entries and moves the store to `revision` (or to a new epoch when it
    /// missed revisions in between).
    pub fn written<'k>(
        &self,
        store_id: &str,
        revision: i64,
        keys: impl Iterator<Item = (&'k str, &'k str, &'k str)>,
    ) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let Some(state) = inner.stores.get(store_id).copied() else {
            return;
        };
        if state.revision >= revision {
            // A request already read this revision or a later one: it started
            // a new epoch, with nothing read before the write.
            return;
        }
        if state.revision + 1 < revision {
            let epoch = inner.next_epoch();
            inner
                .stores
                .insert(store_id.to_string(), StoreState { revision, epoch });
            return;
        }
        for (object_type, object_id, relation) in keys {
            let key = (
                state.epoch,
                object_type.to_string(),
                object_id.to_string(),
                relation.to_string(),
            );
            if let Some(gone) = inner.current.remove(&key) {
                inner.current_weight = inner.current_weight.saturating_sub(gone.weight());
            }
            inner.old.remove(&key);
        }
        inner.stores.insert(
            store_id.to_string(),
            StoreState {
                revision,
                epoch: state.epoch,
            },
        );
    }

    /// Forgets a deleted store.
    pub fn forget_store(&self, store_id: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.stores.remove(store_id);
        }
    }

    /// Entries held (both generations), for tests.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .map(|i| i.current.len() + i.old.len())
            .unwrap_or(0)
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl View<'_> {
    fn key(&self, object_type: &str, object_id: &str, relation: &str) -> Key {
        (
            self.epoch,
            object_type.to_string(),
            object_id.to_string(),
            relation.to_string(),
        )
    }

    /// The users of `object_type:object_id#relation`, if cached.
    pub fn get(&self, object_type: &str, object_id: &str, relation: &str) -> Option<Users> {
        let key = self.key(object_type, object_id, relation);
        let mut inner = self.cache.inner.lock().ok()?;
        if let Some(users) = inner.current.get(&key) {
            return Some(users.clone());
        }
        let users = inner.old.remove(&key)?;
        inner.insert(key, users.clone(), self.cache.bound / 2);
        Some(users)
    }

    /// Which of `ids` (objects of `object_type`) have no entry for `relation`.
    pub fn missing(&self, object_type: &str, ids: &[String], relation: &str) -> Vec<String> {
        let Ok(inner) = self.cache.inner.lock() else {
            return Vec::new();
        };
        ids.iter()
            .filter(|id| {
                let key = self.key(object_type, id, relation);
                !inner.current.contains_key(&key) && !inner.old.contains_key(&key)
            })
            .cloned()
            .collect()
    }

    /// Keeps what a load read, unless the store moved on since this view's
    /// revision was read (then what was read may predate a write).
    pub fn put(
        &self,
        store_id: &str,
        object_type: &str,
        object_id: &str,
        relation: &str,
        users: Users,
    ) {
        let Ok(mut inner) = self.cache.inner.lock() else {
            return;
        };
        let current = inner
            .stores
            .get(store_id)
            .is_some_and(|s| s.epoch == self.epoch && s.revision == self.revision);
        if current {
            let key = self.key(object_type, object_id, relation);
            inner.insert(key, users, self.cache.bound / 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(t: &str, id: &str, r: &str) -> StoredUser {
        StoredUser {
            type_name: t.into(),
            relation: r.into(),
            id: id.into(),
        }
    }

    fn listed(users: &[StoredUser]) -> Users {
        Users::from_rows(users.to_vec())
    }

    #[test]
    fn listed_users_answer_membership_and_ids_by_type_and_relation() {
        let users = listed(&[
            user("user", "bob", ""),
            user("group", "eng", "member"),
            user("user", "*", ""),
            user("user", "anne", ""),
            user("group", "ops", "member"),
            user("group", "x", "owner"),
        ]);
        assert_eq!(users.contains("user", "anne", ""), Some(true));
        assert_eq!(users.contains("user", "carl", ""), Some(false));
        assert_eq!(users.contains("group", "eng", ""), Some(false));
        assert_eq!(
            users.ids("group", "member"),
            Some(vec!["eng".into(), "ops".into()])
        );
        assert_eq!(
            users.ids("user", ""),
            Some(vec!["*".into(), "anne".into(), "bob".into()])
        );
        assert_eq!(users.ids("team", "member"), Some(vec![]));
        let many = Users::from_rows(vec![user("user", "a", ""); MAX_ENTRY_USERS + 1]);
        assert_eq!(many, Users::Many);
        assert_eq!(many.contains("user", "a", ""), None);
    }

    #[test]
    fn an_entry_read_before_a_write_is_not_kept_after_it() {
        let cache = TupleCache::new(1000);
        let before = cache.view("s", 4).unwrap();
        // The write commits (revision 5) and is applied to the cache...
        cache.written("s", 5, [("group", "eng", "member")].into_iter());
        // ...then the request that read revision 4 stores what it read.
        before.put("s", "group", "eng", "member", listed(&[]));
        let after = cache.view("s", 5).unwrap();
        assert_eq!(after.get("group", "eng", "member"), None);
        after.put("s", "group", "eng", "member", listed(&[]));
        assert_eq!(
            after.get("group", "eng", "member"),
            Some(listed(&[])),
            "a request at the current revision keeps what it read"
        );
    }

    #[test]
    fn a_write_here_forgets_only_what_it_wrote() {
        let cache = TupleCache::new(1000);
        let v = cache.view("s", 1).unwrap();
        v.put("s", "group", "eng", "member", listed(&[]));
        v.put("s", "group", "ops", "member", listed(&[]));
        cache.written("s", 2, [("group", "eng", "member")].into_iter());
        let v = cache.view("s", 2).unwrap();
        assert_eq!(v.get("group", "eng", "member"), None);
        assert_eq!(v.get("group", "ops", "member"), Some(listed(&[])));
    }

    #[test]
    fn a_newer_revision_from_elsewhere_forgets_the_whole_store() {
        let cache = TupleCache::new(1000);
        let v = cache.view("s", 1).unwrap();
        v.put("s", "group", "eng", "member", listed(&[]));
        let other = cache.view("t", 1).unwrap();
        other.put("t", "group", "eng", "member", listed(&[]));
        // Another replica wrote revision 2: this vault never saw the write.
        let v = cache.view("s", 2).unwrap();
        assert_eq!(v.get("group", "eng", "member"), None);
        assert_eq!(
            cache.view("t", 1).unwrap().get("group", "eng", "member"),
            Some(listed(&[]))
        );
        // A write here after missing revisions forgets everything too.
        v.put("s", "group", "ops", "member", listed(&[]));
        cache.written("s", 4, [("group", "eng", "member")].into_iter());
        assert_eq!(
            cache.view("s", 4).unwrap().get("group", "ops", "member"),
            None
        );
    }

    #[test]
    fn an_older_request_reads_but_does_not_store() {
        let cache = TupleCache::new(1000);
        let v = cache.view("s", 3).unwrap();
        v.put("s", "group", "eng", "member", listed(&[]));
        let late = cache.view("s", 2).unwrap();
        assert_eq!(late.get("group", "eng", "member"), Some(listed(&[])));
        late.put("s", "group", "ops", "member", listed(&[]));
        assert_eq!(v.get("group", "ops", "member"), None);
    }

    #[test]
    fn the_bound_holds_and_recent_entries_survive() {
        let cache = TupleCache::new(100);
        let v = cache.view("s", 1).unwrap();
        let ten: Vec<StoredUser> = (0..9).map(|i| user("user", &i.to_string(), "")).collect();
        for i in 0..50 {
            v.put("s", "group", &i.to_string(), "member", listed(&ten));
            // Keep group 0 in use.
            assert!(v.get("group", "0", "member").is_some(), "{i}");
        }
        let inner = cache.inner.lock().unwrap();
        let held: usize = inner
            .current
            .values()
            .chain(inner.old.values())
            .map(Users::weight)
            .sum();
        assert!(held <= 100, "{held}");
    }

    #[test]
    fn off_when_the_bound_is_zero_and_a_deleted_store_starts_over() {
        assert!(TupleCache::new(0).view("s", 1).is_none());
        let cache = TupleCache::new(10);
        let v = cache.view("s", 7).unwrap();
        v.put("s", "group", "eng", "member", listed(&[]));
        cache.forget_store("s");
        assert_eq!(
            cache.view("s", 0).unwrap().get("group", "eng", "member"),
            None
        );
    }
}
