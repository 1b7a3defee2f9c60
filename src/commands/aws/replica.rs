//! A web tier replica on AWS: its own reply queue, created at start (after
//! clearing away those of replicas that died, with `--reap`) and deleted
//! at shutdown. Locally there is one web tier per data dir and no reply
//! queue.

use anyhow::Context;

use crate::aws::AwsClients;
use crate::commands::args::{Backend, WebArgs};
use crate::queue::reply::{reap_stale, STALE_AFTER};
use crate::queue::ReplyQueue;

/// The replica's reply queue on AWS, `None` locally.
pub async fn open_reply_queue(args: &WebArgs) -> anyhow::Result<Option<ReplyQueue>> {
    if args.backend.backend != Backend::Aws {
        return Ok(None);
    }
    let config = args.backend.aws.load()?;
    let clients = AwsClients::new(&config).await;
    let replica = match &args.replica {
        Some(id) => {
            validate_replica(id)?;
            id.clone()
        }
        None => uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
    };
    let name = config.reply_queue(&replica);
    if args.reap {
        let reaped = reap_stale(
            &clients.sqs,
            &config.reply_queue_prefix(),
            &config.fleet,
            STALE_AFTER,
            Some(&name),
        )
        .await
        .context("removing stale reply queues")?;
        if !reaped.is_empty() {
            tracing::info!(count = reaped.len(), queues = ?reaped, "removed stale reply queues");
        }
    }
    let queue = match ReplyQueue::create(clients.sqs.clone(), &name, &config.fleet).await {
        // SQS refuses a name deleted less than 60 s ago: a replica with a
        // fixed id that restarts at once takes a fresh name instead.
        Err(e) if e.to_string().contains("QueueDeletedRecently") => {
            let fresh = format!(
                "{}-{}",
                replica,
                &uuid::Uuid::new_v4().simple().to_string()[..4]
            );
            tracing::info!(
                replica,
                fresh,
                "reply queue deleted less than 60 s ago; using a fresh name"
            );
            ReplyQueue::create(
                clients.sqs.clone(),
                &config.reply_queue(&fresh),
                &config.fleet,
            )
            .await
        }
        other => other,
    }
    .context("creating this replica's reply queue")?;
    Ok(Some(queue))
}

/// Deletes the reply queue, logging rather than failing: the web tier has
/// already stopped, and `--reap` or `aws teardown` remove a leftover.
pub async fn close_reply_queue(queue: Option<ReplyQueue>) {
    if let Some(queue) = queue {
        let name = queue.name().to_owned();
        if let Err(e) = queue.close().await {
            tracing::warn!(queue = %name, error = %e, "cannot delete the reply queue; `--reap` or `aws teardown` will");
        }
    }
}

fn validate_replica(id: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=25).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "replica id {id:?}: 1 to 25 lowercase letters, digits and '-' (it names a queue)"
    );
    Ok(())
}
