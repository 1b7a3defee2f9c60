//! The app tier: receive jobs, fetch each image, classify it, store the
//! result, announce it, and only then delete the request, so a worker that
//! dies mid-job loses nothing (the request comes back after its timeout).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use imagefleet_worker::Classifier;

use crate::job::{unix_millis, JobRequest, JobResult, JobTimings, Outcome};
use crate::queue::ReceivedMessage;
use crate::services::Services;
use crate::shutdown::Shutdown;

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

/// Told when the worker starts and finishes a batch, so a fleet can tell
/// idle workers from busy ones.
pub trait ActivityReporter: Send + Sync {
    fn busy(&self, busy: bool);
}

pub struct Worker {
    services: Services,
    classifier: Arc<Classifier>,
    settings: WorkerSettings,
    activity: Option<Arc<dyn ActivityReporter>>,
}

enum Handled {
    /// A result (label or refusal) was stored and announced.
    Done,
    /// Unreadable message: not deleted, so redelivery moves it to the
    /// dead-letter queue for an operator.
    LeftForDeadLetter,
}

/// After a transient failure (store or queue down) the job is retried by
/// whichever worker sees it first after this pause.
const RETRY_AFTER: Duration = Duration::from_secs(5);

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
            for (index, message) in messages.iter().enumerate() {
                if shutdown.is_requested() {
                    self.release(&messages[index..]).await;
                    break;
                }
                match self.handle(message).await {
                    Ok(Handled::Done) => completed += 1,
                    Ok(Handled::LeftForDeadLetter) => {}
                    Err(e) => {
                        tracing::error!(error = format!("{e:#}"), "job failed; it will be retried");
                        let _ = self
                            .services
                            .requests
                            .extend_visibility(&message.receipt, RETRY_AFTER)
                            .await;
                    }
                }
            }
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

    /// One job. An error means "try again later"; a bad image is not an
    /// error here but a failed result the client gets to see.
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
                error: "input_missing".into(),
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
        self.services
            .outputs
            .put(
                &request.job_id.output_key(),
                Bytes::from(json.clone()),
                "application/json",
            )
            .await
            .with_context(|| format!("storing result of job {}", request.job_id))?;
        self.services
            .results
            .send(&json)
            .await
            .with_context(|| format!("announcing result of job {}", request.job_id))?;
        if let Err(e) = self.services.requests.delete(&message.receipt).await {
            // The result is stored; a redelivery would only redo the work.
            tracing::warn!(job = %request.job_id, error = %e, "could not delete a finished request");
        }
        tracing::debug!(job = %request.job_id, ms = started.elapsed().as_secs_f64() * 1e3, "job done");
        Ok(Handled::Done)
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
                    error: e.kind().to_owned(),
                    message: e.to_string(),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::queue::{Queue, QueueDepth, QueueError};

    /// A queue behind a slow network: `receive` takes the messages off the
    /// queue at once, but its answer arrives `delay` later.
    struct SlowAnswers {
        inner: Arc<dyn Queue>,
        delay: Duration,
        taken: Arc<tokio::sync::Notify>,
    }

    #[async_trait]
    impl Queue for SlowAnswers {
        fn name(&self) -> &str {
            self.inner.name()
        }
        async fn send(&self, body: &str) -> Result<(), QueueError> {
            self.inner.send(body).await
        }
        async fn receive(
            &self,
            max: usize,
            wait: Duration,
            visibility: Duration,
        ) -> Result<Vec<ReceivedMessage>, QueueError> {
            let messages = self.inner.receive(max, wait, visibility).await?;
            if !messages.is_empty() {
                self.taken.notify_one();
                tokio::time::sleep(self.delay).await;
            }
            Ok(messages)
        }
        async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
            self.inner.delete(receipt).await
        }
        async fn extend_visibility(
            &self,
            receipt: &str,
            visibility: Duration,
        ) -> Result<(), QueueError> {
            self.inner.extend_visibility(receipt, visibility).await
        }
        async fn depth(&self) -> Result<QueueDepth, QueueError> {
            self.inner.depth().await
        }
    }

    /// A stop that lands while a receive is on the wire must not strand
    /// the messages it took (hidden for the whole visibility timeout).
    #[tokio::test]
    async fn stopping_during_a_receive_hands_its_messages_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut services = Services::local(dir.path()).unwrap();
        let queue = Arc::clone(&services.requests);
        queue.send("a job nobody should lose").await.unwrap();
        let taken = Arc::new(tokio::sync::Notify::new());
        services.requests = Arc::new(SlowAnswers {
            inner: Arc::clone(&queue),
            delay: Duration::from_millis(500),
            taken: Arc::clone(&taken),
        });
        let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/model.toml");
        let classifier = Arc::new(Classifier::load(&manifest).unwrap());
        let worker = Worker::new(services, classifier, WorkerSettings::new("test"));
        let (trigger, shutdown) = Shutdown::new();
        let running = tokio::spawn(async move { worker.run(shutdown).await });

        taken.notified().await;
        trigger.trigger();
        let completed = running.await.unwrap().unwrap();
        assert_eq!(completed, 0);
        assert_eq!(
            queue.depth().await.unwrap(),
            QueueDepth {
                visible: 1,
                in_flight: 0
            },
            "the job is back on the queue at once"
        );
    }
}
