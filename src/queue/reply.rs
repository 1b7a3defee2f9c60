//! Where results go back to: each web tier replica on AWS has its own
//! reply queue, named in each job it queues (`JobRequest::reply_to`), so
//! any number of replicas share one request queue without taking each
//! other's results. The output bucket stays the record; a reply is only
//! the fast path to the request waiting for it.
//!
//! - [`ReplyQueues`]: the worker's side. Opens a reply queue by name once
//!   and keeps it; a reply queue that is gone (its replica stopped) is not
//!   an error, and a job that names none, or a local one, is answered on
//!   the shared result queue.
//! - [`ReplyQueue`]: a replica's own queue: created at start with the
//!   fleet's tag and a heartbeat tag renewed every minute, deleted at
//!   shutdown; [`reap_stale`] removes those whose replica died.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;

use super::{Fence, FencedSend, Queue, QueueError, SqsQueue};
use crate::aws::config::FLEET_TAG;
use crate::job::unix_millis;

/// The tag a replica renews on its reply queue (Unix seconds).
pub const HEARTBEAT_TAG: &str = "imagefleet:heartbeat";
/// How often a replica renews its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(60);
/// A reply queue whose heartbeat is older than this lost its replica.
pub const STALE_AFTER: Duration = Duration::from_secs(10 * 60);
/// Results nobody received in this long are of no use to anyone: the
/// waiting request has long answered from the output bucket or timed out.
const REPLY_RETENTION_SECS: u32 = 10 * 60;

#[derive(Clone)]
pub struct ReplyQueues(Arc<Inner>);

enum Inner {
    /// Everything goes to the shared result queue (the local backend: one
    /// web tier per data dir).
    Shared,
    Sqs {
        client: aws_sdk_sqs::Client,
        /// Only queues named so are replied to (the fleet's own).
        prefix: String,
        open: Mutex<HashMap<String, Arc<SqsQueue>>>,
    },
}

impl ReplyQueues {
    pub fn shared() -> ReplyQueues {
        ReplyQueues(Arc::new(Inner::Shared))
    }

    /// Reply queues on SQS whose names start with `prefix`.
    pub fn sqs(client: aws_sdk_sqs::Client, prefix: String) -> ReplyQueues {
        ReplyQueues(Arc::new(Inner::Sqs {
            client,
            prefix,
            open: Mutex::new(HashMap::new()),
        }))
    }

    /// Sends a result to the queue `reply_to` names, or to `shared` when it
    /// names none, while `fence` (the worker's lease on the job) holds:
    /// [`FencedSend::LeaseLost`], sending nothing, when the lease was lost.
    /// Errors only when the result could not be sent to a queue that exists
    /// (the caller retries the job).
    pub async fn announce(
        &self,
        reply_to: Option<&str>,
        shared: &dyn Queue,
        body: &str,
        fence: &Fence<'_>,
    ) -> Result<FencedSend, QueueError> {
        let (client, prefix, open, name) = match (&*self.0, reply_to) {
            (
                Inner::Sqs {
                    client,
                    prefix,
                    open,
                },
                Some(name),
            ) => (client, prefix, open, name),
            _ => return shared.send_fenced(body, fence).await,
        };
        // SQS has no transactions: the lease is renewed, then the reply sent.
        if !fence.renew().await? {
            return Ok(FencedSend::LeaseLost);
        }
        if !name.starts_with(prefix.as_str()) || name.len() == prefix.len() {
            // Not a queue of this fleet's web tier: whoever wrote the job,
            // the result is in the output bucket, and nowhere else.
            tracing::warn!(
                reply_to = name,
                "job names a reply queue outside the fleet; not replying"
            );
            return Ok(FencedSend::Sent);
        }
        let cached = open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned();
        let queue = match cached {
            Some(queue) => queue,
            None => match SqsQueue::open_if_exists(client.clone(), name).await? {
                Some(queue) => {
                    let queue = Arc::new(queue);
                    open.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name.to_owned(), Arc::clone(&queue));
                    queue
                }
                None => {
                    tracing::debug!(reply_to = name, "reply queue is gone; the result is stored");
                    return Ok(FencedSend::Sent);
                }
            },
        };
        if !queue.send_if_exists(body).await? {
            tracing::debug!(reply_to = name, "reply queue is gone; the result is stored");
            open.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        }
        Ok(FencedSend::Sent)
    }
}

/// A web tier replica's own reply queue.
pub struct ReplyQueue {
    queue: Arc<SqsQueue>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl ReplyQueue {
    /// Creates the queue `name`, tagged as `fleet`'s, with a fresh
    /// heartbeat that a task renews until [`ReplyQueue::close`].
    pub async fn create(
        client: aws_sdk_sqs::Client,
        name: &str,
        fleet: &str,
    ) -> Result<ReplyQueue, QueueError> {
        let attributes = HashMap::from([(
            QueueAttributeName::MessageRetentionPeriod,
            REPLY_RETENTION_SECS.to_string(),
        )]);
        let tags = HashMap::from([
            (FLEET_TAG.to_owned(), fleet.to_owned()),
            (HEARTBEAT_TAG.to_owned(), now_secs().to_string()),
        ]);
        let queue = Arc::new(SqsQueue::create(client, name, attributes, tags).await?);
        let beating = Arc::clone(&queue);
        // The first beat at once: CreateQueue hands back a queue of the same
        // name left by a crashed predecessor (same id) with its old tags.
        let heartbeat = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(HEARTBEAT_EVERY);
            loop {
                ticker.tick().await;
                if let Err(e) = beating.tag(HEARTBEAT_TAG, &now_secs().to_string()).await {
                    tracing::warn!(error = %e, "cannot renew the reply queue's heartbeat");
                }
            }
        });
        tracing::info!(queue = name, "reply queue created");
        Ok(ReplyQueue { queue, heartbeat })
    }

    pub fn name(&self) -> &str {
        self.queue.name()
    }

    /// The queue, for the result router to drain.
    pub fn queue(&self) -> Arc<dyn Queue> {
        Arc::clone(&self.queue) as Arc<dyn Queue>
    }

    /// Stops the heartbeat and deletes the queue (results still on their
    /// way are in the output bucket).
    pub async fn close(self) -> Result<(), QueueError> {
        self.heartbeat.abort();
        self.queue.delete_queue().await?;
        tracing::info!(queue = self.queue.name(), "reply queue deleted");
        Ok(())
    }
}

/// Deletes the fleet's reply queues (names starting with `prefix`, tagged
/// with `fleet`) whose heartbeat is older than `stale_after`, except
/// `keep`. A queue without the fleet's tag is left alone. Returns the
/// names deleted.
pub async fn reap_stale(
    client: &aws_sdk_sqs::Client,
    prefix: &str,
    fleet: &str,
    stale_after: Duration,
    keep: Option<&str>,
) -> Result<Vec<String>, QueueError> {
    let mut reaped = Vec::new();
    let now = now_secs();
    for name in SqsQueue::list_names(client, prefix).await? {
        if Some(name.as_str()) == keep {
            continue;
        }
        let Some(queue) = SqsQueue::open_if_exists(client.clone(), &name).await? else {
            continue;
        };
        let tags = queue.tags().await?;
        if tags.get(FLEET_TAG).map(String::as_str) != Some(fleet) {
            tracing::warn!(queue = %name, "not tagged as this fleet's; leaving it");
            continue;
        }
        let beat = tags
            .get(HEARTBEAT_TAG)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if now.saturating_sub(beat) >= stale_after.as_secs() {
            queue.delete_queue().await?;
            tracing::info!(queue = %name, "deleted a stale reply queue");
            reaped.push(name);
        }
    }
    Ok(reaped)
}

fn now_secs() -> u64 {
    unix_millis() / 1000
}
