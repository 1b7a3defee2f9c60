//! Leases on the jobs a worker holds. A received request is hidden from
//! other workers for the visibility timeout; while the worker holds it (the
//! job it runs, the one it fetched ahead, a result being published) a
//! background task renews that timeout, so a short timeout costs nothing to
//! a healthy worker and only seconds when a worker dies. A lease that could
//! not be renewed because the queue no longer honours its receipt (the
//! worker stalled and another took the job) is lost: the worker must not
//! publish for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::queue::{Fence, Queue, QueueError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseState {
    Held,
    Lost,
}

pub struct Leases {
    queue: Arc<dyn Queue>,
    visibility: Duration,
    /// By receipt.
    held: Mutex<HashMap<String, LeaseState>>,
}

/// Renews every held lease until dropped.
pub struct Renewal(tokio::task::JoinHandle<()>);

impl Drop for Renewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Leases {
    pub fn new(queue: Arc<dyn Queue>, visibility: Duration) -> Arc<Leases> {
        Arc::new(Leases {
            queue,
            visibility,
            held: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LeaseState>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts renewing `receipt`'s lease.
    pub fn hold(&self, receipt: &str) {
        self.lock().insert(receipt.to_owned(), LeaseState::Held);
    }

    /// Stops renewing it (the job is done, handed back or left to retry).
    pub fn forget(&self, receipt: &str) {
        self.lock().remove(receipt);
    }

    fn mark(&self, receipt: &str, state: LeaseState) {
        if let Some(entry) = self.lock().get_mut(receipt) {
            *entry = state;
        }
    }

    fn state(&self, receipt: &str) -> Option<LeaseState> {
        self.lock().get(receipt).copied()
    }

    /// Renews one lease; false when the queue says it is no longer ours.
    async fn renew(&self, receipt: &str) -> Result<bool, QueueError> {
        let held = self.fence(receipt, false).renew().await?;
        if !held {
            self.mark(receipt, LeaseState::Lost);
        }
        Ok(held)
    }

    /// Renews every held lease once.
    pub async fn renew_all(&self) {
        let receipts: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, state)| **state == LeaseState::Held)
            .map(|(receipt, _)| receipt.clone())
            .collect();
        for receipt in receipts {
            match self.renew(&receipt).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!("lost the lease on a job; another worker may take it"),
                Err(e) => tracing::warn!(error = %e, "could not renew a lease; trying again"),
            }
        }
    }

    /// Renews held leases every third of the visibility timeout, so two
    /// renewals can fail before a lease runs out.
    pub fn spawn_renewal(self: &Arc<Self>) -> Renewal {
        let leases = Arc::clone(self);
        let every = self.visibility / 3;
        Renewal(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                leases.renew_all().await;
            }
        }))
    }

    /// The lease on `receipt`, for a send that must go out only while it
    /// holds (the result's announcement); `consume`: see [`Fence::consume`].
    pub fn fence<'a>(&'a self, receipt: &'a str, consume: bool) -> Fence<'a> {
        Fence {
            queue: self.queue.as_ref(),
            receipt,
            visibility: self.visibility,
            consume,
        }
    }

    /// Whether the lease is still ours right now: renews it once more, so
    /// the caller has a whole visibility timeout to publish in. False when
    /// it was lost (now or before); an error when the queue cannot say.
    pub async fn confirm(&self, receipt: &str) -> Result<bool, QueueError> {
        match self.state(receipt) {
            Some(LeaseState::Lost) => Ok(false),
            _ => self.renew(receipt).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::SqliteQueueFile;

    const NO_WAIT: Duration = Duration::ZERO;

    #[tokio::test]
    async fn held_leases_outlive_the_visibility_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let queue: Arc<dyn Queue> = Arc::new(
            SqliteQueueFile::new(dir.path().join("q.sqlite"))
                .open("requests", None)
                .unwrap(),
        );
        queue.send("job").await.unwrap();
        let visibility = Duration::from_millis(300);
        let got = queue.receive(1, NO_WAIT, visibility).await.unwrap();
        let leases = Leases::new(Arc::clone(&queue), visibility);
        leases.hold(&got[0].receipt);
        let renewal = leases.spawn_renewal();
        tokio::time::sleep(visibility * 4).await;
        assert!(
            queue
                .receive(1, NO_WAIT, visibility)
                .await
                .unwrap()
                .is_empty(),
            "renewed, so still hidden"
        );
        assert!(leases.confirm(&got[0].receipt).await.unwrap());

        // Without renewal the lease runs out and another consumer takes it.
        drop(renewal);
        tokio::time::sleep(visibility * 2).await;
        let again = queue.receive(1, NO_WAIT, visibility).await.unwrap();
        assert_eq!(again.len(), 1);
        assert!(!leases.confirm(&got[0].receipt).await.unwrap(), "lost");
        assert!(
            !leases.confirm(&got[0].receipt).await.unwrap(),
            "stays lost"
        );
    }
}
