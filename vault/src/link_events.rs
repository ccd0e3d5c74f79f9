//! Replicas on one PostgreSQL database tell each other when a link changes
//! (relinked, unlinked, found broken): the writer sends `NOTIFY
//! agentward_links` and every replica, the writer included, drops its
//! cached access token for that user (issuer and subject) and connection
//! at once, instead of serving it until [`crate::access_cache::TTL`] runs
//! out. A listener that lost its connection may have missed notices, so
//! after reconnecting it drops the whole cache, as it does on a notice it
//! cannot read. SQLite serves a single vault: nothing to tell.

use crate::access_cache::AccessCache;
use crate::store::Store;
use crate::subject::User;
use crate::task::Joinable;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The PostgreSQL channel.
pub const CHANNEL: &str = "agentward_links";

/// A notice as sent: the sender's schema (replicas of other deployments
/// may share the database), the user's issuer and subject, the connection.
type Notice = (String, String, String, String);

/// The listening task of one replica.
#[derive(Debug)]
pub struct LinkEvents {
    stop: Arc<Notify>,
    task: Joinable,
}

impl LinkEvents {
    /// Starts listening on PostgreSQL (`None` on SQLite, or when `LISTEN`
    /// is refused, e.g. behind a transaction-pooling PgBouncer: the other
    /// replicas' link changes are then seen within the cache's few seconds,
    /// and a warning says so).
    pub async fn start(store: &Store, cache: Arc<AccessCache>) -> Option<LinkEvents> {
        let (mut listener, schema) = match store.link_listener(CHANNEL).await {
            Ok(Some(listening)) => listening,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot LISTEN for other replicas' link changes; they are seen within 5 s"
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
                        match serde_json::from_str::<Notice>(notification.payload()) {
                            Ok((from, issuer, sub, connection)) if from == schema => {
                                cache.invalidate(&User { issuer, sub }, &connection);
                            }
                            Ok(_) => {}
                            // Whose link changed is unknown: drop them all.
                            Err(_) => {
                                tracing::warn!(
                                    "unreadable link-change notice; access cache cleared"
                                );
                                cache.clear();
                            }
                        }
                    }
                    // Reconnected: notices may have been missed meanwhile.
                    Ok(None) => {
                        tracing::warn!("link-change listener reconnected; access cache cleared");
                        cache.clear();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "link-change listener failed; retrying");
                        cache.clear();
                        tokio::select! {
                            _ = stopped.notified() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            }
        });
        Some(LinkEvents {
            stop,
            task: Joinable::new("link-change listener", task),
        })
    }

    /// Stops listening.
    pub async fn shutdown(&self) {
        self.stop.notify_one();
        self.task.join().await;
    }
}
