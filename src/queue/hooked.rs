//! A queue seen through hooks: every call goes to the inner queue, and the
//! hooks may look at what a receive took (the web tier's telemetry), hold
//! it back (a slow network, in tests) or fail a depth read (an outage, in
//! tests). One forwarding impl for every such decorator, so a method added
//! to [`Queue`] is forwarded here once rather than missed in a copy.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Fence, FencedSend, Queue, QueueDepth, QueueError, ReceivedMessage};

/// What a decorator adds; both hooks do nothing unless overridden.
#[async_trait]
pub trait QueueHooks: Send + Sync + 'static {
    /// Sees each receive's messages before the caller gets them.
    async fn received(&self, _messages: &[ReceivedMessage]) {}

    /// Runs before each depth read; an error is returned in its place.
    fn before_depth(&self, _queue: &str) -> Result<(), QueueError> {
        Ok(())
    }
}

pub struct HookedQueue<H> {
    inner: Arc<dyn Queue>,
    hooks: H,
}

impl<H: QueueHooks> HookedQueue<H> {
    pub fn new(inner: Arc<dyn Queue>, hooks: H) -> HookedQueue<H> {
        HookedQueue { inner, hooks }
    }

    pub fn hooks(&self) -> &H {
        &self.hooks
    }
}

#[async_trait]
impl<H: QueueHooks> Queue for HookedQueue<H> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn inner_queue(&self) -> Option<&dyn Queue> {
        Some(self.inner.as_ref())
    }

    async fn send(&self, body: &str) -> Result<(), QueueError> {
        self.inner.send(body).await
    }

    async fn send_fenced(&self, body: &str, fence: &Fence<'_>) -> Result<FencedSend, QueueError> {
        self.inner.send_fenced(body, fence).await
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let messages = self.inner.receive(max, wait, visibility).await?;
        self.hooks.received(&messages).await;
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
        self.hooks.before_depth(self.inner.name())?;
        self.inner.depth().await
    }

    async fn sent_count(&self) -> Result<Option<u64>, QueueError> {
        self.inner.sent_count().await
    }
}
