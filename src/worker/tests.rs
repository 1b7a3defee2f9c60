//! The loop against real queues and buckets in a temporary data dir, and
//! the real model.

use async_trait::async_trait;

use super::*;
use crate::job::JobId;
use crate::queue::{Queue, QueueDepth, QueueError};
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
    async fn put(&self, key: &str, _bytes: Bytes, _content_type: &str) -> Result<(), StoreError> {
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
            reply_to: None,
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
