//! Requests a plugin holds (paused) until something arrives: an issuer's
//! keys, a user's approval. A hold costs the proxy a stream and memory, and
//! whoever sends the requests decides how many arrive, so the queue is
//! bounded: beyond its cap a request is answered at once (503), never held.
//! Every entry carries its deadline; the host's timer takes the overdue ones.

/// One held request: the host's id for it (the proxy-wasm context id), when
/// its wait ends, and what the plugin needs to decide it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held<T> {
    /// The host's id of the request.
    pub id: u32,
    /// When the wait ends, in Unix milliseconds.
    pub deadline_ms: u64,
    /// What the plugin keeps to decide the request later.
    pub item: T,
}

/// The queue is at its cap: the request must be answered, not held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// A bounded set of held requests, in the order they were held.
#[derive(Debug, Clone)]
pub struct HeldQueue<T> {
    entries: Vec<Held<T>>,
    cap: usize,
}

impl<T> HeldQueue<T> {
    /// A queue that holds at most `cap` requests (0: never hold).
    pub fn new(cap: usize) -> Self {
        HeldQueue {
            entries: Vec::new(),
            cap,
        }
    }

    /// How many requests are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no request is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most requests held at once.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Holds a request until `deadline_ms`; [`QueueFull`] at the cap, and
    /// then the caller answers the request instead.
    pub fn hold(&mut self, id: u32, deadline_ms: u64, item: T) -> Result<(), QueueFull> {
        if self.entries.len() >= self.cap {
            return Err(QueueFull);
        }
        self.entries.push(Held {
            id,
            deadline_ms,
            item,
        });
        Ok(())
    }

    /// Forgets a request (its client went away); returns what was kept.
    pub fn forget(&mut self, id: u32) -> Option<T> {
        let at = self.entries.iter().position(|h| h.id == id)?;
        Some(self.entries.remove(at).item)
    }

    /// Whether a held request's deadline has come at `now_ms`.
    pub fn any_overdue(&self, now_ms: u64) -> bool {
        self.entries.iter().any(|h| now_ms >= h.deadline_ms)
    }

    /// Takes out, in holding order, every request that is overdue at
    /// `now_ms` or for which `release` says yes; the others stay.
    pub fn take(&mut self, now_ms: u64, mut release: impl FnMut(&T) -> bool) -> Vec<Held<T>> {
        let (out, stay): (Vec<_>, Vec<_>) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|h| now_ms >= h.deadline_ms || release(&h.item));
        self.entries = stay;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_up_to_the_cap_then_refuses() {
        let mut q = HeldQueue::new(2);
        assert_eq!(q.hold(1, 100, "a"), Ok(()));
        assert_eq!(q.hold(2, 100, "b"), Ok(()));
        assert_eq!(q.hold(3, 100, "c"), Err(QueueFull));
        assert_eq!(q.len(), 2);
        // A request that went away makes room.
        assert_eq!(q.forget(1), Some("a"));
        assert_eq!(q.forget(1), None);
        assert_eq!(q.hold(3, 100, "c"), Ok(()));
    }

    #[test]
    fn a_cap_of_zero_never_holds() {
        let mut q = HeldQueue::new(0);
        assert_eq!(q.hold(1, 100, ()), Err(QueueFull));
        assert!(q.is_empty());
    }

    #[test]
    fn take_releases_the_chosen_and_the_overdue_in_order() {
        let mut q = HeldQueue::new(10);
        q.hold(1, 1_000, 0).unwrap();
        q.hold(2, 5_000, 1).unwrap();
        q.hold(3, 5_000, 0).unwrap();
        q.hold(4, 2_000, 1).unwrap();
        assert!(!q.any_overdue(999));
        assert!(q.any_overdue(1_000));
        // Issuer 0's keys arrived at 500: requests 1 and 3 go.
        let ids: Vec<u32> = q.take(500, |i| *i == 0).iter().map(|h| h.id).collect();
        assert_eq!(ids, [1, 3]);
        // At 2 000 request 4 is overdue; 2 is not.
        let ids: Vec<u32> = q.take(2_000, |_| false).iter().map(|h| h.id).collect();
        assert_eq!(ids, [4]);
        assert_eq!(q.len(), 1);
    }
}
