//! The loop against real queues and buckets in a temporary data dir, and
//! the real model.

use async_trait::async_trait;

use super::*;
use crate::job::{FailureKind, JobId, MAX_ATTEMPTS};
use crate::queue::{HookedQueue, QueueDepth, QueueHooks};
use crate::store::{ObjectStore, StoreError};

/// A queue behind a slow network: `receive` takes the messages off the
/// queue at once, but its answer arrives `delay` later.
struct SlowAnswers {
    delay: Duration,
    taken: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl QueueHooks for SlowAnswers {
    async fn received(&self, messages: &[ReceivedMessage]) {
        if !messages.is_empty() {
            self.taken.notify_one();
            tokio::time::sleep(self.delay).await;
        }
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
    services.requests = Arc::new(HookedQueue::new(
        Arc::clone(&queue),
        SlowAnswers {
            delay: Duration::from_millis(500),
            taken: Arc::clone(&taken),
        },
    ));
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

/// A bucket that is down for writes or for reads.
struct Broken {
    inner: Arc<dyn ObjectStore>,
    writes: bool,
    reads: bool,
    tried: Arc<tokio::sync::Notify>,
}

impl Broken {
    fn writes(inner: &Arc<dyn ObjectStore>, tried: &Arc<tokio::sync::Notify>) -> Arc<Broken> {
        Arc::new(Broken {
            inner: Arc::clone(inner),
            writes: true,
            reads: false,
            tried: Arc::clone(tried),
        })
    }

    fn reads(inner: &Arc<dyn ObjectStore>, tried: &Arc<tokio::sync::Notify>) -> Arc<Broken> {
        Arc::new(Broken {
            inner: Arc::clone(inner),
            writes: false,
            reads: true,
            tried: Arc::clone(tried),
        })
    }

    fn fail(&self, operation: &'static str, key: &str) -> StoreError {
        self.tried.notify_one();
        StoreError::Unavailable {
            bucket: self.bucket().to_owned(),
            operation,
            key: key.to_owned(),
            message: "I/O error".into(),
        }
    }
}

#[async_trait]
impl ObjectStore for Broken {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }
    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<(), StoreError> {
        if self.writes {
            return Err(self.fail("put", key));
        }
        self.inner.put(key, bytes, content_type).await
    }
    async fn put_if_absent(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
    ) -> Result<bool, StoreError> {
        if self.writes {
            return Err(self.fail("put", key));
        }
        self.inner.put_if_absent(key, bytes, content_type).await
    }
    async fn writer(
        &self,
        key: &str,
        content_type: &str,
    ) -> Result<Box<dyn crate::store::ObjectWriter>, StoreError> {
        if self.writes {
            return Err(self.fail("put", key));
        }
        self.inner.writer(key, content_type).await
    }
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        if self.reads {
            return Err(self.fail("get", key));
        }
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
            reply_to: None,
            request_id: None,
            keep_input: false,
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
    services.outputs = Broken::writes(&services.outputs, &tried);
    let worker = Worker::new(services.clone(), classifier(), WorkerSettings::new("test"));
    let (trigger, shutdown) = Shutdown::new();
    let running = tokio::spawn(async move { worker.run(shutdown).await });

    tried.notified().await;
    let failed = std::time::Instant::now();
    trigger.trigger();
    assert_eq!(running.await.unwrap().unwrap(), 0, "nothing completed");
    let depth = services.requests.depth().await.unwrap();
    assert_eq!(depth.backlog(), 1, "the request is kept: {depth:?}");
    // Hidden until its retry a second later. A worker that had already
    // begun its next long poll when told to stop lets that receive finish,
    // and on a loaded machine it may then take the job back after the
    // retry delay and hand it back, visible: only a fast stop can tell.
    if failed.elapsed() < Duration::from_millis(800) {
        assert_eq!(
            depth,
            QueueDepth {
                visible: 0,
                in_flight: 1
            },
            "the request is kept, hidden until its retry"
        );
    }
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

/// The announced results on the results queue, once `count` arrived;
/// panics after 30 s.
async fn announcements(services: &Services, count: usize) -> Vec<JobResult> {
    tokio::time::timeout(Duration::from_secs(30), take_announcements(services, count))
        .await
        .expect("the results were announced within 30 s")
}

async fn take_announcements(services: &Services, count: usize) -> Vec<JobResult> {
    let mut announced = Vec::new();
    while announced.len() < count {
        for message in services
            .results
            .receive(10, Duration::from_secs(30), Duration::from_secs(30))
            .await
            .unwrap()
        {
            announced.push(serde_json::from_str(&message.body).unwrap());
            services.results.delete(&message.receipt).await.unwrap();
        }
    }
    announced
}

/// A job that fails every attempt is answered (a failed result stored and
/// announced) and set aside in the dead-letter queue; it does not wait for
/// the queue's own redrive, which answers nobody.
#[tokio::test]
async fn a_job_that_fails_every_attempt_is_answered_and_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let mut services = Services::local(dir.path()).unwrap();
    let ids = queue_cats(&services, 1).await;
    let tried = Arc::new(tokio::sync::Notify::new());
    services.inputs = Broken::reads(&services.inputs, &tried);
    let worker = Worker::new(services.clone(), classifier(), WorkerSettings::new("test"));
    let (trigger, shutdown) = Shutdown::new();
    let started = std::time::Instant::now();
    let running = tokio::spawn(async move { worker.run(shutdown).await });

    let announced = announcements(&services, 1).await;
    let answered_after = started.elapsed();
    trigger.trigger();
    running.await.unwrap().unwrap();
    let result = &announced[0];
    assert_eq!(result.id, ids[0]);
    assert_eq!(result.attempt, MAX_ATTEMPTS);
    match &result.outcome {
        Outcome::Failed { kind, message } => {
            assert_eq!(*kind, FailureKind::AttemptsExhausted);
            assert!(message.contains("I/O error"), "{message}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    // Retries wait 1 s, then 2 s: the answer comes within seconds.
    assert!(
        answered_after < Duration::from_secs(10),
        "{answered_after:?}"
    );
    let stored = services.outputs.get(&ids[0].output_key()).await.unwrap();
    assert!(stored.is_some(), "the failure is the job's stored result");
    assert_eq!(
        services.requests.depth().await.unwrap(),
        QueueDepth::default()
    );
    let dead = services
        .dead_letters
        .receive(10, Duration::ZERO, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    let request: JobRequest = serde_json::from_str(&dead[0].body).unwrap();
    assert_eq!(request.job_id, ids[0]);
}

/// A message that is not a job request goes to the dead-letter queue on
/// first sight; if it names a job, that job is answered.
#[tokio::test]
async fn malformed_messages_are_dead_lettered_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let services = Services::local(dir.path()).unwrap();
    let named = JobId::new();
    services.requests.send("not json at all").await.unwrap();
    services
        .requests
        .send(&format!(r#"{{"job_id": "{named}", "input": 7}}"#))
        .await
        .unwrap();
    let worker = Worker::new(services.clone(), classifier(), WorkerSettings::new("test"));
    let (trigger, shutdown) = Shutdown::new();
    let running = tokio::spawn(async move { worker.run(shutdown).await });

    let announced = announcements(&services, 1).await;
    assert_eq!(announced[0].id, named);
    assert!(matches!(
        announced[0].outcome,
        Outcome::Failed {
            kind: FailureKind::MalformedMessage,
            ..
        }
    ));
    let mut dead = Vec::new();
    while dead.len() < 2 {
        dead.extend(
            services
                .dead_letters
                .receive(10, Duration::from_secs(5), Duration::from_secs(30))
                .await
                .unwrap(),
        );
    }
    trigger.trigger();
    running.await.unwrap().unwrap();
    assert_eq!(
        services.requests.depth().await.unwrap(),
        QueueDepth::default()
    );
    assert!(dead.iter().any(|m| m.body == "not json at all"));
}
