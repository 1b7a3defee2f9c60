//! The fleet as an Auto Scaling group, on moto: `aws setup --asg` makes
//! the launch template and the group (idempotently, writing its config
//! only on success); the controller finds the group and sets its desired
//! capacity from the policy (35 jobs -> 4, drained -> 0); a worker holding
//! a job protects its instance, so the group scales in around it; a
//! worker that never starts gets its instance marked unhealthy.

use std::time::Duration;

use crate::moto::{controller_args, create_instance_profile, MotoFleet};
use crate::support::{run_imagefleet, wait_for, Process};
use aws_sdk_autoscaling::types::AutoScalingGroup;
use aws_sdk_ec2::types::LaunchTemplateHttpTokensState;
use base64::Engine;
use imagefleet::aws::{user_data, AwsClients, AwsConfig};
use imagefleet::fleet::{AsgFleet, AwsActivity, Fleet, InstanceState, Reporting, IDLE_GRACE};
use imagefleet::queue::{Queue, SqsQueue};

async fn group(clients: &AwsClients, name: &str) -> AutoScalingGroup {
    clients
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .unwrap()
        .auto_scaling_groups()
        .first()
        .cloned()
        .expect("the group exists")
}

async fn protected(clients: &AwsClients, id: &str) -> bool {
    clients
        .autoscaling
        .describe_auto_scaling_instances()
        .instance_ids(id)
        .send()
        .await
        .unwrap()
        .auto_scaling_instances()
        .first()
        .map(|i| i.protected_from_scale_in().unwrap_or(false))
        .unwrap_or(false)
}

fn ids(group: &AutoScalingGroup) -> Vec<String> {
    let mut ids: Vec<String> = group
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

#[test]
fn the_controller_sizes_the_group_and_busy_instances_are_protected() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let moto = runtime.block_on(MotoFleet::setup("asg"));
    let clients = &moto.clients;
    let role = format!("imagefleet-{}-worker", moto.name);
    create_instance_profile(&role);
    let dir = tempfile::tempdir().unwrap();
    let written = dir.path().join("aws.toml");
    let written_arg = written.to_str().unwrap();
    let setup_args = [
        "aws",
        "setup",
        "--fleet",
        &moto.name,
        "--asg",
        "--spot",
        "--instance-types",
        "c7i.large,c6i.large,m7i.large",
        "--write-config",
        written_arg,
    ];

    // Without an AMI the group cannot be made: setup fails, and writes no
    // configuration (a `> file` redirect would have emptied it).
    std::fs::write(&written, "# the previous configuration\n").unwrap();
    let output = run_imagefleet(&setup_args, &[]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("IMAGEFLEET_WORKER_IMAGE_ID"));
    assert_eq!(
        std::fs::read_to_string(&written).unwrap(),
        "# the previous configuration\n"
    );

    let env = [
        ("IMAGEFLEET_WORKER_IMAGE_ID", moto.image.as_str()),
        ("IMAGEFLEET_WORKER_INSTANCE_PROFILE", role.as_str()),
    ];
    for run in 0..2 {
        let output = run_imagefleet(&setup_args, &env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        let verb = if run == 0 { "created" } else { "exists " };
        for kind in ["launch template", "group"] {
            assert!(
                stderr.contains(&format!("{verb} {kind} imagefleet-{}-workers", moto.name)),
                "run {run}: {stderr}"
            );
        }
        assert!(output.stdout.is_empty(), "the config went to the file");
    }
    let config = AwsConfig::load(None, Some(&written), |_| None).unwrap();
    assert_eq!(config.fleet, moto.name);
    assert!(config.workers.spot);
    assert_eq!(config.workers.instance_type, "c7i.large");

    // The launch template: one version (the second setup changed
    // nothing), IMDSv2 only, the worker role, the fleet's tags, the
    // workers' environment in the user data.
    let versions = runtime
        .block_on(
            clients
                .ec2
                .describe_launch_template_versions()
                .launch_template_name(&config.autoscaling_group)
                .send(),
        )
        .unwrap();
    assert_eq!(versions.launch_template_versions().len(), 1);
    let data = versions.launch_template_versions()[0]
        .launch_template_data()
        .unwrap();
    assert_eq!(data.image_id(), Some(moto.image.as_str()));
    assert_eq!(data.instance_type().map(|t| t.as_str()), Some("c7i.large"));
    assert_eq!(
        data.metadata_options().and_then(|m| m.http_tokens()),
        Some(&LaunchTemplateHttpTokensState::Required)
    );
    assert_eq!(
        data.iam_instance_profile().and_then(|p| p.name()),
        Some(role.as_str())
    );
    let instance_tags: Vec<(&str, &str)> = data
        .tag_specifications()
        .iter()
        .filter(|t| t.resource_type().map(|r| r.as_str()) == Some("instance"))
        .flat_map(|t| t.tags())
        .filter_map(|t| Some((t.key()?, t.value()?)))
        .collect();
    assert!(instance_tags.contains(&("imagefleet:fleet", moto.name.as_str())));
    let text = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(data.user_data().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        user_data::parse_env(&text),
        user_data::worker_env(&config, clients.region.as_deref())
    );

    // The group: empty until the controller says otherwise, over several
    // subnets, several instance types, spot with capacity rebalancing.
    let created = runtime.block_on(group(clients, &config.autoscaling_group));
    assert_eq!(
        (
            created.min_size(),
            created.max_size(),
            created.desired_capacity()
        ),
        (Some(0), Some(20), Some(0))
    );
    let subnets = created.vpc_zone_identifier().unwrap_or("");
    assert!(subnets.split(',').count() >= 2, "{subnets}");
    let policy = created.mixed_instances_policy().unwrap();
    let types: Vec<&str> = policy
        .launch_template()
        .unwrap()
        .overrides()
        .iter()
        .filter_map(|o| o.instance_type())
        .collect();
    assert_eq!(types, ["c7i.large", "c6i.large", "m7i.large"]);
    let distribution = policy.instances_distribution().unwrap();
    assert_eq!(
        distribution.on_demand_percentage_above_base_capacity(),
        Some(0)
    );
    assert_eq!(
        distribution.spot_allocation_strategy(),
        Some("price-capacity-optimized")
    );
    assert_eq!(created.capacity_rebalance(), Some(true));
    assert!(created
        .tags()
        .iter()
        .any(|t| t.key() == Some("imagefleet:fleet") && t.value() == Some(moto.name.as_str())));

    // The controller finds the group: 35 jobs -> desired 4, and no more.
    let requests = runtime
        .block_on(SqsQueue::open(clients.sqs.clone(), &config.requests_queue))
        .unwrap();
    runtime.block_on(async {
        for i in 0..35 {
            requests.send(&format!("job {i}")).await.unwrap();
        }
    });
    let data_dir = tempfile::tempdir().unwrap();
    let args = controller_args(&moto.name, data_dir.path(), &["--aws-config", written_arg]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut controller = Process::start(&args, &[]);
    let four = wait_for("desired capacity 4", Duration::from_secs(30), || {
        let g = runtime.block_on(group(clients, &config.autoscaling_group));
        (g.desired_capacity() == Some(4) && g.instances().len() == 4).then(|| ids(&g))
    });
    std::thread::sleep(Duration::from_secs(2));
    let g = runtime.block_on(group(clients, &config.autoscaling_group));
    assert_eq!(
        (g.desired_capacity(), ids(&g)),
        (Some(4), four.clone()),
        "4 and no more"
    );

    // A worker on one of them takes a job: its instance is protected.
    let busy_one = four[1].clone();
    let activity = runtime
        .block_on(AwsActivity::start(clients, Some(busy_one.clone())))
        .unwrap()
        .expect("an EC2 instance id");
    assert_eq!(
        activity.reporting(),
        &Reporting::Protection {
            group: config.autoscaling_group.clone()
        }
    );
    let reporter = activity.into_reporter();
    reporter.busy(true);
    wait_for(
        "the busy instance protected",
        Duration::from_secs(10),
        || {
            runtime
                .block_on(protected(clients, &busy_one))
                .then_some(())
        },
    );
    // Its worker has marked it ready, and the fleet says busy.
    let listed = runtime
        .block_on(AsgFleet::new(clients, &config).read_only().list())
        .unwrap();
    let busy = listed.iter().find(|i| i.id == busy_one).unwrap();
    assert_eq!(
        (busy.state, busy.busy),
        (InstanceState::Running, Some(true))
    );

    // The queue drains: the group goes to zero around the busy instance...
    runtime
        .block_on(clients.sqs.purge_queue().queue_url(requests.url()).send())
        .unwrap();
    wait_for("the idle instances to go", Duration::from_secs(30), || {
        let g = runtime.block_on(group(clients, &config.autoscaling_group));
        (ids(&g) == [busy_one.clone()]).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let g = runtime.block_on(group(clients, &config.autoscaling_group));
    assert_eq!(
        ids(&g),
        std::slice::from_ref(&busy_one),
        "the busy one stays"
    );
    // ...which goes too once its worker is idle.
    reporter.busy(false);
    std::thread::sleep(IDLE_GRACE / 2);
    assert!(
        runtime.block_on(protected(clients, &busy_one)),
        "a short pause keeps the protection"
    );
    wait_for("the last instance to go", Duration::from_secs(30), || {
        let g = runtime.block_on(group(clients, &config.autoscaling_group));
        (g.instances().is_empty() && g.desired_capacity() == Some(0)).then_some(())
    });
    assert!(controller.stop().success());
    drop(reporter);

    // Teardown removes the group and the template too.
    let report = runtime
        .block_on(imagefleet::commands::aws::teardown(clients, &config))
        .unwrap();
    assert!(report
        .removed
        .contains(&format!("group {}", config.autoscaling_group)));
    assert!(report
        .removed
        .contains(&format!("launch template {}", config.autoscaling_group)));
    assert!(report.refused.is_empty(), "{report:?}");
}

/// An instance in service whose worker never says it is ready (a bad AMI,
/// a worker that cannot start) is marked unhealthy: the group replaces it.
#[tokio::test]
async fn a_group_instance_whose_worker_never_starts_is_marked_unhealthy() {
    let moto = MotoFleet::setup("asgready").await;
    let mut config = moto.config.clone();
    config.workers.image_id = Some(moto.image.clone());
    imagefleet::commands::aws::setup_group(&moto.clients, &config)
        .await
        .unwrap();
    let fleet = AsgFleet::new(&moto.clients, &config);
    assert!(fleet.list().await.unwrap().is_empty());
    fleet.launch(1).await.unwrap();
    let listed = fleet.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, InstanceState::Pending, "not ready yet");

    config.workers.ready_timeout_secs = 0;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let impatient = AsgFleet::new(&moto.clients, &config);
    let listed = impatient.list().await.unwrap();
    assert_eq!(listed[0].state, InstanceState::Draining);
    let health = moto
        .clients
        .autoscaling
        .describe_auto_scaling_instances()
        .instance_ids(&listed[0].id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        health.auto_scaling_instances()[0]
            .health_status()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("unhealthy")
    );
    moto.teardown().await;
}
