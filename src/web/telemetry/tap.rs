//! The result queue as the web tier's router reads it, with every result
//! shown to the telemetry on the way. Each result message is received by
//! exactly one router and deleted after, so each job is counted once across
//! web tier replicas, whichever worker process (or machine) produced it:
//! the queue-wait and inference figures come from the result's own timings.

use std::sync::Arc;

use async_trait::async_trait;

use super::Telemetry;
use crate::job::JobResult;
use crate::queue::{HookedQueue, Queue, QueueHooks, ReceivedMessage};

pub struct ResultTap {
    telemetry: Telemetry,
}

impl ResultTap {
    /// The tapped queue, ready to hand to the router.
    pub fn wrap(inner: Arc<dyn Queue>, telemetry: Telemetry) -> Arc<dyn Queue> {
        Arc::new(HookedQueue::new(inner, ResultTap { telemetry }))
    }
}

#[async_trait]
impl QueueHooks for ResultTap {
    async fn received(&self, messages: &[ReceivedMessage]) {
        for message in messages {
            // A malformed message is the router's to report.
            if let Ok(result) = serde_json::from_str::<JobResult>(&message.body) {
                self.telemetry.observe_result(&result);
            }
        }
    }
}
