//! What setup, status and teardown share: the fleet's queues by name, the
//! fleet tag on queues and buckets, and the error they report.

use crate::aws::clients::{describe, is_not_found};
use crate::aws::config::FLEET_TAG;
use crate::aws::AwsClients;
use crate::aws::AwsConfig;
use crate::fleet::FleetError;

/// The id of the lifecycle rule setup puts on both buckets.
pub(super) const LIFECYCLE_RULE: &str = "imagefleet-retention";

#[derive(Debug, thiserror::Error)]
#[error("{action} {resource}: {message}")]
pub struct ResourceError {
    pub action: &'static str,
    pub resource: String,
    pub message: String,
}

impl From<FleetError> for ResourceError {
    fn from(e: FleetError) -> Self {
        ResourceError {
            action: "managing",
            resource: "instances".into(),
            message: e.to_string(),
        }
    }
}

pub(super) fn error(action: &'static str, resource: &str, message: String) -> ResourceError {
    ResourceError {
        action,
        resource: resource.to_owned(),
        message,
    }
}

/// The queue's URL, `None` when there is no such queue; any other failure
/// (a denied request, say) is an error, never "missing".
pub(super) async fn queue_url(
    clients: &AwsClients,
    name: &str,
) -> Result<Option<String>, ResourceError> {
    match clients.sqs.get_queue_url().queue_name(name).send().await {
        Ok(output) => Ok(output.queue_url),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(error("finding queue", name, describe(&e))),
    }
}

pub(super) fn queue_names(config: &AwsConfig) -> [&String; 3] {
    [
        &config.requests_queue,
        &config.results_queue,
        &config.dead_letter_queue,
    ]
}

/// The fleet a queue is tagged with, if any.
pub(super) async fn queue_fleet_tag(
    clients: &AwsClients,
    name: &str,
    url: &str,
) -> Result<Option<String>, ResourceError> {
    let output = clients
        .sqs
        .list_queue_tags()
        .queue_url(url)
        .send()
        .await
        .map_err(|e| error("reading tags of queue", name, describe(&e)))?;
    Ok(output.tags.unwrap_or_default().remove(FLEET_TAG))
}

/// The fleet a bucket is tagged with, if any.
pub(super) async fn bucket_fleet_tag(
    clients: &AwsClients,
    bucket: &str,
) -> Result<Option<String>, ResourceError> {
    match clients.s3.get_bucket_tagging().bucket(bucket).send().await {
        Ok(output) => Ok(output
            .tag_set
            .iter()
            .find(|t| t.key() == FLEET_TAG)
            .map(|t| t.value().to_owned())),
        // A bucket without any tags answers NoSuchTagSet.
        Err(e) if crate::aws::clients::error_code(&e) == Some("NoSuchTagSet") => Ok(None),
        Err(e) => Err(error("reading tags of bucket", bucket, describe(&e))),
    }
}
