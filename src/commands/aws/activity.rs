//! The worker command's side of busy and idle on AWS.

use std::sync::Arc;

use crate::aws::AwsClients;
use crate::commands::args::BackendArgs;
use crate::fleet::{ActivityReporter, AwsActivity};

/// The reporter for a worker on an EC2 instance (raw or in the Auto
/// Scaling group), `None` elsewhere. A worker that cannot report still
/// works: the fleet then sees its instance as never ready, and replaces it
/// after the ready timeout, which the controller logs.
pub async fn start(
    backend: &BackendArgs,
    instance_id: Option<String>,
) -> Option<Arc<dyn ActivityReporter>> {
    let config = match backend.aws.load() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "cannot report worker activity");
            return None;
        }
    };
    let clients = AwsClients::new(&config).await;
    match AwsActivity::start(&clients, instance_id).await {
        Ok(activity) => activity.map(AwsActivity::into_reporter),
        Err(e) => {
            tracing::error!(error = %e, "cannot report worker activity");
            None
        }
    }
}
