//! Getting a finished job's result out: stored, announced, and only then
//! the request deleted, beside the next job's classification.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;

use crate::job::JobId;
use crate::queue::Queue;
use crate::services::Services;

/// A finished job's result on its way out: stored, announced, and only then
/// the request deleted. It runs as its own task while the worker computes
/// the next job, so the store's and queue's flushes to disk (milliseconds
/// each) overlap with classifying instead of adding to it.
pub(super) struct Publication {
    pub(super) services: Services,
    pub(super) job_id: JobId,
    pub(super) json: String,
    pub(super) receipt: String,
    /// The web tier replica's queue the job named, if any.
    pub(super) reply_to: Option<String>,
}

impl Publication {
    /// True when the result is out; on failure the request is left to come
    /// back after [`RETRY_AFTER`].
    pub(super) async fn publish(self) -> bool {
        match self.store_and_announce().await {
            Ok(()) => {
                if let Err(e) = self.services.requests.delete(&self.receipt).await {
                    // The result is stored; a redelivery would only redo the work.
                    tracing::warn!(job = %self.job_id, error = %e, "could not delete a finished request");
                }
                true
            }
            Err(e) => {
                retry_later(self.services.requests.as_ref(), &self.receipt, &e).await;
                false
            }
        }
    }

    async fn store_and_announce(&self) -> anyhow::Result<()> {
        self.services
            .outputs
            .put(
                &self.job_id.output_key(),
                Bytes::from(self.json.clone()),
                "application/json",
            )
            .await
            .with_context(|| format!("storing result of job {}", self.job_id))?;
        self.services
            .replies
            .announce(
                self.reply_to.as_deref(),
                self.services.results.as_ref(),
                &self.json,
            )
            .await
            .with_context(|| format!("announcing result of job {}", self.job_id))
    }
}

/// Logs a job's failure and lets its request come back after
/// [`RETRY_AFTER`], to whichever worker sees it first.
pub(super) async fn retry_later(requests: &dyn Queue, receipt: &str, error: &anyhow::Error) {
    tracing::error!(
        error = format!("{error:#}"),
        "job failed; it will be retried"
    );
    if let Err(e) = requests.extend_visibility(receipt, RETRY_AFTER).await {
        tracing::warn!(error = %e, "could not schedule the retry; it returns after its timeout");
    }
}

/// At most one publication in flight, awaited before the next starts (so
/// results go out in order and a stopping worker waits for it).
#[derive(Default)]
pub(super) struct Publishing(Option<tokio::task::JoinHandle<bool>>);

impl Publishing {
    /// Waits for the publication in flight, if any; returns the jobs it
    /// completed (0 or 1).
    pub(super) async fn finish(&mut self) -> u64 {
        match self.0.take() {
            Some(task) => match task.await {
                Ok(done) => u64::from(done),
                Err(e) => {
                    tracing::error!(error = %e, "publishing task failed; the job will be retried");
                    0
                }
            },
            None => 0,
        }
    }

    /// Finishes the previous publication, then starts this one.
    pub(super) async fn start(&mut self, publication: Publication) -> u64 {
        let completed = self.finish().await;
        self.0 = Some(tokio::spawn(publication.publish()));
        completed
    }
}

/// After a transient failure (store or queue down) the job is retried by
/// whichever worker sees it first after this pause.
const RETRY_AFTER: Duration = Duration::from_secs(5);
