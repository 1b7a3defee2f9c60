//! `aws teardown`: removes the fleet's group, instances (stopped ones too),
//! queues (reply queues too) and buckets. It trusts tags, not names: a
//! queue, bucket, group or launch template that does not carry the fleet's
//! tag is refused and reported, never deleted.

use std::time::Duration;

use aws_sdk_s3::types::ObjectIdentifier;
use serde::Serialize;

use super::group::teardown_group;
use super::resources::{
    bucket_fleet_tag, error, queue_fleet_tag, queue_names, queue_url, ResourceError,
};
use crate::aws::clients::{describe, is_not_found};
use crate::aws::config::FLEET_TAG;
use crate::aws::{AwsClients, AwsConfig};
use crate::fleet::{Ec2Fleet, Fleet};
use crate::queue::SqsQueue;

/// Emptying a bucket gives up after this many rounds in a row that deleted
/// nothing (objects it may list but not delete, say), instead of looping.
const MAX_FRUITLESS_ROUNDS: u32 = 3;

#[derive(Debug, Default, Clone, Serialize)]
pub struct Teardown {
    /// What was removed (`queue NAME`, `bucket NAME`, `instance ID`, ...).
    pub removed: Vec<String>,
    /// What was left because it does not carry the fleet's tag.
    pub refused: Vec<String>,
}

/// Deletes the group and launch template, terminates the fleet's
/// instances, deletes the queues, empties and deletes the buckets. Missing
/// pieces are skipped; untagged ones refused.
pub async fn teardown(clients: &AwsClients, config: &AwsConfig) -> Result<Teardown, ResourceError> {
    let mut report = Teardown::default();
    match teardown_group(clients, config).await {
        Ok(removed) => report.removed.extend(removed),
        Err(e) if e.action == "refusing to touch" => report.refused.push(e.to_string()),
        Err(e) => return Err(e),
    }
    // Raw instances, and whatever the group left (every worker instance
    // carries the fleet tag), in any state but terminated.
    let fleet = Ec2Fleet::new(clients, config).read_only();
    let ids: Vec<String> = fleet.list().await?.into_iter().map(|i| i.id).collect();
    if !ids.is_empty() {
        fleet.terminate(&ids).await?;
        report
            .removed
            .extend(ids.iter().map(|id| format!("instance {id}")));
    }
    let mut queues: Vec<String> = queue_names(config).into_iter().cloned().collect();
    queues.extend(
        SqsQueue::list_names(&clients.sqs, &config.reply_queue_prefix())
            .await
            .map_err(|e| error("listing reply queues of", &config.fleet, e.to_string()))?,
    );
    for name in &queues {
        let Some(url) = queue_url(clients, name).await? else {
            continue;
        };
        if queue_fleet_tag(clients, name, &url).await?.as_deref() != Some(&config.fleet) {
            report.refused.push(refusal("queue", name, &config.fleet));
            continue;
        }
        match clients.sqs.delete_queue().queue_url(url).send().await {
            Ok(_) => report.removed.push(format!("queue {name}")),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(error("deleting queue", name, describe(&e))),
        }
    }
    for bucket in [&config.input_bucket, &config.output_bucket] {
        match clients.s3.head_bucket().bucket(bucket).send().await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(error("reading bucket", bucket, describe(&e))),
        }
        if bucket_fleet_tag(clients, bucket).await?.as_deref() != Some(&config.fleet) {
            report
                .refused
                .push(refusal("bucket", bucket, &config.fleet));
            continue;
        }
        empty_bucket(clients, bucket).await?;
        clients
            .s3
            .delete_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| error("deleting bucket", bucket, describe(&e)))?;
        report.removed.push(format!("bucket {bucket}"));
    }
    Ok(report)
}

fn refusal(kind: &str, name: &str, fleet: &str) -> String {
    format!(
        "{kind} {name}: not tagged {FLEET_TAG}={fleet}, so not deleted \
         (`aws setup` tags the fleet's own; delete anything else by hand)"
    )
}

/// S3 only deletes empty buckets; DeleteObjects takes 1000 keys a call.
/// Keys that fail are retried on the next round; rounds that delete
/// nothing are counted, and a few in a row end it with the keys' errors.
async fn empty_bucket(clients: &AwsClients, bucket: &str) -> Result<(), ResourceError> {
    let mut fruitless = 0;
    loop {
        let page = clients
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .max_keys(1000)
            .send()
            .await
            .map_err(|e| error("listing bucket", bucket, describe(&e)))?;
        let objects: Vec<ObjectIdentifier> = page
            .contents()
            .iter()
            .filter_map(|o| o.key())
            .map(|key| ObjectIdentifier::builder().key(key).build())
            .collect::<Result<_, _>>()
            .map_err(|e| error("emptying bucket", bucket, e.to_string()))?;
        if objects.is_empty() {
            return Ok(());
        }
        let asked = objects.len();
        let delete = aws_sdk_s3::types::Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| error("emptying bucket", bucket, e.to_string()))?;
        let output = clients
            .s3
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| error("emptying bucket", bucket, describe(&e)))?;
        let failed = output.errors();
        if failed.len() < asked {
            fruitless = 0;
            continue;
        }
        fruitless += 1;
        if fruitless >= MAX_FRUITLESS_ROUNDS {
            let first = failed.first();
            return Err(error(
                "emptying bucket",
                bucket,
                format!(
                    "{} objects could not be deleted, {fruitless} times; first: {} {} {}",
                    failed.len(),
                    first.and_then(|e| e.key()).unwrap_or(""),
                    first.and_then(|e| e.code()).unwrap_or(""),
                    first.and_then(|e| e.message()).unwrap_or("")
                ),
            ));
        }
        tokio::time::sleep(Duration::from_secs(1 << fruitless)).await;
    }
}
