//! The app-tier loop: what makes an `imagefleet worker` process a worker.
//! It receives jobs from the request queue, fetches each image from the
//! input bucket, classifies it with the `imagefleet-worker` crate (the
//! `worker/` folder of the repository: model, decoding, kernels, no I/O),
//! stores the result, announces it, and only then deletes the request, so a
//! worker that dies mid-job loses nothing (the request comes back after its
//! timeout).
//!
//! The crate is the classifier; this module is the service around it
//! (queues, buckets, leases, shutdown).

mod publish;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use imagefleet_worker::Classifier;

use crate::fleet::ActivityReporter;
use crate::job::{unix_millis, FailureKind, JobRequest, JobResult, JobTimings, Outcome};
use crate::queue::ReceivedMessage;
use crate::services::Services;
use crate::shutdown::Shutdown;
use publish::{retry_later, Publication, Publishing};

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub worker_id: String,
    /// Messages per receive (1..=10).
    pub batch: usize,
    /// Long-poll wait per receive.
    pub wait: Duration,
    /// How long a received job stays hidden from other workers; it must
    /// cover a whole batch.
    pub visibility: Duration,
}

impl WorkerSettings {
    pub fn new(worker_id: impl Into<String>) -> WorkerSettings {
        WorkerSettings {
            worker_id: worker_id.into(),
            batch: 10,
            // Short enough that a stopping worker, which lets its receive
            // finish, stops promptly; an idle worker's extra SQS requests
            // (12 a minute) cost about a cent a month.
            wait: Duration::from_secs(5),
            visibility: Duration::from_secs(60),
        }
    }
}

pub struct Worker {
    services: Services,
    classifier: Arc<Classifier>,
    settings: WorkerSettings,
    activity: Option<Arc<dyn ActivityReporter>>,
}

enum Handled {
    /// A result (label or refusal), ready to be stored and announced.
    Done(Publication),
    /// A message that cannot be a job; left on the queue so redelivery
    /// sends it to the dead-letter queue for an operator.
    LeftForDeadLetter,
}

impl Worker {
    pub fn new(
        services: Services,
        classifier: Arc<Classifier>,
        settings: WorkerSettings,
    ) -> Worker {
        Worker {
            services,
            classifier,
            settings,
            activity: None,
        }
    }

    pub fn with_activity(mut self, activity: Arc<dyn ActivityReporter>) -> Worker {
        self.activity = Some(activity);
        self
    }

    /// Runs until `shutdown`; the job in hand is finished first and jobs
    /// received but not started are handed back to the queue at once.
    /// Returns how many jobs it completed.
    pub async fn run(&self, mut shutdown: Shutdown) -> anyhow::Result<u64> {
        let mut completed = 0u64;
        tracing::info!(worker = %self.settings.worker_id, "worker ready");
        while !shutdown.is_requested() {
            let receive = self.services.requests.receive(
                self.settings.batch,
                self.settings.wait,
                self.settings.visibility,
            );
            tokio::pin!(receive);
            let received = tokio::select! {
                received = &mut receive => received,
                _ = shutdown.requested() => {
                    // Dropping a receive in progress could lose what it has
                    // already taken off the queue: hidden from every worker
                    // until the visibility timeout. So let it finish (at
                    // most `wait`) and hand back whatever it got.
                    if let Ok(messages) = receive.await {
                        self.release(&messages).await;
                    }
                    break;
                }
            };
            let messages = match received {
                Ok(messages) => messages,
                Err(e) => {
                    tracing::error!(error = %e, "cannot receive jobs; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if messages.is_empty() {
                continue;
            }
            self.report_busy(true);
            let mut publishing = Publishing::default();
            for (index, message) in messages.iter().enumerate() {
                if shutdown.is_requested() {
                    self.release(&messages[index..]).await;
                    break;
                }
                match self.handle(message).await {
                    Ok(Handled::Done(publication)) => {
                        completed += publishing.start(publication).await;
                    }
                    Ok(Handled::LeftForDeadLetter) => {}
                    Err(e) => {
                        retry_later(self.services.requests.as_ref(), &message.receipt, &e).await;
                    }
                }
            }
            completed += publishing.finish().await;
            self.report_busy(false);
        }
        tracing::info!(worker = %self.settings.worker_id, completed, "worker stopped");
        Ok(completed)
    }

    fn report_busy(&self, busy: bool) {
        if let Some(activity) = &self.activity {
            activity.busy(busy);
        }
    }

    async fn release(&self, messages: &[ReceivedMessage]) {
        for message in messages {
            if let Err(e) = self
                .services
                .requests
                .extend_visibility(&message.receipt, Duration::ZERO)
                .await
            {
                tracing::warn!(error = %e, "could not hand a job back; it returns after its timeout");
            }
        }
    }

    /// One job up to its result, which the caller publishes. An error means
    /// "try again later"; a bad image is not an error here but a failed
    /// result the client gets to see.
    async fn handle(&self, message: &ReceivedMessage) -> anyhow::Result<Handled> {
        let started = Instant::now();
        let picked_at_ms = unix_millis();
        let request: JobRequest = match serde_json::from_str(&message.body) {
            Ok(request) => request,
            Err(e) => {
                // Nothing can be answered without a job id; redelivery sends
                // it to the dead-letter queue for an operator to inspect.
                tracing::error!(error = %e, receive_count = message.receive_count,
                    "malformed request message left for the dead-letter queue");
                return Ok(Handled::LeftForDeadLetter);
            }
        };
        let input = self
            .services
            .inputs
            .get(&request.input_key)
            .await
            .with_context(|| format!("fetching input of job {}", request.job_id))?;
        let outcome = match input {
            None => Outcome::Failed {
                kind: FailureKind::InputMissing,
                message: format!("input object {} does not exist", request.input_key),
            },
            Some(bytes) => {
                self.classify(bytes, &request, picked_at_ms, started)
                    .await?
            }
        };
        let result = JobResult {
            id: request.job_id,
            file_name: request.file_name.clone(),
            outcome,
            model: self.classifier.manifest().name.clone(),
            worker_id: self.settings.worker_id.clone(),
            submitted_at_ms: request.submitted_at_ms,
            completed_at_ms: unix_millis(),
        };
        let json = serde_json::to_string(&result).context("serialising result")?;
        tracing::debug!(job = %request.job_id, ms = started.elapsed().as_secs_f64() * 1e3, "job computed");
        Ok(Handled::Done(Publication {
            services: self.services.clone(),
            job_id: request.job_id,
            json,
            receipt: message.receipt.clone(),
            reply_to: request.reply_to.clone(),
        }))
    }

    async fn classify(
        &self,
        bytes: Bytes,
        request: &JobRequest,
        picked_at_ms: u64,
        started: Instant,
    ) -> anyhow::Result<Outcome> {
        let classifier = Arc::clone(&self.classifier);
        let classified = tokio::task::spawn_blocking(move || classifier.classify(&bytes))
            .await
            .context("classifier task panicked")?;
        Ok(match classified {
            Ok(classification) => {
                let best = classification.best().clone();
                Outcome::Done {
                    label: best.label,
                    probability: best.probability,
                    width: classification.width,
                    height: classification.height,
                    timings: JobTimings {
                        queue_wait_ms: picked_at_ms.saturating_sub(request.submitted_at_ms) as f64,
                        stages: classification.timings,
                        worker_ms: started.elapsed().as_secs_f64() * 1e3,
                    },
                    top5: classification.top,
                }
            }
            Err(e) => {
                tracing::info!(job = %request.job_id, error = %e, "image refused");
                Outcome::Failed {
                    kind: FailureKind::from(&e),
                    message: e.to_string(),
                }
            }
        })
    }
}
