//! Helpers for the AWS tests: they run against the moto server that
//! scripts/test starts, through the real SDK clients.
#![allow(dead_code)]

use imagefleet::aws::{AwsClients, AwsConfig};

/// The endpoint the tests talk to. A missing endpoint is a failure, not a
/// skip: without it the SDK would go to real AWS (or nowhere) silently.
pub fn require_endpoint() -> String {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "AWS_ENDPOINT_URL is not set: the AWS tests need a moto server. \
             Run them through scripts/test, which starts moto on 127.0.0.1 and \
             exports AWS_ENDPOINT_URL and dummy credentials."
        ),
    }
}

/// A fleet name no other test uses, so tests share one moto in parallel.
pub fn unique_fleet(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..8])
}

/// The configuration for `fleet` as a user with only the standard AWS
/// variables would get it (no IMAGEFLEET_* overrides).
pub fn config(fleet: &str) -> AwsConfig {
    require_endpoint();
    AwsConfig::load(Some(fleet), None, |_| None).unwrap()
}

pub async fn clients(config: &AwsConfig) -> AwsClients {
    require_endpoint();
    AwsClients::new(config).await
}

/// Some AMI moto knows (it ships a catalogue of public images).
pub async fn any_image(clients: &AwsClients) -> String {
    let images = clients
        .ec2
        .describe_images()
        .owners("amazon")
        .send()
        .await
        .expect("DescribeImages on moto");
    images
        .images()
        .iter()
        .find_map(|i| i.image_id().map(str::to_owned))
        .expect("moto lists at least one AMI")
}
