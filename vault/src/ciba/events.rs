//! Waking long-polls when a request is decided. In one process a decision
//! wakes the token requests waiting on it ([`Waiters`]); replicas on one
//! PostgreSQL database also tell each other (`NOTIFY agentward_ciba` with
//! the schema and the request's hash, never a secret), so a decision taken
//! on replica A wakes a long-poll held by replica B. A listener that lost
//! its connection wakes every waiter when it is back (notices may have been
//! missed); a woken waiter reads the database again, so a spurious wake
//! costs one read.

use crate::store::Store;
use crate::task::Joinable;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The PostgreSQL channel.
pub const CHANNEL: &str = "agentward_ciba";

/// Long-polls of this process, by request hash.
#[derive(Debug, Default)]
pub struct Waiters {
    by_id: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
}

/// A registered waiter; dropping it unregisters.
#[derive(Debug)]
pub struct Waiter<'a> {
    waiters: &'a Waiters,
    id: String,
    /// Notified on a decision.
    pub notify: Arc<Notify>,
}

impl Waiters {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<Notify>, usize)>> {
        self.by_id
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers interest in request `id`.
    pub fn watch(&self, id: &str) -> Waiter<'_> {
        let mut map = self.map();
        let entry = map
            .entry(id.to_string())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Waiter {
            waiters: self,
            id: id.to_string(),
            notify: entry.0.clone(),
        }
    }

    /// Wakes the waiters of request `id`.
    pub fn wake(&self, id: &str) {
        if let Some((notify, _)) = self.map().get(id) {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiter (they read the database again).
    pub fn wake_all(&self) {
        for (notify, _) in self.map().values() {
            notify.notify_waiters();
        }
    }

    /// How many requests have waiters (for tests and metrics).
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut map = self.waiters.map();
        if let Some(entry) = map.get_mut(&self.id) {
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                map.remove(&self.id);
            }
        }
    }
}

/// The listening task of one replica.
#[derive(Debug)]
pub struct DecisionEvents {
    stop: Arc<Notify>,
    task: Joinable,
}

impl DecisionEvents {
    /// Starts listening on PostgreSQL (`None` on SQLite, or when `LISTEN`
    /// is refused: long-polls then read the database every second).
    pub async fn start(store: &Store, waiters: Arc<Waiters>) -> Option<DecisionEvents> {
        let (mut listener, schema) = match store.link_listener(CHANNEL).await {
            Ok(Some(listening)) => listening,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot LISTEN for other replicas' CIBA decisions; long-polls read the database every second"
                );
                return None;
            }
        };
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                let received = tokio::select! {
                    _ = stopped.notified() => return,
                    r = listener.try_recv() => r,
                };
                match received {
                    Ok(Some(notification)) => {
                        match serde_json::from_str::<(String, String)>(notification.payload()) {
                            Ok((from, id)) if from == schema => {
                                tracing::debug!(request = %id, "CIBA decision notice");
                                waiters.wake(&id);
                            }
                            Ok(_) => {}
                            Err(_) => waiters.wake_all(),
                        }
                    }
                    Ok(None) => {
                        tracing::warn!(
                            "CIBA decision listener reconnected; waking every long-poll"
                        );
                        waiters.wake_all();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "CIBA decision listener failed; retrying");
                        waiters.wake_all();
                        tokio::select! {
                            _ = stopped.notified() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            }
        });
        Some(DecisionEvents {
            stop,
            task: Joinable::new("CIBA decision listener", task),
        })
    }

    /// Stops listening.
    pub async fn shutdown(&self) {
        self.stop.notify_one();
        self.task.join().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_reaches_a_registered_waiter_and_entries_go_with_them() {
        let waiters = Waiters::default();
        let a = waiters.watch("r1");
        let b = waiters.watch("r1");
        {
            let notified = a.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            waiters.wake("r2");
            waiters.wake("r1");
            notified.await;
        }
        assert_eq!(waiters.len(), 1);
        drop(a);
        assert_eq!(waiters.len(), 1);
        drop(b);
        assert!(waiters.is_empty());
    }
}
