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

/// `imagefleet controller --backend aws --fleet NAME --data-dir DIR`,
/// ticking fast enough for a test and scaling in without delay, plus
/// `extra` flags. The data dir holds the record of launched instances; a
/// restarted controller gets the same.
pub fn controller_args(fleet: &str, data_dir: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "controller",
        "--backend",
        "aws",
        "--fleet",
        fleet,
        "--interval-ms",
        "300",
        // Tests wait for the fleet to shrink: no 30 s scale-in delay.
        "--scale-in-delay",
        "0",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A fleet whose queues and buckets `aws setup` created on moto, with an
/// AMI to launch from (as IMAGEFLEET_WORKER_IMAGE_ID would give it).
pub struct MotoFleet {
    pub name: String,
    pub config: AwsConfig,
    pub clients: AwsClients,
    pub image: String,
}

impl MotoFleet {
    pub async fn setup(prefix: &str) -> MotoFleet {
        let name = unique_fleet(prefix);
        let config = config(&name);
        let clients = clients(&config).await;
        imagefleet::commands::aws::setup(&clients, &config)
            .await
            .unwrap();
        let image = any_image(&clients).await;
        MotoFleet {
            name,
            config,
            clients,
            image,
        }
    }

    pub async fn teardown(&self) {
        let report = imagefleet::commands::aws::teardown(&self.clients, &self.config)
            .await
            .unwrap();
        assert!(report.refused.is_empty(), "{report:?}");
    }
}

/// Ids of the instances tagged as `fleet`'s, in `state` (any state if None).
pub async fn tagged_instances(
    clients: &AwsClients,
    fleet: &str,
    state: Option<&str>,
) -> std::collections::BTreeSet<String> {
    use aws_sdk_ec2::types::Filter;
    use imagefleet::fleet::FLEET_TAG;
    let mut request = clients.ec2.describe_instances().filters(
        Filter::builder()
            .name(format!("tag:{FLEET_TAG}"))
            .values(fleet)
            .build(),
    );
    if let Some(state) = state {
        request = request.filters(
            Filter::builder()
                .name("instance-state-name")
                .values(state)
                .build(),
        );
    }
    let output = request.send().await.expect("DescribeInstances on moto");
    output
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect()
}

/// Ids of the fleet's instances that are not shutting down, in id order.
pub async fn live_instances(fleet: &imagefleet::fleet::Ec2Fleet) -> Vec<String> {
    use imagefleet::fleet::{Fleet, InstanceState};
    fleet
        .list()
        .await
        .expect("listing the fleet on moto")
        .into_iter()
        .filter(|i| i.state != InstanceState::Draining)
        .map(|i| i.id)
        .collect()
}

/// The default VPC's subnets (one per availability zone) and its default
/// security group, as a first deployment would use them.
pub struct Network {
    pub subnets: Vec<String>,
    pub security_group: String,
}

pub async fn default_network(clients: &AwsClients) -> Network {
    use aws_sdk_ec2::types::Filter;
    let subnets = clients
        .ec2
        .describe_subnets()
        .filters(
            Filter::builder()
                .name("default-for-az")
                .values("true")
                .build(),
        )
        .send()
        .await
        .expect("DescribeSubnets on moto");
    let mut subnets: Vec<String> = subnets
        .subnets()
        .iter()
        .filter_map(|s| s.subnet_id().map(str::to_owned))
        .collect();
    subnets.sort();
    let groups = clients
        .ec2
        .describe_security_groups()
        .filters(
            Filter::builder()
                .name("group-name")
                .values("default")
                .build(),
        )
        .send()
        .await
        .expect("DescribeSecurityGroups on moto");
    let security_group = groups
        .security_groups()
        .first()
        .and_then(|g| g.group_id())
        .expect("the default VPC has a default security group")
        .to_owned();
    Network {
        subnets,
        security_group,
    }
}

/// Creates the worker role and an instance profile of the same name in
/// moto's IAM (the tests build no IAM client; the query API is three
/// form posts). RunInstances on moto refuses a profile that does not exist.
pub fn create_instance_profile(name: &str) {
    let endpoint = require_endpoint();
    let client = reqwest::blocking::Client::new();
    let trust = include_str!("../../worker/ami/iam/worker-trust.json");
    for form in [
        vec![
            ("Action", "CreateRole"),
            ("RoleName", name),
            ("AssumeRolePolicyDocument", trust),
        ],
        vec![
            ("Action", "CreateInstanceProfile"),
            ("InstanceProfileName", name),
        ],
        vec![
            ("Action", "AddRoleToInstanceProfile"),
            ("InstanceProfileName", name),
            ("RoleName", name),
        ],
    ] {
        let mut form = form;
        form.push(("Version", "2010-05-08"));
        let response = client
            .post(&endpoint)
            // moto routes by the credential scope; it checks no signature.
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
            )
            .form(&form)
            .send()
            .expect("IAM request to moto");
        let status = response.status();
        let body = response.text().unwrap_or_default();
        assert!(status.is_success(), "{form:?}: {status} {body}");
    }
}

/// An `imagefleet worker` process standing in for EC2 instance `id`,
/// configured from the instance's own user data (as cloud-init would do),
/// the repository's model instead of the AMI's, and `extra` variables.
pub fn instance_worker(
    runtime: &tokio::runtime::Runtime,
    fleet: &imagefleet::fleet::Ec2Fleet,
    id: Option<&str>,
    user_data_of: &str,
    extra: &[(&str, &str)],
) -> crate::support::Process {
    let text = runtime.block_on(fleet.user_data(user_data_of)).unwrap();
    let env = imagefleet::aws::user_data::parse_env(&text);
    assert!(!env.is_empty(), "instance {user_data_of} has no worker env");
    let model = crate::support::repo_root().join("models/model.toml");
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.push(("IMAGEFLEET_MODEL", model.to_str().unwrap()));
    all.extend_from_slice(extra);
    let mut args = vec!["worker"];
    if let Some(id) = id {
        args.extend(["--instance-id", id]);
    }
    crate::support::Process::start(&args, &all)
}
