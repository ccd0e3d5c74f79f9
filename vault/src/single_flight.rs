//! One async mutex per (user, connection), so that concurrent exchanges in
//! one process refresh upstream once: the first caller refreshes, the others
//! wait and then find the fresh token in the cache.

use crate::subject::User;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

type Gate = tokio::sync::Mutex<()>;

/// The per-key gates. Entries vanish once nobody holds or waits on them.
#[derive(Debug, Default)]
pub struct Flights {
    gates: Mutex<HashMap<(User, String), Weak<Gate>>>,
}

impl Flights {
    /// The gate for `user` at `connection`; lock it for the whole
    /// check-cache-then-refresh sequence.
    pub fn gate(&self, user: &User, connection: &str) -> Arc<Gate> {
        let mut gates = self
            .gates
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (user.clone(), connection.to_string());
        if let Some(gate) = gates.get(&key).and_then(Weak::upgrade) {
            return gate;
        }
        if gates.len() >= 1024 {
            gates.retain(|_, gate| gate.strong_count() > 0);
        }
        let gate = Arc::new(Gate::new(()));
        gates.insert(key, Arc::downgrade(&gate));
        gate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_shares_a_gate_and_unused_gates_are_dropped() {
        let f = Flights::default();
        let alice = User::new("https://a/", "alice");
        let a = f.gate(&alice, "google");
        let b = f.gate(&alice, "google");
        assert!(Arc::ptr_eq(&a, &b));
        let c = f.gate(&alice, "slack");
        assert!(!Arc::ptr_eq(&a, &c));
        drop((a, b));
        let d = f.gate(&alice, "google");
        assert_eq!(Arc::strong_count(&d), 1);
    }
}
