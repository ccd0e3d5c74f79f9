//! Shared data and shared queues: the state Envoy keeps across worker VMs.
//!
//! Clone one [`SharedData`] into the [`HostOptions`](crate::HostOptions) of
//! several hosts to model several workers of one Envoy.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::abi::Status;

/// A handle on one shared-data store and its queues; clones share it.
#[derive(Clone, Debug, Default)]
pub struct SharedData {
    inner: Arc<Mutex<Store>>,
}

#[derive(Debug, Default)]
struct Store {
    values: HashMap<String, (Vec<u8>, u32)>,
    last_cas: u32,
    queues: BTreeMap<u32, Queue>,
}

#[derive(Debug)]
struct Queue {
    vm_id: String,
    name: String,
    items: VecDeque<Vec<u8>>,
}

impl SharedData {
    /// A new, empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A test that panicked while holding the lock leaves consistent data.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The value of `key` and its CAS.
    pub fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.lock().values.get(key).cloned()
    }

    /// Every key, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.lock().values.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Stores `value` under `key`. A non-zero `cas` must match the current
    /// one, else [`Status::CasMismatch`]; zero always writes.
    pub fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
        let mut store = self.lock();
        if let Some((_, current)) = store.values.get(key) {
            if cas != 0 && cas != *current {
                return Err(Status::CasMismatch);
            }
        }
        store.last_cas = store.last_cas.wrapping_add(1).max(1);
        let next = store.last_cas;
        store.values.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }

    /// Registers (or finds) the queue `name` of `vm_id` and returns its id.
    pub fn register_queue(&self, vm_id: &str, name: &str) -> u32 {
        if let Some(id) = self.resolve_queue(vm_id, name) {
            return id;
        }
        let mut store = self.lock();
        let id = store.queues.keys().next_back().map_or(1, |last| last + 1);
        store.queues.insert(
            id,
            Queue {
                vm_id: vm_id.to_string(),
                name: name.to_string(),
                items: VecDeque::new(),
            },
        );
        id
    }

    /// The id of the queue `name` of `vm_id`.
    pub fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        self.lock()
            .queues
            .iter()
            .find(|(_, queue)| queue.vm_id == vm_id && queue.name == name)
            .map(|(id, _)| *id)
    }

    /// Appends an item; [`Status::NotFound`] for an unknown queue.
    pub fn enqueue(&self, id: u32, item: &[u8]) -> Result<(), Status> {
        let mut store = self.lock();
        let queue = store.queues.get_mut(&id).ok_or(Status::NotFound)?;
        queue.items.push_back(item.to_vec());
        Ok(())
    }

    /// Takes the oldest item: [`Status::Empty`] when there is none,
    /// [`Status::NotFound`] for an unknown queue.
    pub fn dequeue(&self, id: u32) -> Result<Vec<u8>, Status> {
        let mut store = self.lock();
        let queue = store.queues.get_mut(&id).ok_or(Status::NotFound)?;
        queue.items.pop_front().ok_or(Status::Empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_cas_is_a_mismatch_and_zero_cas_always_writes() {
        let shared = SharedData::new();
        shared.set("k", b"1", 0).ok();
        let (_, cas) = shared.get("k").unwrap_or_default();
        assert_ne!(cas, 0);
        assert_eq!(shared.set("k", b"2", cas), Ok(()));
        assert_eq!(shared.set("k", b"3", cas), Err(Status::CasMismatch));
        assert_eq!(shared.set("k", b"4", 0), Ok(()));
        assert_eq!(shared.get("k").map(|(value, _)| value), Some(b"4".to_vec()));
    }

    #[test]
    fn clones_share_one_store() {
        let worker_a = SharedData::new();
        let worker_b = worker_a.clone();
        worker_a.set("k", b"v", 0).ok();
        assert!(worker_b.get("k").is_some());
    }

    #[test]
    fn queues_are_fifo_and_report_empty() {
        let shared = SharedData::new();
        let id = shared.register_queue("vm", "q");
        assert_eq!(shared.register_queue("vm", "q"), id);
        assert_eq!(shared.resolve_queue("other", "q"), None);
        shared.enqueue(id, b"a").ok();
        shared.enqueue(id, b"b").ok();
        assert_eq!(shared.dequeue(id), Ok(b"a".to_vec()));
        assert_eq!(shared.dequeue(id), Ok(b"b".to_vec()));
        assert_eq!(shared.dequeue(id), Err(Status::Empty));
        assert_eq!(shared.dequeue(id + 1), Err(Status::NotFound));
    }
}
