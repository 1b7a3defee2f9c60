//! The result queue as the web tier's router reads it, with every result
//! shown to the telemetry on the way. Each result message is received by
//! exactly one router and deleted after, so each job is counted once across
//! web tier replicas, whichever worker process (or machine) produced it:
//! the queue-wait and inference figures come from the result's own timings.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::Telemetry;
use crate::job::JobResult;
use crate::queue::{Queue, QueueDepth, QueueError, ReceivedMessage};

pub struct ResultTap {
    inner: Arc<dyn Queue>,
    telemetry: Telemetry,
}

impl ResultTap {
    /// The tapped queue, ready to hand to the router.
    pub fn wrap(inner: Arc<dyn Queue>, telemetry: Telemetry) -> Arc<dyn Queue> {
        Arc::new(ResultTap { inner, telemetry })
    }
}

#[async_trait]
impl Queue for ResultTap {
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
        for message in &messages {
            // A malformed message is the router's to report.
            if let Ok(result) = serde_json::from_str::<JobResult>(&message.body) {
                self.telemetry.observe_result(&result);
            }
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

    async fn release(&self, message: &ReceivedMessage) -> Result<(), QueueError> {
        self.inner.release(message).await
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        self.inner.depth().await
    }
}
