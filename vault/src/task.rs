//! Background tasks that shutdown waits for.

use std::sync::Mutex;
use tokio::task::JoinHandle;

/// A spawned task, waited for at most once (by whichever shutdown comes
/// first); a task that panicked is logged under its name.
#[derive(Debug)]
pub struct Joinable {
    name: &'static str,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl Joinable {
    /// Wraps a spawned task.
    pub fn new(name: &'static str, handle: JoinHandle<()>) -> Joinable {
        Joinable {
            name,
            handle: Mutex::new(Some(handle)),
        }
    }

    /// Waits for the task to end; tell it to stop first.
    pub async fn join(&self) {
        let handle = self
            .handle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(handle) = handle {
            if let Err(e) = handle.await {
                tracing::error!(error = %e, task = self.name, "background task failed");
            }
        }
    }
}
