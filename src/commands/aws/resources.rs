//! What setup, status and teardown share: the fleet's queues by name, and
//! the error they report.

use crate::aws::AwsClients;
use crate::aws::AwsConfig;
use crate::fleet::FleetError;

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

pub(super) async fn queue_url(clients: &AwsClients, name: &str) -> Option<String> {
    clients
        .sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .ok()
        .and_then(|o| o.queue_url)
}

pub(super) fn queue_names(config: &AwsConfig) -> [&String; 3] {
    [
        &config.requests_queue,
        &config.results_queue,
        &config.dead_letter_queue,
    ]
}
