//! The audit trail, written off the request path: handlers hand rows to a
//! bounded channel; one background task inserts whatever has queued up, one
//! transaction per batch. A full channel never blocks an exchange: the row is
//! dropped, counted (`agentward_vault_audit_dropped_total`) and logged.
//! [`AuditLog::shutdown`] writes everything still queued.

use crate::app::unix_now;
use crate::metrics::Metrics;
use crate::store::{AuditEntry, Store};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

/// Rows that may wait for the writer before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 8192;
/// Most rows written in one transaction.
const MAX_BATCH: usize = 1024;
/// Pause after each batch so rows gather into fewer, larger transactions:
/// the writer then costs little CPU beside the request path.
const LINGER: Duration = Duration::from_millis(25);

/// The queue in front of the audit table.
#[derive(Debug)]
pub struct AuditLog {
    queue: mpsc::Sender<AuditEntry>,
    store: Store,
    stop: Arc<Notify>,
    writer: Mutex<Option<JoinHandle<()>>>,
    last_drop_warning: AtomicI64,
}

impl AuditLog {
    /// Starts the writer task (needs a running tokio runtime).
    pub fn start(store: Store) -> AuditLog {
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let stop = Arc::new(Notify::new());
        let writer = tokio::spawn(write_batches(store.clone(), rx, stop.clone()));
        AuditLog {
            queue,
            store,
            stop,
            writer: Mutex::new(Some(writer)),
            last_drop_warning: AtomicI64::new(0),
        }
    }

    /// Queues a row; never waits for the database (except after shutdown,
    /// when the row is written directly).
    pub async fn record(&self, entry: AuditEntry, metrics: &Metrics) {
        match self.queue.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(entry)) => {
                metrics.audit_dropped();
                // One warning a second at most: a full queue means a flood.
                let now = unix_now();
                let last = self.last_drop_warning.swap(now, Ordering::Relaxed);
                if last != now {
                    tracing::warn!(
                        outcome = %entry.outcome,
                        "audit queue full; audit row dropped (see agentward_vault_audit_dropped_total)"
                    );
                }
            }
            Err(TrySendError::Closed(entry)) => {
                if let Err(e) = self.store.record_audit(&entry).await {
                    tracing::error!(error = %e, "cannot write audit row");
                }
            }
        }
    }

    /// Stops the writer after it has written every queued row.
    pub async fn shutdown(&self) {
        self.stop.notify_one();
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(writer) = writer {
            if let Err(e) = writer.await {
                tracing::error!(error = %e, "audit writer failed");
            }
        }
    }
}

async fn write_batches(store: Store, mut rx: mpsc::Receiver<AuditEntry>, stop: Arc<Notify>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let stopping = tokio::select! {
            biased;
            n = rx.recv_many(&mut batch, MAX_BATCH) => {
                if n == 0 {
                    return;
                }
                write(&store, &mut batch).await;
                tokio::select! {
                    () = tokio::time::sleep(LINGER) => false,
                    () = stop.notified() => true,
                }
            }
            () = stop.notified() => true,
        };
        if stopping {
            // Refuse new rows (they are written directly), drain the rest.
            rx.close();
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                write(&store, &mut batch).await;
            }
            return;
        }
    }
}

async fn write(store: &Store, batch: &mut Vec<AuditEntry>) {
    if let Err(e) = store.record_audit_batch(batch).await {
        tracing::error!(error = %e, rows = batch.len(), "cannot write audit rows");
    }
    batch.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: i64) -> AuditEntry {
        AuditEntry {
            at: n,
            sub: format!("user-{n}"),
            agent: None,
            connection: Some("stocktrade".into()),
            outcome: "issued_cached".into(),
        }
    }

    #[tokio::test]
    async fn queued_rows_are_written_in_order_and_flushed_on_shutdown() {
        let store = Store::connect("sqlite::memory:", None).await.unwrap();
        let log = AuditLog::start(store.clone());
        let metrics = Metrics::default();
        for n in 0..1000 {
            log.record(entry(n), &metrics).await;
        }
        log.shutdown().await;
        // After shutdown a row is written directly.
        log.record(entry(1000), &metrics).await;
        let rows = store.recent_audit(2000).await.unwrap();
        assert_eq!(rows.len(), 1001);
        assert_eq!(rows[0], entry(1000));
        assert_eq!(rows[1000], entry(0));
        assert!(metrics
            .render()
            .contains("agentward_vault_audit_dropped_total 0"));
    }
}
