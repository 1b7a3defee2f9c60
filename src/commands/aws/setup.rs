//! `aws setup`: creates the fleet's buckets and queues, and with `--asg`
//! its launch template and Auto Scaling group. Idempotent against real
//! AWS semantics: a second run changes only what differs (SQS rejects a
//! SetQueueAttributes with nothing to set, so that is never sent), and
//! everything it makes carries the fleet's tag, which teardown insists on.

use std::collections::HashMap;

use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint,
    CreateBucketConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
    LifecycleRuleFilter, Tagging,
};
use aws_sdk_sqs::types::QueueAttributeName;
use serde::Serialize;

use super::resources::{
    bucket_fleet_tag, error, queue_fleet_tag, queue_url, ResourceError, LIFECYCLE_RULE,
};
use crate::aws::clients::describe;
use crate::aws::config::FLEET_TAG;
use crate::aws::{AwsClients, AwsConfig};

/// Whether setup made a resource, found it as it should be, or changed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Created,
    Existed,
    Updated,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetupStep {
    pub kind: &'static str,
    pub name: String,
    pub outcome: Outcome,
}

/// How long a received request stays hidden before SQS hands it to another
/// worker; workers extend it while they work on a long job.
const DEFAULT_VISIBILITY_SECS: u32 = 60;
/// Dead letters are kept the SQS maximum, for an operator to inspect.
const DEAD_LETTER_RETENTION_SECS: u32 = 14 * 24 * 60 * 60;

/// Creates what is missing and brings queue attributes (redrive policy,
/// timeouts, retention), tags and bucket lifecycle rules up to date; safe to
/// run any number of times.
pub async fn setup(
    clients: &AwsClients,
    config: &AwsConfig,
) -> Result<Vec<SetupStep>, ResourceError> {
    let mut steps = Vec::new();
    for bucket in [&config.input_bucket, &config.output_bucket] {
        let outcome = ensure_bucket(clients, config, bucket).await?;
        steps.push(SetupStep {
            kind: "bucket",
            name: bucket.clone(),
            outcome,
        });
    }

    let fifo_attributes = |fifo: bool| {
        let mut attributes = HashMap::new();
        if fifo {
            attributes.insert(QueueAttributeName::FifoQueue, "true".to_owned());
        }
        attributes
    };
    let mut dlq_attributes = fifo_attributes(config.fifo);
    dlq_attributes.insert(
        QueueAttributeName::MessageRetentionPeriod,
        DEAD_LETTER_RETENTION_SECS.to_string(),
    );
    let (dlq_url, outcome) =
        ensure_queue(clients, config, &config.dead_letter_queue, dlq_attributes).await?;
    steps.push(SetupStep {
        kind: "queue",
        name: config.dead_letter_queue.clone(),
        outcome,
    });
    let dlq_arn = queue_arn(clients, &config.dead_letter_queue, &dlq_url).await?;

    let mut request_attributes = fifo_attributes(config.fifo);
    request_attributes.insert(
        QueueAttributeName::RedrivePolicy,
        serde_json::json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": config.max_receives,
        })
        .to_string(),
    );
    request_attributes.insert(
        QueueAttributeName::VisibilityTimeout,
        DEFAULT_VISIBILITY_SECS.to_string(),
    );
    // Requests older than the retention are of no use to anyone; SQS keeps
    // messages 14 days at most.
    let request_retention = (config.retention_days * 24 * 60 * 60).min(DEAD_LETTER_RETENTION_SECS);
    request_attributes.insert(
        QueueAttributeName::MessageRetentionPeriod,
        request_retention.to_string(),
    );
    let (_, outcome) =
        ensure_queue(clients, config, &config.requests_queue, request_attributes).await?;
    steps.push(SetupStep {
        kind: "queue",
        name: config.requests_queue.clone(),
        outcome,
    });

    let results_attributes = fifo_attributes(config.results_queue.ends_with(".fifo"));
    let (_, outcome) =
        ensure_queue(clients, config, &config.results_queue, results_attributes).await?;
    steps.push(SetupStep {
        kind: "queue",
        name: config.results_queue.clone(),
        outcome,
    });
    Ok(steps)
}

async fn ensure_bucket(
    clients: &AwsClients,
    config: &AwsConfig,
    bucket: &str,
) -> Result<Outcome, ResourceError> {
    let mut outcome = match clients.s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => Outcome::Existed,
        Err(e) if crate::aws::clients::is_not_found(&e) => create_bucket(clients, bucket).await?,
        Err(e) => return Err(error("reading bucket", bucket, describe(&e))),
    };
    match bucket_fleet_tag(clients, bucket).await? {
        Some(tag) if tag == config.fleet => {}
        Some(other) => {
            return Err(error(
                "tagging bucket",
                bucket,
                format!(
                    "it belongs to fleet {other:?} ({FLEET_TAG}), not {:?}",
                    config.fleet
                ),
            ))
        }
        None => {
            tag_bucket(clients, config, bucket).await?;
            if outcome == Outcome::Existed {
                outcome = Outcome::Updated;
            }
        }
    }
    if ensure_lifecycle(clients, config, bucket).await? && outcome == Outcome::Existed {
        outcome = Outcome::Updated;
    }
    Ok(outcome)
}

async fn create_bucket(clients: &AwsClients, bucket: &str) -> Result<Outcome, ResourceError> {
    let mut request = clients.s3.create_bucket().bucket(bucket);
    // us-east-1 is the one region that rejects an explicit constraint.
    if let Some(region) = clients.region.as_deref().filter(|r| *r != "us-east-1") {
        request = request.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        );
    }
    match request.send().await {
        Ok(_) => {
            tracing::info!(bucket, "created bucket");
            Ok(Outcome::Created)
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_bucket_already_owned_by_you()) =>
        {
            Ok(Outcome::Existed)
        }
        Err(e) => Err(error("creating bucket", bucket, describe(&e))),
    }
}

/// Adds the fleet's tag to the bucket's tags (PutBucketTagging replaces
/// them all, so the others are read first and kept).
async fn tag_bucket(
    clients: &AwsClients,
    config: &AwsConfig,
    bucket: &str,
) -> Result<(), ResourceError> {
    let mut tags = match clients.s3.get_bucket_tagging().bucket(bucket).send().await {
        Ok(output) => output.tag_set,
        Err(_) => Vec::new(),
    };
    tags.retain(|t| t.key() != FLEET_TAG);
    tags.push(
        aws_sdk_s3::types::Tag::builder()
            .key(FLEET_TAG)
            .value(&config.fleet)
            .build()
            .map_err(|e| error("tagging bucket", bucket, e.to_string()))?,
    );
    let tagging = Tagging::builder()
        .set_tag_set(Some(tags))
        .build()
        .map_err(|e| error("tagging bucket", bucket, e.to_string()))?;
    clients
        .s3
        .put_bucket_tagging()
        .bucket(bucket)
        .tagging(tagging)
        .send()
        .await
        .map_err(|e| error("tagging bucket", bucket, describe(&e)))?;
    Ok(())
}

/// Objects expire `retention_days` after they were written (S3 counts
/// whole days); unfinished multipart uploads after one. Other rules on the
/// bucket are kept. True when something changed.
async fn ensure_lifecycle(
    clients: &AwsClients,
    config: &AwsConfig,
    bucket: &str,
) -> Result<bool, ResourceError> {
    let current = match clients
        .s3
        .get_bucket_lifecycle_configuration()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(output) => output.rules.unwrap_or_default(),
        // NoSuchLifecycleConfiguration: none yet.
        Err(_) => Vec::new(),
    };
    let days = config.retention_days as i32;
    let ours = current.iter().find(|r| r.id() == Some(LIFECYCLE_RULE));
    if ours.is_some_and(|r| r.expiration().and_then(|e| e.days()) == Some(days)) {
        return Ok(false);
    }
    let build =
        |e: aws_sdk_s3::error::BuildError| error("setting lifecycle of", bucket, e.to_string());
    let rule = LifecycleRule::builder()
        .id(LIFECYCLE_RULE)
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("").build())
        .expiration(LifecycleExpiration::builder().days(days).build())
        .abort_incomplete_multipart_upload(
            AbortIncompleteMultipartUpload::builder()
                .days_after_initiation(1)
                .build(),
        )
        .build()
        .map_err(build)?;
    let mut rules: Vec<LifecycleRule> = current
        .into_iter()
        .filter(|r| r.id() != Some(LIFECYCLE_RULE))
        .collect();
    rules.push(rule);
    clients
        .s3
        .put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .set_rules(Some(rules))
                .build()
                .map_err(build)?,
        )
        .send()
        .await
        .map_err(|e| error("setting lifecycle of", bucket, describe(&e)))?;
    Ok(true)
}

async fn ensure_queue(
    clients: &AwsClients,
    config: &AwsConfig,
    name: &str,
    mut attributes: HashMap<QueueAttributeName, String>,
) -> Result<(String, Outcome), ResourceError> {
    if let Some(url) = queue_url(clients, name).await? {
        // FifoQueue cannot be changed after creation; the name says it anyway.
        attributes.remove(&QueueAttributeName::FifoQueue);
        let mut outcome = Outcome::Existed;
        let changed = differing_attributes(clients, name, &url, attributes).await?;
        // Real SQS rejects a SetQueueAttributes without attributes.
        if !changed.is_empty() {
            tracing::info!(queue = name, attributes = ?changed.keys().collect::<Vec<_>>(), "updating queue");
            clients
                .sqs
                .set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(changed))
                .send()
                .await
                .map_err(|e| error("updating queue", name, describe(&e)))?;
            outcome = Outcome::Updated;
        }
        match queue_fleet_tag(clients, name, &url).await? {
            Some(tag) if tag == config.fleet => {}
            Some(other) => {
                return Err(error(
                    "tagging queue",
                    name,
                    format!(
                        "it belongs to fleet {other:?} ({FLEET_TAG}), not {:?}",
                        config.fleet
                    ),
                ))
            }
            None => {
                clients
                    .sqs
                    .tag_queue()
                    .queue_url(&url)
                    .tags(FLEET_TAG, &config.fleet)
                    .send()
                    .await
                    .map_err(|e| error("tagging queue", name, describe(&e)))?;
                outcome = Outcome::Updated;
            }
        }
        return Ok((url, outcome));
    }
    let url = clients
        .sqs
        .create_queue()
        .queue_name(name)
        .set_attributes((!attributes.is_empty()).then_some(attributes))
        .tags(FLEET_TAG, &config.fleet)
        .send()
        .await
        .map_err(|e| error("creating queue", name, describe(&e)))?
        .queue_url
        .ok_or_else(|| error("creating queue", name, "no URL returned".into()))?;
    tracing::info!(queue = name, "created queue");
    Ok((url, Outcome::Created))
}

/// The attributes in `wanted` whose current value differs. JSON values
/// (the redrive policy) are compared as JSON, since SQS may write them back
/// with other spacing or number types.
async fn differing_attributes(
    clients: &AwsClients,
    name: &str,
    url: &str,
    wanted: HashMap<QueueAttributeName, String>,
) -> Result<HashMap<QueueAttributeName, String>, ResourceError> {
    if wanted.is_empty() {
        return Ok(wanted);
    }
    let current = clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .set_attribute_names(Some(wanted.keys().cloned().collect()))
        .send()
        .await
        .map_err(|e| error("reading queue", name, describe(&e)))?
        .attributes
        .unwrap_or_default();
    Ok(wanted
        .into_iter()
        .filter(|(key, value)| !same_attribute(current.get(key).map(String::as_str), value))
        .collect())
}

fn same_attribute(current: Option<&str>, wanted: &str) -> bool {
    let Some(current) = current else {
        return false;
    };
    if current == wanted {
        return true;
    }
    // {"maxReceiveCount":"5"} and {"maxReceiveCount":5} say the same.
    let normal = |text: &str| -> Option<serde_json::Value> {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        let object = value.as_object()?;
        Some(serde_json::Value::Object(
            object
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::Number(n) => serde_json::Value::String(n.to_string()),
                        other => other.clone(),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ))
    };
    normal(current).is_some() && normal(current) == normal(wanted)
}

async fn queue_arn(clients: &AwsClients, name: &str, url: &str) -> Result<String, ResourceError> {
    clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| error("reading queue", name, describe(&e)))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| error("reading queue", name, "no QueueArn attribute".into()))
}

#[cfg(test)]
mod tests {
    use super::same_attribute;

    #[test]
    fn attributes_compare_as_sqs_writes_them_back() {
        assert!(same_attribute(Some("60"), "60"));
        assert!(!same_attribute(Some("30"), "60"));
        assert!(!same_attribute(None, "60"));
        assert!(same_attribute(
            Some(r#"{"deadLetterTargetArn":"arn:x","maxReceiveCount":5}"#),
            r#"{"maxReceiveCount":"5","deadLetterTargetArn":"arn:x"}"#
        ));
        assert!(!same_attribute(
            Some(r#"{"deadLetterTargetArn":"arn:x","maxReceiveCount":5}"#),
            r#"{"deadLetterTargetArn":"arn:x","maxReceiveCount":"4"}"#
        ));
    }
}
