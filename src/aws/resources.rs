//! The fleet's AWS resources as a whole: create them idempotently (setup),
//! report on them (status), remove them (teardown).

use std::collections::HashMap;

use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration, ObjectIdentifier};
use aws_sdk_sqs::types::QueueAttributeName;
use serde::Serialize;

use super::clients::{describe, AwsClients};
use super::config::AwsConfig;
use crate::fleet::{Ec2Fleet, Fleet, FleetError, Instance};
use crate::queue::{Queue, QueueDepth, SqsQueue};

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

fn error(action: &'static str, resource: &str, message: String) -> ResourceError {
    ResourceError {
        action,
        resource: resource.to_owned(),
        message,
    }
}

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

async fn queue_url(clients: &AwsClients, name: &str) -> Option<String> {
    clients
        .sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .ok()
        .and_then(|o| o.queue_url)
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

#[derive(Debug, Clone, Serialize)]
pub struct QueueStatus {
    pub name: String,
    /// `None` when the queue does not exist.
    pub depth: Option<QueueDepth>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BucketStatus {
    pub name: String,
    pub exists: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub fleet: String,
    pub queues: Vec<QueueStatus>,
    pub buckets: Vec<BucketStatus>,
    pub instances: Vec<Instance>,
}

impl Status {
    /// Every queue and bucket is there.
    pub fn complete(&self) -> bool {
        self.queues.iter().all(|q| q.depth.is_some()) && self.buckets.iter().all(|b| b.exists)
    }
}

pub async fn status(clients: &AwsClients, config: &AwsConfig) -> Result<Status, ResourceError> {
    let mut queues = Vec::new();
    for name in queue_names(config) {
        let depth = match SqsQueue::open(clients.sqs.clone(), name).await {
            Ok(queue) => Some(
                queue
                    .depth()
                    .await
                    .map_err(|e| error("reading queue", name, e.to_string()))?,
            ),
            Err(_) => None,
        };
        queues.push(QueueStatus {
            name: name.clone(),
            depth,
        });
    }
    let mut buckets = Vec::new();
    for name in [&config.input_bucket, &config.output_bucket] {
        let exists = clients.s3.head_bucket().bucket(name).send().await.is_ok();
        buckets.push(BucketStatus {
            name: name.clone(),
            exists,
        });
    }
    let instances = Ec2Fleet::new(clients, config).list().await?;
    Ok(Status {
        fleet: config.fleet.clone(),
        queues,
        buckets,
        instances,
    })
}

fn queue_names(config: &AwsConfig) -> [&String; 3] {
    [
        &config.requests_queue,
        &config.results_queue,
        &config.dead_letter_queue,
    ]
}

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
