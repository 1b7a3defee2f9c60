//! The user data a worker instance boots with: cloud-init that writes the
//! worker's environment (fleet, queues, buckets, region) and starts the
//! systemd unit; on a stock AMI it first fetches the binary and the model
//! from S3. `parse_env` reads the environment back, which is how the tests
//! (and an operator) see what an instance was told.

use super::config::AwsConfig;

const TEMPLATE: &str = include_str!("../../worker/ami/cloud-init.yaml");
const UNIT: &str = include_str!("../../worker/ami/imagefleet-worker.service");
const BEGIN: &str = "# imagefleet-env-begin";
const END: &str = "# imagefleet-env-end";

/// Where the baked AMI (bake.sh) and the stock-AMI fetch put the model.
pub const MODEL_MANIFEST: &str = "/opt/imagefleet/models/model.toml";

/// The worker's environment: what `imagefleet worker --backend aws` reads.
pub fn worker_env(config: &AwsConfig, region: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![
        ("IMAGEFLEET_BACKEND", "aws".to_owned()),
        ("IMAGEFLEET_FLEET", config.fleet.clone()),
        ("IMAGEFLEET_REQUESTS_QUEUE", config.requests_queue.clone()),
        ("IMAGEFLEET_RESULTS_QUEUE", config.results_queue.clone()),
        (
            "IMAGEFLEET_DEAD_LETTER_QUEUE",
            config.dead_letter_queue.clone(),
        ),
        ("IMAGEFLEET_QUEUE_FIFO", config.fifo.to_string()),
        ("IMAGEFLEET_MAX_RECEIVES", config.max_receives.to_string()),
        ("IMAGEFLEET_INPUT_BUCKET", config.input_bucket.clone()),
        ("IMAGEFLEET_OUTPUT_BUCKET", config.output_bucket.clone()),
        ("IMAGEFLEET_MODEL", MODEL_MANIFEST.to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ];
    if let Some(region) = region.or(config.region.as_deref()) {
        env.push(("AWS_REGION", region.to_owned()));
        env.push(("AWS_DEFAULT_REGION", region.to_owned()));
    }
    env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The cloud-init document for `config`'s workers.
pub fn render(config: &AwsConfig, region: Option<&str>) -> String {
    let env: Vec<String> = worker_env(config, region)
        .into_iter()
        .map(|(k, v)| format!("      {k}={v}"))
        .collect();
    let (extra_files, fetch) = match &config.workers.artifacts {
        None => (String::new(), String::new()),
        Some(artifacts) => stock_ami_bootstrap(artifacts.trim_end_matches('/'), region),
    };
    TEMPLATE
        .replace("{{ENV}}", &env.join("\n"))
        .replace("{{EXTRA_FILES}}\n", &extra_files)
        .replace("{{FETCH}}\n", &fetch)
}

/// A stock Amazon Linux 2023 AMI has the AWS CLI but not our binary, model
/// or unit: write the unit and fetch the rest before starting it.
fn stock_ami_bootstrap(artifacts: &str, region: Option<&str>) -> (String, String) {
    let mut files = String::from(
        "  - path: /etc/systemd/system/imagefleet-worker.service\n    permissions: \"0644\"\n    content: |\n",
    );
    for line in UNIT.lines() {
        files.push_str("      ");
        files.push_str(line);
        files.push('\n');
    }
    let region_args = region
        .map(|r| format!(", --region, {r}"))
        .unwrap_or_default();
    let fetch = format!(
        "  - [aws, s3, cp, \"{artifacts}/imagefleet\", /usr/local/bin/imagefleet{region_args}]\n\
         \x20 - [chmod, \"0755\", /usr/local/bin/imagefleet]\n\
         \x20 - [aws, s3, sync, \"{artifacts}/models/\", /opt/imagefleet/models/{region_args}]\n"
    );
    (files, fetch)
}

/// The `KEY=VALUE` pairs of the worker environment in rendered user data.
pub fn parse_env(user_data: &str) -> Vec<(String, String)> {
    user_data
        .lines()
        .map(str::trim)
        .skip_while(|line| *line != BEGIN)
        .skip(1)
        .take_while(|line| *line != END)
        .filter_map(|line| {
            let (k, v) = line.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baked_user_data_carries_the_worker_env() {
        let config = AwsConfig::derived("demo", false);
        let text = render(&config, Some("eu-west-1"));
        assert!(text.starts_with("#cloud-config\n"));
        assert!(!text.contains("{{"), "{text}");
        assert!(!text.contains("aws, s3"), "a baked AMI fetches nothing");
        let env = parse_env(&text);
        assert_eq!(env, worker_env(&config, Some("eu-west-1")));
        assert!(env.contains(&("AWS_REGION".into(), "eu-west-1".into())));
        assert!(env.contains(&(
            "IMAGEFLEET_REQUESTS_QUEUE".into(),
            "imagefleet-demo-requests".into()
        )));
    }

    #[test]
    fn stock_ami_user_data_fetches_binary_model_and_unit() {
        let mut config = AwsConfig::derived("demo", false);
        config.workers.artifacts = Some("s3://my-artifacts/imagefleet/".into());
        let text = render(&config, Some("us-east-1"));
        assert!(text.contains(
            "[aws, s3, cp, \"s3://my-artifacts/imagefleet/imagefleet\", /usr/local/bin/imagefleet, --region, us-east-1]"
        ));
        assert!(text.contains("/etc/systemd/system/imagefleet-worker.service"));
        assert!(text.contains("      ExecStart=/usr/local/bin/imagefleet worker --backend aws"));
        // The unit's own lines are not mistaken for the environment.
        assert_eq!(parse_env(&text), worker_env(&config, Some("us-east-1")));
    }
}
