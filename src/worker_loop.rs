//! The app tier: receive jobs, fetch each image, classify it, store the
//! result, announce it, and only then delete the request, so a worker that
//! dies mid-job loses nothing (the request comes back after its timeout).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use imagefleet_worker::Classifier;

use crate::job::{unix_millis, JobRequest, JobResult, JobTimings, Outcome};
use crate::queue::{Queue, ReceivedMessage};
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
    /// A result (label or refusal), ready to be stored and announced.
    Done(Publication),
    /// A message that cannot be a job; left on the queue so redelivery
    /// sends it to the dead-letter queue for an operator.
    LeftForDeadLetter,
}

/// A finished job's result on its way out: stored, announced, and only then
/// the request deleted. It runs as its own task while the worker computes
/// the next job, so the store's and queue's flushes to disk (milliseconds
/// each) overlap with classifying instead of adding to it.
struct Publication {
    services: Services,
    job_id: crate::job::JobId,
    json: String,
    receipt: String,
}

impl Publication {
    /// True when the result is out; on failure the request is left to come
    /// back after [`RETRY_AFTER`].
    async fn publish(self) -> bool {
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
            .results
            .send(&self.json)
            .await
            .with_context(|| format!("announcing result of job {}", self.job_id))
    }
}

/// Logs a job's failure and lets its request come back after
/// [`RETRY_AFTER`], to whichever worker sees it first.
async fn retry_later(requests: &dyn Queue, receipt: &str, error: &anyhow::Error) {
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
struct Publishing(Option<tokio::task::JoinHandle<bool>>);

impl Publishing {
    /// Waits for the publication in flight, if any; returns the jobs it
    /// completed (0 or 1).
    async fn finish(&mut self) -> u64 {
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
    async fn start(&mut self, publication: Publication) -> u64 {
        let completed = self.finish().await;
        self.0 = Some(tokio::spawn(publication.publish()));
        completed
    }
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
        tracing::debug!(job = %request.job_id, ms = started.elapsed().as_secs_f64() * 1e3, "job computed");
        Ok(Handled::Done(Publication {
            services: self.services.clone(),
            job_id: request.job_id,
            json,
            receipt: message.receipt.clone(),
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
    use crate::job::JobId;
    use crate::queue::{QueueDepth, QueueError};
    use crate::store::{ObjectStore, StoreError};

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

    /// An output bucket that is down for writes.
    struct BrokenWrites {
        inner: Arc<dyn ObjectStore>,
        tried: Arc<tokio::sync::Notify>,
    }

    #[async_trait]
    impl ObjectStore for BrokenWrites {
        fn bucket(&self) -> &str {
            self.inner.bucket()
        }
        async fn put(
            &self,
            key: &str,
            _bytes: Bytes,
            _content_type: &str,
        ) -> Result<(), StoreError> {
            self.tried.notify_one();
            Err(StoreError::Unavailable {
                bucket: self.bucket().to_owned(),
                operation: "put",
                key: key.to_owned(),
                message: "disk full".into(),
            })
        }
        async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
            self.inner.get(key).await
        }
        async fn exists(&self, key: &str) -> Result<bool, StoreError> {
            self.inner.exists(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.inner.delete(key).await
        }
    }

    fn classifier() -> Arc<Classifier> {
        let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/model.toml");
        Arc::new(Classifier::load(&manifest).unwrap())
    }

    /// Queues `count` jobs for the cat photo; returns their ids.
    async fn queue_cats(services: &Services, count: usize) -> Vec<JobId> {
        let photo = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/samples/chelsea.jpg"),
        )
        .unwrap();
        let mut ids = Vec::new();
        for _ in 0..count {
            let job_id = JobId::new();
            services
                .inputs
                .put(
                    &job_id.input_key(),
                    Bytes::from(photo.clone()),
                    "image/jpeg",
                )
                .await
                .unwrap();
            let request = JobRequest {
                job_id,
                input_key: job_id.input_key(),
                file_name: "chelsea.jpg".into(),
                content_type: "image/jpeg".into(),
                submitted_at_ms: unix_millis(),
                attempt: 0,
            };
            services
                .requests
                .send(&serde_json::to_string(&request).unwrap())
                .await
                .unwrap();
            ids.push(job_id);
        }
        ids
    }

    /// Results go out in a task beside the next job; when that fails the
    /// request must stay queued for a retry, with nothing announced.
    #[tokio::test]
    async fn a_result_that_cannot_be_stored_leaves_the_job_for_a_retry() {
        let dir = tempfile::tempdir().unwrap();
        let mut services = Services::local(dir.path()).unwrap();
        queue_cats(&services, 1).await;
        let tried = Arc::new(tokio::sync::Notify::new());
        services.outputs = Arc::new(BrokenWrites {
            inner: Arc::clone(&services.outputs),
            tried: Arc::clone(&tried),
        });
        let worker = Worker::new(services.clone(), classifier(), WorkerSettings::new("test"));
        let (trigger, shutdown) = Shutdown::new();
        let running = tokio::spawn(async move { worker.run(shutdown).await });

        tried.notified().await;
        trigger.trigger();
        assert_eq!(running.await.unwrap().unwrap(), 0, "nothing completed");
        assert_eq!(
            services.requests.depth().await.unwrap(),
            QueueDepth {
                visible: 0,
                in_flight: 1
            },
            "the request is kept, hidden until its retry"
        );
        assert_eq!(services.results.depth().await.unwrap().visible, 0);
    }

    #[tokio::test]
    async fn every_job_of_a_batch_is_stored_announced_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let services = Services::local(dir.path()).unwrap();
        let ids = queue_cats(&services, 3).await;
        let worker = Worker::new(services.clone(), classifier(), WorkerSettings::new("test"));
        let (trigger, shutdown) = Shutdown::new();
        let running = tokio::spawn(async move { worker.run(shutdown).await });

        let mut announced = Vec::new();
        while announced.len() < ids.len() {
            for message in services
                .results
                .receive(10, Duration::from_secs(30), Duration::from_secs(30))
                .await
                .unwrap()
            {
                let result: JobResult = serde_json::from_str(&message.body).unwrap();
                assert!(
                    matches!(&result.outcome, Outcome::Done { label, .. } if label.contains("cat")),
                    "{result:?}"
                );
                announced.push(result.id);
            }
        }
        trigger.trigger();
        assert_eq!(running.await.unwrap().unwrap(), 3);
        assert_eq!(announced, ids, "announced in order");
        for id in &ids {
            assert!(services.outputs.exists(&id.output_key()).await.unwrap());
        }
        assert_eq!(
            services.requests.depth().await.unwrap(),
            QueueDepth {
                visible: 0,
                in_flight: 0
            },
            "every request deleted"
        );
    }
}
