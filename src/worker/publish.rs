//! Getting a finished job out, beside the next job's classification: the
//! result stored (once: the first writer wins), announced, and only then the
//! request deleted. A job given up on also goes to the dead-letter queue.
//! Nothing is published for a job whose lease was lost: another worker has
//! it now.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;

use super::lease::Leases;
use crate::job::JobId;
use crate::queue::{FencedSend, Queue, ReceivedMessage};
use crate::services::Services;

/// A job's way out of the worker.
pub(super) struct Publication {
    pub(super) services: Services,
    pub(super) leases: Arc<Leases>,
    pub(super) message: ReceivedMessage,
    /// The result to store and announce, when the request named a job.
    pub(super) result: Option<(JobId, String)>,
    /// Also move the request to the dead-letter queue (the job was given
    /// up on, or its message could not be read).
    pub(super) dead_letter: bool,
    /// The input to delete once the job is done (its result is the record
    /// now); None keeps it (given-up jobs keep theirs for a redrive).
    pub(super) input_key: Option<String>,
    /// The web tier replica's queue the job named, if any.
    pub(super) reply_to: Option<String>,
}

/// How a publication ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Published {
    /// Stored (or found stored), announced, request deleted.
    Done,
    /// Another worker holds the job now; nothing was published.
    LeaseLost,
    /// A store or queue failed; the request comes back for a retry.
    Failed,
}

impl Publication {
    pub(super) async fn publish(self) -> Published {
        let receipt = self.message.receipt.clone();
        let outcome = match self.try_publish().await {
            Ok(outcome) => outcome,
            Err(e) => {
                retry_later(
                    self.services.requests.as_ref(),
                    &self.message,
                    retry_delay(self.message.receive_count),
                    &e,
                )
                .await;
                Published::Failed
            }
        };
        self.leases.forget(&receipt);
        outcome
    }

    /// Whether this worker still holds the job; logs when it does not.
    async fn still_ours(&self) -> anyhow::Result<bool> {
        let ours = self
            .leases
            .confirm(&self.message.receipt)
            .await
            .context("confirming the lease")?;
        if !ours {
            tracing::warn!(
                job = ?self.result.as_ref().map(|(id, _)| id),
                "lease lost while working on the job; another worker has it, nothing published"
            );
        }
        Ok(ours)
    }

    async fn try_publish(&self) -> anyhow::Result<Published> {
        // Checked first so a worker that lost its job stores nothing.
        if !self.still_ours().await? {
            return Ok(Published::LeaseLost);
        }
        let mut request_deleted = false;
        if let Some((job_id, json)) = &self.result {
            let announcement = self.store_once(*job_id, json).await?;
            // Announced only while the lease holds, checked in the same
            // transaction as the send where the queue allows (SQLite): a
            // worker that stalls after storing, and whose job another
            // worker then redid and announced, announces nothing.
            // Where the queue allows (SQLite), the announcement also deletes
            // the request in that transaction: a worker that stalls after
            // announcing cannot lose the job to another, which would find
            // the result stored and announce it again. A failed job's
            // request stays until it is dead-lettered below.
            let fence = self.leases.fence(&self.message.receipt, !self.dead_letter);
            let sent = self
                .services
                .replies
                .announce(
                    self.reply_to.as_deref(),
                    self.services.results.as_ref(),
                    &announcement,
                    &fence,
                )
                .await
                .with_context(|| format!("announcing result of job {job_id}"))?;
            match sent {
                FencedSend::LeaseLost => {
                    tracing::warn!(
                        job = %job_id,
                        "lease lost before announcing; another worker has the job, nothing announced"
                    );
                    return Ok(Published::LeaseLost);
                }
                FencedSend::Sent => {}
                FencedSend::SentAndConsumed => request_deleted = true,
            }
        }
        if self.dead_letter {
            self.services
                .dead_letters
                .send(&self.message.body)
                .await
                .context("moving the request to the dead-letter queue")?;
        }
        if !request_deleted {
            if let Err(e) = self.services.requests.delete(&self.message.receipt).await {
                // The result is stored; a redelivery finds it and only announces.
                tracing::warn!(error = %e, "could not delete a finished request");
            }
        }
        if let Some(key) = &self.input_key {
            if let Err(e) = self.services.inputs.delete(key).await {
                tracing::warn!(error = %e, "could not delete a finished job's input; retention will");
            }
        }
        Ok(Published::Done)
    }

    /// Stores the result unless one is stored already, and returns the one
    /// that is: a worker that redoes a job (its first worker died after
    /// storing) announces the first result, never a second, different one.
    async fn store_once(&self, job_id: JobId, json: &str) -> anyhow::Result<String> {
        let key = job_id.output_key();
        let outputs = &self.services.outputs;
        let created = outputs
            .put_if_absent(&key, Bytes::from(json.to_owned()), "application/json")
            .await
            .with_context(|| format!("storing result of job {job_id}"))?;
        if created {
            return Ok(json.to_owned());
        }
        tracing::info!(job = %job_id, "result already stored by an earlier attempt; announcing that one");
        let stored = outputs
            .get(&key)
            .await
            .with_context(|| format!("reading the stored result of job {job_id}"))?
            .with_context(|| format!("the stored result of job {job_id} vanished"))?;
        let stored = String::from_utf8(stored.to_vec())
            .with_context(|| format!("the stored result of job {job_id} is not UTF-8"))?;
        Ok(stored)
    }
}

/// How long a failed attempt waits before the next: a second, then two.
pub(super) fn retry_delay(receive_count: u32) -> Duration {
    Duration::from_secs(u64::from(receive_count.clamp(1, 5)))
}

/// Logs a failed attempt and hides the request for `delay`, after which
/// whichever worker sees it first tries again.
pub(super) async fn retry_later(
    requests: &dyn Queue,
    message: &ReceivedMessage,
    delay: Duration,
    error: &anyhow::Error,
) {
    tracing::error!(
        error = format!("{error:#}"),
        attempt = message.receive_count,
        retry_in_s = delay.as_secs(),
        "attempt failed; the job will be retried"
    );
    if let Err(e) = requests.extend_visibility(&message.receipt, delay).await {
        tracing::warn!(error = %e, "could not schedule the retry; it returns after its timeout");
    }
}

/// At most one publication in flight, awaited before the next starts (so
/// results go out in order and a stopping worker waits for it).
#[derive(Default)]
pub(super) struct Publishing(Option<tokio::task::JoinHandle<Published>>);

impl Publishing {
    /// Waits for the publication in flight, if any; returns the jobs it
    /// completed (0 or 1).
    pub(super) async fn finish(&mut self) -> u64 {
        match self.0.take() {
            Some(task) => match task.await {
                Ok(published) => u64::from(published == Published::Done),
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
        // In the job's span (see `Worker::run`), so its lines name the job.
        self.0 = Some(tokio::spawn(tracing::Instrument::in_current_span(
            publication.publish(),
        )));
        completed
    }
}
