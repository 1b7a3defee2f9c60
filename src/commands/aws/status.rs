//! `aws status`: the fleet's queues (with depths), buckets, group and
//! instances. A resource that cannot be read (access denied, say) is an
//! error, shown as such, never "missing".

use serde::Serialize;

use super::resources::queue_names;
use crate::aws::clients::{describe, is_not_found};
use crate::aws::{AwsClients, AwsConfig};
use crate::fleet::{AsgFleet, Ec2Fleet, Fleet, Instance};
use crate::queue::{Queue, QueueDepth, SqsQueue};

#[derive(Debug, Clone, Serialize)]
pub struct QueueStatus {
    pub name: String,
    /// `None` when the queue does not exist or could not be read.
    pub depth: Option<QueueDepth>,
    /// Why it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BucketStatus {
    pub name: String,
    pub exists: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    pub name: String,
    pub desired: u32,
    pub min: u32,
    pub max: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub fleet: String,
    pub queues: Vec<QueueStatus>,
    /// The web tier replicas' reply queues.
    pub reply_queues: Vec<String>,
    pub buckets: Vec<BucketStatus>,
    /// The Auto Scaling group, when the fleet is one.
    pub group: Option<GroupStatus>,
    pub instances: Vec<Instance>,
    /// What could not be read besides queues and buckets.
    pub errors: Vec<String>,
}

impl Status {
    /// Every queue and bucket is there, and everything could be read.
    pub fn complete(&self) -> bool {
        self.queues.iter().all(|q| q.depth.is_some())
            && self.buckets.iter().all(|b| b.exists && b.error.is_none())
            && self.errors.is_empty()
    }

    /// Something could not be read (rather than was missing).
    pub fn has_errors(&self) -> bool {
        self.queues.iter().any(|q| q.error.is_some())
            || self.buckets.iter().any(|b| b.error.is_some())
            || !self.errors.is_empty()
    }
}

pub async fn status(clients: &AwsClients, config: &AwsConfig) -> Status {
    let mut queues = Vec::new();
    for name in queue_names(config) {
        let (depth, error) = match SqsQueue::open_if_exists(clients.sqs.clone(), name).await {
            Ok(Some(queue)) => match queue.depth().await {
                Ok(depth) => (Some(depth), None),
                Err(e) => (None, Some(e.to_string())),
            },
            Ok(None) => (None, None),
            Err(e) => (None, Some(e.to_string())),
        };
        queues.push(QueueStatus {
            name: name.clone(),
            depth,
            error,
        });
    }
    let mut errors = Vec::new();
    let reply_queues = SqsQueue::list_names(&clients.sqs, &config.reply_queue_prefix())
        .await
        .unwrap_or_else(|e| {
            errors.push(e.to_string());
            Vec::new()
        });
    let mut buckets = Vec::new();
    for name in [&config.input_bucket, &config.output_bucket] {
        let (exists, error) = match clients.s3.head_bucket().bucket(name).send().await {
            Ok(_) => (true, None),
            Err(e) if is_not_found(&e) => (false, None),
            Err(e) => (false, Some(describe(&e))),
        };
        buckets.push(BucketStatus {
            name: name.clone(),
            exists,
            error,
        });
    }
    let group_fleet = AsgFleet::new(clients, config).read_only();
    let group = match group_fleet.capacity().await {
        Ok(capacity) => capacity.map(|(desired, min, max)| GroupStatus {
            name: config.autoscaling_group.clone(),
            desired,
            min,
            max,
        }),
        Err(e) => {
            errors.push(e.to_string());
            None
        }
    };
    // In a group, the group's view (with scale-in protection); either way
    // listing only looks, it replaces nothing.
    let listed = if group.is_some() {
        group_fleet.list().await
    } else {
        Ec2Fleet::new(clients, config).read_only().list().await
    };
    let instances = listed.unwrap_or_else(|e| {
        errors.push(e.to_string());
        Vec::new()
    });
    Status {
        fleet: config.fleet.clone(),
        queues,
        reply_queues,
        buckets,
        group,
        instances,
        errors,
    }
}
