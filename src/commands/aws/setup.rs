//! `aws setup`: creates the fleet's buckets and queues, idempotently.

use std::collections::HashMap;

use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;
use serde::Serialize;

use super::resources::{error, queue_url, ResourceError};
use crate::aws::clients::describe;
use crate::aws::{AwsClients, AwsConfig};

/// Whether setup made a resource or found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Created,
    Existed,
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
/// Requests older than this are of no use to anyone (clients gave up).
const REQUEST_RETENTION_SECS: u32 = 24 * 60 * 60;
/// Dead letters are kept the SQS maximum, for an operator to inspect.
const DEAD_LETTER_RETENTION_SECS: u32 = 14 * 24 * 60 * 60;

/// Creates what is missing and brings queue attributes (redrive policy,
/// timeouts) up to date; safe to run any number of times.
pub async fn setup(
    clients: &AwsClients,
    config: &AwsConfig,
) -> Result<Vec<SetupStep>, ResourceError> {
    let mut steps = Vec::new();
    for bucket in [&config.input_bucket, &config.output_bucket] {
        let outcome = ensure_bucket(clients, bucket).await?;
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
        ensure_queue(clients, &config.dead_letter_queue, dlq_attributes).await?;
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
            "maxReceiveCount": config.max_receives.to_string(),
        })
        .to_string(),
    );
    request_attributes.insert(
        QueueAttributeName::VisibilityTimeout,
        DEFAULT_VISIBILITY_SECS.to_string(),
    );
    request_attributes.insert(
        QueueAttributeName::MessageRetentionPeriod,
        REQUEST_RETENTION_SECS.to_string(),
    );
    let (_, outcome) = ensure_queue(clients, &config.requests_queue, request_attributes).await?;
    steps.push(SetupStep {
        kind: "queue",
        name: config.requests_queue.clone(),
        outcome,
    });

    let results_attributes = fifo_attributes(config.results_queue.ends_with(".fifo"));
    let (_, outcome) = ensure_queue(clients, &config.results_queue, results_attributes).await?;
    steps.push(SetupStep {
        kind: "queue",
        name: config.results_queue.clone(),
        outcome,
    });
    Ok(steps)
}

async fn ensure_bucket(clients: &AwsClients, bucket: &str) -> Result<Outcome, ResourceError> {
    if clients.s3.head_bucket().bucket(bucket).send().await.is_ok() {
        return Ok(Outcome::Existed);
    }
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

async fn ensure_queue(
    clients: &AwsClients,
    name: &str,
    mut attributes: HashMap<QueueAttributeName, String>,
) -> Result<(String, Outcome), ResourceError> {
    if let Some(url) = queue_url(clients, name).await {
        // FifoQueue cannot be changed after creation; the name says it anyway.
        attributes.remove(&QueueAttributeName::FifoQueue);
        clients
            .sqs
            .set_queue_attributes()
            .queue_url(&url)
            .set_attributes(Some(attributes))
            .send()
            .await
            .map_err(|e| error("updating queue", name, describe(&e)))?;
        return Ok((url, Outcome::Existed));
    }
    let url = clients
        .sqs
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes))
        .send()
        .await
        .map_err(|e| error("creating queue", name, describe(&e)))?
        .queue_url
        .ok_or_else(|| error("creating queue", name, "no URL returned".into()))?;
    tracing::info!(queue = name, "created queue");
    Ok((url, Outcome::Created))
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
