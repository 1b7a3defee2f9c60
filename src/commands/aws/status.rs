//! `aws status`: the fleet's queues (with depths), buckets and instances.

use serde::Serialize;

use super::resources::{error, queue_names, ResourceError};
use crate::aws::{AwsClients, AwsConfig};
use crate::fleet::{Ec2Fleet, Fleet, Instance};
use crate::queue::{Queue, QueueDepth, SqsQueue};

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
