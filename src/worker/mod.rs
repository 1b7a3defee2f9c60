//! The app-tier loop: what makes an `imagefleet worker` process a worker.
//! It receives jobs from the request queue, fetches each image from the
//! input bucket, classifies it with the `imagefleet-worker` crate (the
//! `worker/` folder of the repository: model, decoding, kernels, no I/O),
//! stores the result, announces it, and only then deletes the request, so a
//! worker that dies mid-job loses nothing (the request comes back after its
//! lease runs out, seconds later).
//!
//! The crate is the classifier; this module is the service around it
//! (queues, buckets, leases, shutdown). A worker holds only the job it runs
//! and at most one fetched ahead, renews their leases while it holds them,
//! hands back what it will not start without counting an attempt, and
//! answers every job it gives up on with a failed result.

mod lease;
mod publish;
mod span;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use imagefleet_worker::Classifier;
use tracing::Instrument;

use crate::fleet::ActivityReporter;
use crate::job::{
    unix_millis, FailureKind, JobId, JobRequest, JobResult, JobTimings, Outcome, MAX_ATTEMPTS,
};
use crate::queue::{QueueError, ReceivedMessage};
use crate::services::Services;
use crate::shutdown::Shutdown;
use lease::Leases;
use publish::{retry_delay, retry_later, Publication, Publishing};

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub worker_id: String,
    /// Long-poll wait per receive when idle; also how long a stop request
    /// may wait for a receive in progress to end.
    pub wait: Duration,
    /// How long a received job stays hidden from other workers without a
    /// renewal: what a crashed worker costs its jobs.
    pub visibility: Duration,
    /// Keep a job's input after its result is stored (else deleted then).
    pub keep_inputs: bool,
}

/// Jobs fetched ahead of the one running: one, so the next job is at hand
/// when this one ends, and a crash strands at most two.
const PREFETCH: usize = 1;

impl WorkerSettings {
    pub fn new(worker_id: impl Into<String>) -> WorkerSettings {
        WorkerSettings {
            worker_id: worker_id.into(),
            // Short, so a stopping worker, which lets its receive finish,
            // stops promptly. On SQS each receive is a request: there 5 s
            // (an idle worker's 12 requests a minute cost about a cent a
            // month).
            wait: Duration::from_secs(1),
            // Renewed every third of this while held; so a dead worker's
            // jobs are back on the queue within 10 s.
            visibility: Duration::from_secs(10),
            keep_inputs: false,
        }
    }
}

pub struct Worker {
    services: Services,
    classifier: Arc<Classifier>,
    settings: WorkerSettings,
    activity: Option<Arc<dyn ActivityReporter>>,
}

/// What became of one attempt at a job.
enum Attempt {
    /// A result (a label, or a refusal the client should see), or a job
    /// given up on: on its way out.
    Finished(Box<Publication>),
    /// Failed for a reason that may pass; worth another attempt.
    Failed(anyhow::Error),
}

/// How a job leaves the worker.
enum Ending {
    /// With its result (a label or a final refusal); its input has served,
    /// unless the job asked to keep it (None).
    Done { input_key: Option<String> },
    /// Set aside in the dead-letter queue for an operator.
    DeadLetter,
}

/// A receive started while the current job runs.
type Prefetch = tokio::task::JoinHandle<Result<Vec<ReceivedMessage>, QueueError>>;

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

    /// Runs until `shutdown`; the job in hand is finished (and published)
    /// first, and a job fetched ahead is handed back without counting an
    /// attempt. Returns how many jobs it completed.
    pub async fn run(&self, mut shutdown: Shutdown) -> anyhow::Result<u64> {
        let leases = Leases::new(
            Arc::clone(&self.services.requests),
            self.settings.visibility,
        );
        let _renewal = leases.spawn_renewal();
        let mut ahead: VecDeque<ReceivedMessage> = VecDeque::new();
        let mut prefetch: Option<Prefetch> = None;
        let mut publishing = Publishing::default();
        let mut completed = 0u64;
        tracing::info!(worker = %self.settings.worker_id, "worker ready");
        while !shutdown.is_requested() {
            if ahead.is_empty() {
                if let Some(task) = prefetch.take() {
                    ahead.extend(collect_prefetch(task).await);
                }
            }
            if ahead.is_empty() {
                completed += publishing.finish().await;
                self.report_busy(false);
                if shutdown.is_requested() {
                    break;
                }
                match self.receive_waiting(&leases, &mut shutdown).await {
                    Some(received) => ahead.extend(received),
                    None => break,
                }
                continue;
            }
            self.report_busy(true);
            let message = ahead.pop_front().expect("not empty");
            if ahead.is_empty() && prefetch.is_none() {
                prefetch = Some(self.spawn_prefetch(&leases));
            }
            // Every line about the job, here and in its publication,
            // carries its job and request ids.
            let span = span::for_message(&message);
            completed += async {
                match self.attempt(&message, &leases).await {
                    Attempt::Finished(publication) => publishing.start(*publication).await,
                    Attempt::Failed(error) if message.receive_count >= MAX_ATTEMPTS => {
                        let publication = self.give_up(&message, &leases, &error);
                        publishing.start(publication).await
                    }
                    Attempt::Failed(error) => {
                        leases.forget(&message.receipt);
                        let delay = retry_delay(message.receive_count);
                        retry_later(self.services.requests.as_ref(), &message, delay, &error).await;
                        0
                    }
                }
            }
            .instrument(span)
            .await;
        }
        // Stopping: what was fetched but not started goes back at once.
        if let Some(task) = prefetch.take() {
            ahead.extend(collect_prefetch(task).await);
        }
        self.hand_back(ahead.drain(..).collect(), &leases).await;
        completed += publishing.finish().await;
        self.report_busy(false);
        tracing::info!(worker = %self.settings.worker_id, completed, "worker stopped");
        Ok(completed)
    }

    /// Waits for work (long poll). None when shutdown came first; whatever
    /// the receive in progress took is then handed back.
    async fn receive_waiting(
        &self,
        leases: &Arc<Leases>,
        shutdown: &mut Shutdown,
    ) -> Option<Vec<ReceivedMessage>> {
        let receive = self.services.requests.receive(
            1 + PREFETCH,
            self.settings.wait,
            self.settings.visibility,
        );
        tokio::pin!(receive);
        let received = tokio::select! {
            received = &mut receive => received,
            _ = shutdown.requested() => {
                // Dropping a receive in progress could lose what it has
                // already taken off the queue: hidden from every worker
                // until the visibility timeout. So let it finish (at most
                // `wait`) and hand back whatever it got.
                if let Ok(messages) = receive.await {
                    self.hand_back(messages, leases).await;
                }
                return None;
            }
        };
        match received {
            Ok(messages) => {
                for message in &messages {
                    leases.hold(&message.receipt);
                }
                Some(messages)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot receive jobs; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                Some(Vec::new())
            }
        }
    }

    /// Fetches the next job while this one runs, without waiting if there
    /// is none; its lease is renewed from the moment it arrives.
    fn spawn_prefetch(&self, leases: &Arc<Leases>) -> Prefetch {
        let queue = Arc::clone(&self.services.requests);
        let leases = Arc::clone(leases);
        let visibility = self.settings.visibility;
        tokio::spawn(async move {
            let messages = queue.receive(PREFETCH, Duration::ZERO, visibility).await?;
            for message in &messages {
                leases.hold(&message.receipt);
            }
            Ok(messages)
        })
    }

    fn report_busy(&self, busy: bool) {
        if let Some(activity) = &self.activity {
            activity.busy(busy);
        }
    }

    /// Gives back jobs this worker will not start; the queue does not count
    /// these deliveries as attempts.
    async fn hand_back(&self, messages: Vec<ReceivedMessage>, leases: &Leases) {
        if !messages.is_empty() {
            tracing::info!(jobs = messages.len(), "handing back jobs not started");
        }
        for message in messages {
            leases.forget(&message.receipt);
            if let Err(e) = self.services.requests.release(&message).await {
                tracing::warn!(error = %e, "could not hand a job back; it returns when its lease runs out");
            }
        }
    }

    /// One attempt at a job, up to the publication of its outcome.
    async fn attempt(&self, message: &ReceivedMessage, leases: &Arc<Leases>) -> Attempt {
        let started = Instant::now();
        let picked_at_ms = unix_millis();
        let request: JobRequest = match serde_json::from_str(&message.body) {
            Ok(request) => request,
            Err(e) => {
                // Redelivery cannot fix it: to the dead-letter queue at once,
                // with a failed result if the message at least names a job.
                tracing::error!(error = %e, "malformed request message; moved to the dead-letter queue");
                let result = job_id_in(&message.body).map(|id| {
                    self.failed_result(
                        message,
                        (id, String::new(), 0),
                        FailureKind::MalformedMessage,
                        format!("the job's request message could not be read: {e}"),
                    )
                });
                return Attempt::Finished(Box::new(self.publication(
                    message,
                    leases,
                    result,
                    Ending::DeadLetter,
                )));
            }
        };
        if message.receive_count > MAX_ATTEMPTS {
            // Earlier attempts ended without a word (a worker crashed on it
            // or stalled): do not try a job that may kill workers again.
            let error = anyhow::anyhow!(
                "{} earlier attempts ended without a result",
                message.receive_count - 1
            );
            return Attempt::Finished(Box::new(self.give_up(message, leases, &error)));
        }
        let input = match self.services.inputs.get(&request.input_key).await {
            Ok(input) => input,
            Err(e) => {
                return Attempt::Failed(
                    anyhow::Error::new(e)
                        .context(format!("fetching input of job {}", request.job_id)),
                )
            }
        };
        let outcome = match input {
            None => Outcome::Failed {
                kind: FailureKind::InputMissing,
                message: format!("the uploaded image (object {}) is gone", request.input_key),
            },
            Some(bytes) => match self.classify(bytes, &request, picked_at_ms, started).await {
                Ok(outcome) => outcome,
                Err(e) => return Attempt::Failed(e),
            },
        };
        let result = JobResult {
            id: request.job_id,
            file_name: request.file_name.clone(),
            outcome,
            model: self.classifier.manifest().name.clone(),
            worker_id: self.settings.worker_id.clone(),
            attempt: message.receive_count,
            submitted_at_ms: request.submitted_at_ms,
            completed_at_ms: unix_millis(),
        };
        tracing::debug!(job = %request.job_id, ms = started.elapsed().as_secs_f64() * 1e3, "job computed");
        let json = serde_json::to_string(&result).expect("results serialise");
        let ending = Ending::Done {
            input_key: (!request.keep_input).then_some(request.input_key),
        };
        Attempt::Finished(Box::new(self.publication(
            message,
            leases,
            Some((request.job_id, json)),
            ending,
        )))
    }

    /// The end of a job that failed every attempt: a failed result for its
    /// client, and its request to the dead-letter queue for an operator.
    fn give_up(
        &self,
        message: &ReceivedMessage,
        leases: &Arc<Leases>,
        error: &anyhow::Error,
    ) -> Publication {
        let request: Option<JobRequest> = serde_json::from_str(&message.body).ok();
        tracing::error!(
            job = ?request.as_ref().map(|r| r.job_id),
            attempts = message.receive_count,
            error = format!("{error:#}"),
            "giving up on the job; its request goes to the dead-letter queue"
        );
        let result = request.map(|r| {
            self.failed_result(
                message,
                (r.job_id, r.file_name, r.submitted_at_ms),
                FailureKind::AttemptsExhausted,
                format!(
                    "the job failed {} times and was set aside for an operator: {error:#}",
                    message.receive_count
                ),
            )
        });
        self.publication(message, leases, result, Ending::DeadLetter)
    }

    /// A failed result for the job `(id, file name, submitted at)`.
    fn failed_result(
        &self,
        delivery: &ReceivedMessage,
        (id, file_name, submitted_at_ms): (JobId, String, u64),
        kind: FailureKind,
        message: String,
    ) -> (JobId, String) {
        let result = JobResult {
            id,
            file_name,
            outcome: Outcome::Failed { kind, message },
            model: self.classifier.manifest().name.clone(),
            worker_id: self.settings.worker_id.clone(),
            attempt: delivery.receive_count,
            submitted_at_ms,
            completed_at_ms: unix_millis(),
        };
        (
            id,
            serde_json::to_string(&result).expect("results serialise"),
        )
    }

    fn publication(
        &self,
        message: &ReceivedMessage,
        leases: &Arc<Leases>,
        result: Option<(JobId, String)>,
        ending: Ending,
    ) -> Publication {
        let (dead_letter, input_key) = match ending {
            Ending::Done { input_key } => (false, input_key.filter(|_| !self.settings.keep_inputs)),
            // Its input stays for a redrive.
            Ending::DeadLetter => (true, None),
        };
        // Answers go to the web tier replica the job names, if any.
        let reply_to = serde_json::from_str::<JobRequest>(&message.body)
            .ok()
            .and_then(|request| request.reply_to);
        Publication {
            services: self.services.clone(),
            leases: Arc::clone(leases),
            message: message.clone(),
            result,
            dead_letter,
            input_key,
            reply_to,
        }
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

/// The prefetched jobs, or none if that receive failed.
async fn collect_prefetch(task: Prefetch) -> Vec<ReceivedMessage> {
    match task.await {
        Ok(Ok(messages)) => messages,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not fetch the next job ahead");
            Vec::new()
        }
        Err(e) => {
            tracing::warn!(error = %e, "the fetch-ahead task failed");
            Vec::new()
        }
    }
}

/// The job id of a request message that does not parse as a whole.
fn job_id_in(body: &str) -> Option<JobId> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    JobId::parse(value.get("job_id")?.as_str()?)
}
