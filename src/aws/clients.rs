//! The SDK clients, built once from aws-config's default chain. Endpoint
//! overrides (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`, ...) are honoured
//! by aws-config itself, which is how the tests point everything at moto.

use aws_config::{BehaviorVersion, Region};

use super::config::AwsConfig;

#[derive(Clone, Debug)]
pub struct AwsClients {
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub ec2: aws_sdk_ec2::Client,
    /// The region the clients talk to (from the config or the chain).
    pub region: Option<String>,
}

impl AwsClients {
    pub async fn new(config: &AwsConfig) -> AwsClients {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let shared = loader.load().await;
        let region = shared.region().map(|r| r.to_string());
        // S3-compatible servers on a plain host:port cannot serve
        // bucket-named subdomains, so with an endpoint override use paths.
        let path_style = endpoint_overridden(|name| std::env::var(name).ok());
        let s3_config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(path_style)
            .build();
        tracing::debug!(?region, path_style, "AWS clients ready");
        AwsClients {
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            sqs: aws_sdk_sqs::Client::new(&shared),
            ec2: aws_sdk_ec2::Client::new(&shared),
            region,
        }
    }
}

fn endpoint_overridden(env: impl Fn(&str) -> Option<String>) -> bool {
    ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"]
        .iter()
        .any(|name| env(name).is_some_and(|v| !v.is_empty()))
}

/// An SDK error with its whole chain (code, message, cause), for our errors.
pub fn describe<E: std::error::Error>(error: &E) -> String {
    aws_sdk_s3::error::DisplayErrorContext(error).to_string()
}
