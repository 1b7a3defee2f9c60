//! What the controller sizes on AWS: the fleet's Auto Scaling group when
//! `aws setup --asg` made one, else raw instances tagged with the fleet.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::aws::{AwsClients, AwsConfig};
use crate::fleet::{AsgFleet, Ec2Fleet, Fleet};
use crate::queue::{Queue, SqsQueue};

/// The file (in the controller's data dir) that remembers raw instances
/// launched but not listed by EC2 yet, across a restart.
pub const LAUNCH_RECORD: &str = "ec2-launches.json";

/// The request queue and the fleet a controller on AWS works with, and
/// the clients it made them with (the controller's lease needs S3). It
/// needs nothing else: no result queue, no bucket but its lease.
pub async fn controller_fleet(
    config: &AwsConfig,
    data_dir: &Path,
) -> anyhow::Result<(Arc<dyn Queue>, Arc<dyn Fleet>, AwsClients)> {
    let clients = AwsClients::new(config).await;
    tracing::info!(fleet = %config.fleet, region = ?clients.region, "using AWS");
    let requests = SqsQueue::open(clients.sqs.clone(), &config.requests_queue)
        .await
        .with_context(|| format!("opening the request queue of fleet {}", config.fleet))?;
    let fleet: Arc<dyn Fleet> = match AsgFleet::detect(&clients, config).await? {
        Some(group) => {
            tracing::info!(
                group = group.group_name(),
                "sizing the fleet's Auto Scaling group"
            );
            Arc::new(group)
        }
        None => {
            tracing::info!(fleet = %config.fleet, "no Auto Scaling group: sizing raw instances");
            Arc::new(
                Ec2Fleet::new(&clients, config)
                    .remembering_launches_in(&data_dir.join(LAUNCH_RECORD)),
            )
        }
    };
    Ok((Arc::new(requests), fleet, clients))
}
