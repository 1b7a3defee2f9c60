//! The `Queue` seam: SQS semantics on every backend. A received message is
//! invisible to other consumers until it is deleted or its visibility
//! timeout passes; after `max_receives` receives without a delete it moves to
//! the dead-letter queue.

mod hooked;
pub mod reply;
mod sqlite;
mod sqs;

use std::any::Any;
use std::time::Duration;

use async_trait::async_trait;

pub use hooked::{HookedQueue, QueueHooks};
pub use reply::{ReplyQueue, ReplyQueues};
pub use sqlite::{SqliteQueue, SqliteQueueFile};
pub use sqs::SqsQueue;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub body: String,
    /// Names this delivery; deleting or extending needs it. A later delivery
    /// of the same message gets a new receipt and the old one stops working.
    pub receipt: String,
    /// 1 on the first delivery.
    pub receive_count: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueDepth {
    /// Waiting to be received.
    pub visible: u64,
    /// Received and neither deleted nor timed out yet.
    pub in_flight: u64,
}

impl QueueDepth {
    pub fn backlog(&self) -> u64 {
        self.visible + self.in_flight
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue {queue} is unavailable: {message}")]
    Unavailable { queue: String, message: String },
    /// The receipt belongs to an older delivery, or the message is gone.
    #[error("receipt is no longer valid for queue {queue}")]
    StaleReceipt { queue: String },
    #[error("invalid request to queue {queue}: {message}")]
    Invalid { queue: String, message: String },
}

/// SQS's own limit; the same everywhere so code behaves alike on both backends.
pub const MAX_RECEIVE_BATCH: usize = 10;

/// Refuses a receive batch size SQS would refuse, on every backend alike.
fn check_batch(queue: &str, max: usize) -> Result<(), QueueError> {
    if (1..=MAX_RECEIVE_BATCH).contains(&max) {
        return Ok(());
    }
    Err(QueueError::Invalid {
        queue: queue.to_owned(),
        message: format!("receive batch {max} is not in 1..={MAX_RECEIVE_BATCH}"),
    })
}

/// A consumer's lease on a received message: a send conditioned on it
/// ([`Queue::send_fenced`]) goes out only while the consumer still holds
/// the message, so a worker that stalled and lost its job to another
/// announces nothing.
pub struct Fence<'a> {
    /// The queue the message came from.
    pub queue: &'a dyn Queue,
    pub receipt: &'a str,
    /// How long the lease is renewed for.
    pub visibility: Duration,
    /// Whether a send that goes out also ends the message (deletes it) in
    /// the same step, so that no one can receive it again between the two:
    /// a worker that stalled right after announcing would otherwise lose
    /// the job to another, which finds the result stored and announces it
    /// a second time. Only the SQLite queue can do both at once (one
    /// transaction); elsewhere the message stays for its holder to delete
    /// ([`FencedSend::Sent`]).
    pub consume: bool,
}

/// What a fenced send did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FencedSend {
    /// Nothing sent: the fence's lease was lost.
    LeaseLost,
    /// Sent; the fenced message is still there for its holder to delete.
    Sent,
    /// Sent, and the fenced message deleted in the same transaction.
    SentAndConsumed,
}

impl Fence<'_> {
    /// Renews the lease; false when the queue no longer honours the receipt
    /// (another consumer received the message since).
    pub async fn renew(&self) -> Result<bool, QueueError> {
        match self
            .queue
            .extend_visibility(self.receipt, self.visibility)
            .await
        {
            Ok(()) => Ok(true),
            Err(QueueError::StaleReceipt { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Renews the fence, then sends: two steps, with a moment between them in
/// which a consumer that stalls can still send after losing its lease (the
/// web tier answers each request once, so a duplicate is dropped there).
async fn renew_then_send<Q: Queue + ?Sized>(
    queue: &Q,
    body: &str,
    fence: &Fence<'_>,
) -> Result<FencedSend, QueueError> {
    if !fence.renew().await? {
        return Ok(FencedSend::LeaseLost);
    }
    queue.send(body).await?;
    Ok(FencedSend::Sent)
}

/// Lets a backend recognise another queue of its own kind (the SQLite
/// queue: one of the same file, for a send and a fence in one transaction).
pub trait AsAny {
    fn as_any(&self) -> &dyn Any;
}

impl<T: Any> AsAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[async_trait]
pub trait Queue: AsAny + Send + Sync {
    fn name(&self) -> &str;
    /// The queue a decorator ([`HookedQueue`]) forwards to; `None` for a
    /// queue of its own. Lets a backend find its own kind beneath.
    fn inner_queue(&self) -> Option<&dyn Queue> {
        None
    }
    async fn send(&self, body: &str) -> Result<(), QueueError>;
    /// Sends `body` only while `fence` still holds its message, renewing
    /// that lease (or, with [`Fence::consume`], deleting the message where
    /// the queue can do it in the same step); sends nothing when it was
    /// lost. The SQLite queue does both in one transaction when the fence's
    /// queue shares its file; elsewhere it is [`renew_then_send`].
    async fn send_fenced(&self, body: &str, fence: &Fence<'_>) -> Result<FencedSend, QueueError> {
        renew_then_send(self, body, fence).await
    }
    /// Up to `max` (1..=10) messages; waits up to `wait` for the first one.
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError>;
    async fn delete(&self, receipt: &str) -> Result<(), QueueError>;
    /// Makes the message invisible for `visibility` from now; zero releases
    /// it for another consumer at once (the delivery still counts as an
    /// attempt).
    async fn extend_visibility(
        &self,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), QueueError>;
    /// Gives a received message back for another consumer at once, without
    /// counting this delivery as an attempt: for work a consumer took but
    /// will not start (it is stopping). Afterwards the receipt is stale.
    async fn release(&self, message: &ReceivedMessage) -> Result<(), QueueError>;
    async fn depth(&self) -> Result<QueueDepth, QueueError>;
    /// How many messages were ever sent to this queue, where the backend
    /// keeps count cheaply (the SQLite queue, in each send's transaction);
    /// `None` where it does not (SQS). A controller at zero reads it often
    /// to wake on the first job, and records it to count arrivals.
    async fn sent_count(&self) -> Result<Option<u64>, QueueError> {
        Ok(None)
    }
}
