//! The SDK clients, built once from aws-config's default chain. Endpoint
//! overrides (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`, ...) are honoured
//! by aws-config itself, which is how the tests point everything at moto.

use aws_config::{BehaviorVersion, Region};

use super::calls::CallLog;
use super::config::AwsConfig;

#[derive(Clone, Debug)]
pub struct AwsClients {
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
    /// The region the clients talk to (from the config or the chain).
    pub region: Option<String>,
}

impl AwsClients {
    /// The clients; every call is recorded to the file
    /// `IMAGEFLEET_AWS_CALL_LOG` names, when it is set.
    pub async fn new(config: &AwsConfig) -> AwsClients {
        AwsClients::build(config, CallLog::from_env()).await
    }

    /// The clients, recording every call they make to `log`.
    pub async fn recorded(config: &AwsConfig, log: &CallLog) -> AwsClients {
        AwsClients::build(config, Some(log.clone())).await
    }

    async fn build(config: &AwsConfig, log: Option<CallLog>) -> AwsClients {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let shared = loader.load().await;
        let region = shared.region().map(|r| r.to_string());
        // S3-compatible servers on a plain host:port cannot serve
        // bucket-named subdomains, so with an endpoint override use paths.
        let path_style = endpoint_overridden(|name| std::env::var(name).ok());
        let mut s3 = aws_sdk_s3::config::Builder::from(&shared).force_path_style(path_style);
        let mut sqs = aws_sdk_sqs::config::Builder::from(&shared);
        let mut ec2 = aws_sdk_ec2::config::Builder::from(&shared);
        let mut autoscaling = aws_sdk_autoscaling::config::Builder::from(&shared);
        if let Some(log) = log {
            s3 = s3.interceptor(log.interceptor());
            sqs = sqs.interceptor(log.interceptor());
            ec2 = ec2.interceptor(log.interceptor());
            autoscaling = autoscaling.interceptor(log.interceptor());
        }
        tracing::debug!(?region, path_style, "AWS clients ready");
        AwsClients {
            s3: aws_sdk_s3::Client::from_conf(s3.build()),
            sqs: aws_sdk_sqs::Client::from_conf(sqs.build()),
            ec2: aws_sdk_ec2::Client::from_conf(ec2.build()),
            autoscaling: aws_sdk_autoscaling::Client::from_conf(autoscaling.build()),
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

/// An SDK error, whatever the operation.
pub type SdkError<E> =
    aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::http::Response>;

/// The error code of an SDK error, when the service sent one.
pub fn error_code<E: aws_sdk_s3::error::ProvideErrorMetadata>(error: &SdkError<E>) -> Option<&str> {
    error.as_service_error().and_then(|e| e.code())
}

/// Whether an SDK error says the resource does not exist, as opposed to
/// being unreachable or forbidden, which an operator must see as such.
pub fn is_not_found<E: aws_sdk_s3::error::ProvideErrorMetadata>(error: &SdkError<E>) -> bool {
    if let Some(code) = error_code(error) {
        return matches!(
            code,
            "NoSuchBucket"
                | "NoSuchKey"
                | "NotFound"
                | "AWS.SimpleQueueService.NonExistentQueue"
                | "QueueDoesNotExist"
        );
    }
    // HeadBucket and HeadObject have no body: a 404 is all there is.
    error
        .raw_response()
        .is_some_and(|r| r.status().as_u16() == 404)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::primitives::SdkBody;
    use aws_sdk_sqs::error::ErrorMetadata;
    use aws_sdk_sqs::operation::get_queue_url::GetQueueUrlError;
    use aws_smithy_runtime_api::http::{Response, StatusCode};

    fn sqs_error(code: &str, status: u16) -> SdkError<GetQueueUrlError> {
        let meta = ErrorMetadata::builder().code(code).build();
        SdkError::service_error(
            GetQueueUrlError::generic(meta),
            Response::new(StatusCode::try_from(status).unwrap(), SdkBody::empty()),
        )
    }

    #[test]
    fn access_denied_is_not_missing() {
        assert!(is_not_found(&sqs_error(
            "AWS.SimpleQueueService.NonExistentQueue",
            400
        )));
        assert!(is_not_found(&sqs_error("QueueDoesNotExist", 400)));
        assert!(!is_not_found(&sqs_error("AccessDenied", 403)));
        assert!(!is_not_found(&sqs_error("InvalidClientTokenId", 403)));
    }
}
