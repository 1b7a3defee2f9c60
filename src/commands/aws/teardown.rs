//! `aws teardown`: removes the fleet's instances, queues and buckets.

use aws_sdk_s3::types::ObjectIdentifier;

use super::resources::{error, queue_names, queue_url, ResourceError};
use crate::aws::clients::describe;
use crate::aws::{AwsClients, AwsConfig};
use crate::fleet::{Ec2Fleet, Fleet};

/// Terminates the fleet's instances, deletes the queues, empties and
/// deletes the buckets. Returns what it removed; missing pieces are skipped.
pub async fn teardown(
    clients: &AwsClients,
    config: &AwsConfig,
) -> Result<Vec<String>, ResourceError> {
    let mut removed = Vec::new();
    let fleet = Ec2Fleet::new(clients, config);
    let ids: Vec<String> = fleet.list().await?.into_iter().map(|i| i.id).collect();
    if !ids.is_empty() {
        fleet.terminate(&ids).await?;
        removed.extend(ids.iter().map(|id| format!("instance {id}")));
    }
    for name in queue_names(config) {
        if let Some(url) = queue_url(clients, name).await {
            clients
                .sqs
                .delete_queue()
                .queue_url(url)
                .send()
                .await
                .map_err(|e| error("deleting queue", name, describe(&e)))?;
            removed.push(format!("queue {name}"));
        }
    }
    for bucket in [&config.input_bucket, &config.output_bucket] {
        if clients
            .s3
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            .is_err()
        {
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
        removed.push(format!("bucket {bucket}"));
    }
    Ok(removed)
}

/// S3 only deletes empty buckets; DeleteObjects takes 1000 keys a call.
async fn empty_bucket(clients: &AwsClients, bucket: &str) -> Result<(), ResourceError> {
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
        let delete = aws_sdk_s3::types::Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| error("emptying bucket", bucket, e.to_string()))?;
        clients
            .s3
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| error("emptying bucket", bucket, describe(&e)))?;
    }
}
