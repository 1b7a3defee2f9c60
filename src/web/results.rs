//! Routes results from the result queue back to the requests waiting for
//! them, by job id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::job::{JobId, JobResult};
use crate::queue::Queue;
use crate::shutdown::Shutdown;

#[derive(Clone)]
pub struct ResultRouter {
    waiters: Arc<Mutex<HashMap<JobId, oneshot::Sender<JobResult>>>>,
    /// Set when the service stops waiting: at its shutdown deadline.
    closing: Arc<watch::Sender<bool>>,
}

impl Default for ResultRouter {
    fn default() -> Self {
        ResultRouter {
            waiters: Arc::default(),
            closing: Arc::new(watch::channel(false).0),
        }
    }
}

/// Removes its waiter when dropped, so a request that gives up or whose
/// client disconnects leaves nothing behind.
pub struct Waiter {
    id: JobId,
    router: ResultRouter,
    pub receiver: oneshot::Receiver<JobResult>,
    pub closing: Closing,
}

/// The service's "stop waiting" signal, as a waiter sees it.
pub struct Closing(watch::Receiver<bool>);

impl Closing {
    /// Resolves when the service stops waiting for results (its shutdown
    /// deadline passed); the request should answer at once.
    pub async fn closed(&mut self) {
        let _ = self.0.wait_for(|closing| *closing).await;
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.router.lock().remove(&self.id);
    }
}

impl ResultRouter {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, oneshot::Sender<JobResult>>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register before the job is queued, so a fast result is not missed.
    pub fn wait_for(&self, id: JobId) -> Waiter {
        let (sender, receiver) = oneshot::channel();
        self.lock().insert(id, sender);
        Waiter {
            id,
            router: self.clone(),
            receiver,
            closing: Closing(self.closing.subscribe()),
        }
    }

    /// True when someone was waiting for this result.
    pub fn deliver(&self, result: JobResult) -> bool {
        match self.lock().remove(&result.id) {
            Some(sender) => sender.send(result).is_ok(),
            None => false,
        }
    }

    pub fn waiting(&self) -> usize {
        self.lock().len()
    }

    /// Tells every waiting request to stop waiting.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Drains the result queue into the router until shutdown. Every result
    /// is also in the output bucket, so a message nobody waits for (an async
    /// job, a client that left) is simply deleted.
    pub async fn pump(self, results: Arc<dyn Queue>, mut shutdown: Shutdown) {
        while !shutdown.is_requested() {
            let received = tokio::select! {
                _ = shutdown.requested() => break,
                received = results.receive(10, Duration::from_secs(2), Duration::from_secs(30)) => received,
            };
            let messages = match received {
                Ok(messages) => messages,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read results; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            for message in messages {
                match serde_json::from_str::<JobResult>(&message.body) {
                    Ok(result) => {
                        let id = result.id;
                        if !self.deliver(result) {
                            tracing::debug!(job = %id, "result with no waiting request");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "malformed result message dropped"),
                }
                if let Err(e) = results.delete(&message.receipt).await {
                    tracing::warn!(error = %e, "could not delete a routed result");
                }
            }
        }
    }
}
