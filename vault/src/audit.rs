//! The audit trail, written off the request path: handlers hand rows to a
//! bounded channel; one background task inserts whatever has queued up, one
//! transaction per batch. A full channel never blocks an exchange: the row is
//! dropped, counted (`agentward_vault_audit_dropped_total`) and logged.
//! [`AuditLog::shutdown`] writes everything still queued.
//!
//! [`Retention`] deletes rows older than `audit_retention_days`, at start-up
//! and hourly, a batch at a time.

use crate::app::unix_now;
use crate::metrics::Metrics;
use crate::store::{AuditEntry, Store};
use crate::task::Joinable;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch, Notify};

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
    writer: Joinable,
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
            writer: Joinable::new("audit writer", writer),
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
        self.writer.join().await;
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

/// How often retention runs (after a first pass at start-up).
pub const PURGE_INTERVAL: Duration = Duration::from_secs(3600);
/// Most rows one retention `DELETE` removes: each statement holds its locks
/// briefly (SQLite has one writer; on PostgreSQL the rows stay locked until
/// the statement ends).
pub const PURGE_BATCH: i64 = 1000;
/// Pause between retention batches, so audit writes and token refreshes get
/// the database in between.
const PURGE_PAUSE: Duration = Duration::from_millis(50);

/// The retention task: deletes audit rows past `audit_retention_days`.
#[derive(Debug)]
pub struct Retention {
    stop: watch::Sender<bool>,
    task: Joinable,
}

impl Retention {
    /// Starts the task (needs a running tokio runtime); `None` when `days` is
    /// 0, which keeps rows forever.
    pub fn start(store: Store, days: u64, metrics: Arc<Metrics>) -> Option<Retention> {
        if days == 0 {
            return None;
        }
        let max_age = i64::try_from(days.saturating_mul(86_400)).unwrap_or(i64::MAX);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(retain(store, max_age, metrics, stopped));
        Some(Retention {
            stop,
            task: Joinable::new("audit retention", task),
        })
    }

    /// Stops the task: a batch under way finishes, no other starts.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        self.task.join().await;
    }
}

async fn retain(
    store: Store,
    max_age: i64,
    metrics: Arc<Metrics>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let before = unix_now().saturating_sub(max_age);
        purge_before(&store, before, &metrics, &mut stopped).await;
        if *stopped.borrow() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(PURGE_INTERVAL) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// Deletes audit rows older than `before`, [`PURGE_BATCH`] at a time, until
/// none is left or `stopped` turns true; returns how many. A database error
/// ends the pass (logged); the next pass tries again.
pub async fn purge_before(
    store: &Store,
    before: i64,
    metrics: &Metrics,
    stopped: &mut watch::Receiver<bool>,
) -> u64 {
    let mut total = 0;
    while !*stopped.borrow() {
        match store.purge_audit(before, PURGE_BATCH).await {
            Ok(n) => {
                total += n;
                metrics.audit_purged(n);
                if n < u64::try_from(PURGE_BATCH).unwrap_or(0) {
                    break;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot delete audit rows past retention");
                break;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(PURGE_PAUSE) => {}
            _ = stopped.changed() => break,
        }
    }
    if total > 0 {
        tracing::info!(rows = total, before, "audit rows past retention deleted");
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: i64) -> AuditEntry {
        AuditEntry {
            at: n,
            issuer: "https://idp/".into(),
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

    #[tokio::test]
    async fn retention_deletes_old_rows_in_batches_at_start_and_stops_on_shutdown() {
        let store = Store::connect("sqlite::memory:", None).await.unwrap();
        let now = unix_now();
        let day = 86_400;
        let old: Vec<AuditEntry> = (0..2500)
            .map(|n| AuditEntry {
                at: now - 91 * day - n,
                ..entry(n)
            })
            .collect();
        store.record_audit_batch(&old).await.unwrap();
        let kept = AuditEntry {
            at: now - 89 * day,
            ..entry(9999)
        };
        store.record_audit(&kept).await.unwrap();
        let metrics = Arc::new(Metrics::default());
        assert!(Retention::start(store.clone(), 0, metrics.clone()).is_none());
        let retention = Retention::start(store.clone(), 90, metrics.clone()).unwrap();
        for _ in 0..200 {
            if store.recent_audit(10).await.unwrap().len() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(store.recent_audit(10).await.unwrap(), [kept]);
        assert!(metrics
            .render()
            .contains("agentward_vault_audit_purged_total 2500"));
        // Shutdown ends the hourly wait at once.
        tokio::time::timeout(Duration::from_secs(5), retention.shutdown())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_stopped_purge_deletes_nothing_more() {
        let store = Store::connect("sqlite::memory:", None).await.unwrap();
        store.record_audit(&entry(1)).await.unwrap();
        let metrics = Metrics::default();
        let (stop, mut stopped) = watch::channel(false);
        stop.send_replace(true);
        assert_eq!(purge_before(&store, 100, &metrics, &mut stopped).await, 0);
        assert_eq!(store.recent_audit(10).await.unwrap().len(), 1);
    }
}
