//! The IAM policies in worker/ami/iam/, proven by what the tiers really
//! call. Each tier runs as the real binary with its calls recorded
//! (IMAGEFLEET_AWS_CALL_LOG), through everything it does on AWS: the web
//! tier with --reap, sync and async jobs, pending and unknown ids, status
//! and a queue outage; workers on a raw instance and in the Auto Scaling
//! group (its instance id from an IMDSv2-only metadata service); the
//! controller sizing raw instances, then the group. Then:
//! - every call each tier made is allowed by that tier's rendered policy
//!   (action and resource; moto evaluates no IAM, so conditions are not
//!   proven here);
//! - every action-resource pair each policy grants was needed by some call
//!   (the stock-AMI artifacts policy by the fetches in the user data);
//! - no resource pattern matches a fleet whose name starts the same way;
//! - render.sh refuses to render with a value missing.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::imds;
use crate::moto::{
    create_instance_profile, default_network, instance_worker, require_endpoint, unique_fleet,
    MotoFleet,
};
use crate::policy::{self, group_arn, permissions, sqs_arn, Permission, Policy};
use crate::support::{get_json, sample, upload, wait_for, Process, Server};
use bytes::Bytes;
use imagefleet::aws::calls::{self, Call, CALL_LOG_ENV};
use imagefleet::aws::AwsConfig;
use imagefleet::fleet::{Ec2Fleet, Fleet};
use imagefleet::job::{JobId, JobRequest};
use imagefleet::queue::{Queue, SqsQueue};
use imagefleet::store::{ObjectStore, S3Store};

/// The environment render.sh gets for a fleet's deployment.
fn render_env(config: &AwsConfig) -> Vec<(&'static str, String)> {
    let w = &config.workers;
    vec![
        ("IMAGEFLEET_WORKER_IMAGE_ID", w.image_id.clone().unwrap()),
        ("IMAGEFLEET_WORKER_SUBNETS", w.subnet_ids.join(",")),
        (
            "IMAGEFLEET_WORKER_SECURITY_GROUPS",
            w.security_group_ids.join(","),
        ),
        (
            "IMAGEFLEET_WORKER_INSTANCE_PROFILE",
            w.instance_profile.clone().unwrap(),
        ),
        ("IMAGEFLEET_WORKER_ARTIFACTS", w.artifacts.clone().unwrap()),
    ]
}

fn policies(config: &AwsConfig) -> [(&'static str, Policy); 4] {
    let env = render_env(config);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let load = |file| Policy::load(file, &config.fleet, &env);
    [
        ("web", load("web-policy.json")),
        ("worker", load("worker-policy.json")),
        ("worker", load("worker-artifacts-policy.json")),
        ("controller", load("controller-policy.json")),
    ]
}

/// What a stock-AMI boot fetches (cloud-init runs the AWS CLI with the
/// worker role): `aws s3 cp` of the binary, `aws s3 sync` of the models.
fn boot_permissions(user_data: &str) -> Vec<Permission> {
    let mut needed = Vec::new();
    for line in user_data.lines() {
        let fields: Vec<&str> = line
            .trim_start_matches([' ', '-'])
            .trim_matches(['[', ']'])
            .split(", ")
            .map(|f| f.trim_matches('"'))
            .collect();
        let (bucket, key) = match fields.get(3).and_then(|u| u.strip_prefix("s3://")) {
            Some(rest) => rest.split_once('/').unwrap(),
            None => continue,
        };
        match fields[..3] {
            ["aws", "s3", "cp"] => needed.push(Permission {
                action: "s3:GetObject".into(),
                resource: format!("arn:aws:s3:::{bucket}/{key}"),
            }),
            ["aws", "s3", "sync"] => {
                needed.push(Permission {
                    action: "s3:ListBucket".into(),
                    resource: format!("arn:aws:s3:::{bucket}"),
                });
                needed.push(Permission {
                    action: "s3:GetObject".into(),
                    resource: format!("arn:aws:s3:::{bucket}/{key}*"),
                });
            }
            _ => {}
        }
    }
    needed
}

fn read_log(path: &Path) -> Vec<Call> {
    calls::read(path).unwrap()
}

fn called(path: &Path, operation: &str) -> bool {
    read_log(path).iter().any(|c| c.operation == operation)
}

#[test]
fn every_call_is_allowed_by_its_tiers_policy_and_every_grant_is_needed() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let moto = runtime.block_on(MotoFleet::setup("iam"));
    let admin = &moto.clients;
    let network = runtime.block_on(default_network(admin));
    let role = format!("imagefleet-{}-worker", moto.name);
    create_instance_profile(&role);
    let mut config = moto.config.clone();
    config.workers.image_id = Some(moto.image.clone());
    config.workers.subnet_ids = network.subnets[..2].to_vec();
    config.workers.security_group_ids = vec![network.security_group.clone()];
    config.workers.instance_profile = Some(role.clone());
    config.workers.artifacts = Some("s3://imagefleet-artifacts-test/builds/1".into());
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("aws.toml");
    std::fs::write(&config_file, config.to_toml()).unwrap();
    let config_arg = config_file.to_str().unwrap();
    let logs = ["web", "worker", "controller"].map(|tier| dir.path().join(format!("{tier}.jsonl")));
    let [web_log, worker_log, controller_log] = &logs;
    let log_env = |path: &Path| (CALL_LOG_ENV, path.to_str().unwrap().to_owned());
    let fleet = Ec2Fleet::new(admin, &config);
    let requests = runtime
        .block_on(SqsQueue::open(admin.sqs.clone(), &config.requests_queue))
        .unwrap();
    // Jobs as an older web tier queued them (no reply queue named), all on
    // one uploaded image; `input_key` overrides it (for a bad one).
    let image = JobId::new();
    runtime.block_on(async {
        S3Store::open(admin.s3.clone(), &config.input_bucket)
            .await
            .unwrap()
            .put(
                &image.input_key(),
                Bytes::from(sample("chelsea.jpg")),
                "image/jpeg",
            )
            .await
            .unwrap();
    });
    let enqueue = |count: usize, input_key: &str| {
        runtime.block_on(async {
            for _ in 0..count {
                let request = JobRequest {
                    job_id: JobId::new(),
                    input_key: input_key.to_owned(),
                    file_name: "old.jpg".into(),
                    content_type: "image/jpeg".into(),
                    submitted_at_ms: 0,
                    attempt: 1,
                    reply_to: None,
                    request_id: None,
                    keep_input: false,
                };
                requests
                    .send(&serde_json::to_string(&request).unwrap())
                    .await
                    .unwrap();
            }
        })
    };
    let controller_args = [
        "controller",
        "--backend",
        "aws",
        "--aws-config",
        config_arg,
        "--interval-ms",
        "300",
        // The test waits for the scale-in: no 30 s delay.
        "--scale-in-delay",
        "0",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ];

    // A reply queue left by a replica that died long ago.
    let stale = config.reply_queue("gone");
    runtime
        .block_on(SqsQueue::create(
            admin.sqs.clone(),
            &stale,
            Default::default(),
            [
                ("imagefleet:fleet".to_owned(), config.fleet.clone()),
                ("imagefleet:heartbeat".to_owned(), "0".to_owned()),
            ]
            .into(),
        ))
        .unwrap();

    // --- Raw instances: web tier, controller, a worker on an instance.
    let (k, v) = log_env(web_log);
    let web = Server::start_with_env(
        &[
            "web",
            "--backend",
            "aws",
            "--aws-config",
            config_arg,
            "--reap",
            "--result-timeout-secs",
            "60",
        ],
        &[(k, &v)],
    );
    assert!(called(web_log, "DeleteQueue"), "--reap removed {stale}");
    enqueue(35, &image.input_key());
    let (k, v) = log_env(controller_log);
    let mut controller = Process::start(&controller_args, &[(k, &v)]);
    let first = wait_for("a raw instance", Duration::from_secs(30), || {
        runtime
            .block_on(fleet.list())
            .unwrap()
            .first()
            .map(|i| i.id.clone())
    });
    let (k, v) = log_env(worker_log);
    let mut worker = instance_worker(&runtime, &fleet, Some(&first), &first, &[(k, &v)]);
    // It says it is ready, busy, then idle, and answers on the shared
    // result queue.
    wait_for("the 35 jobs done", Duration::from_secs(60), || {
        let depth = runtime.block_on(requests.depth()).unwrap();
        (depth.backlog() == 0).then_some(())
    });
    let tagged = |value: &str| {
        read_log(worker_log).iter().any(|c| {
            c.operation == "CreateTags" && c.param("Tag.1.Value").as_deref() == Some(value)
        })
    };
    assert!(tagged("busy"), "the worker said it was busy");

    // Real jobs through the web tier.
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let response = upload(
        &client,
        &web.url("/"),
        "myfile",
        "chelsea.jpg",
        sample("chelsea.jpg"),
        false,
    );
    assert_eq!(response.status(), 200);
    let response = upload(
        &client,
        &web.url("/jobs"),
        "myfile",
        "chelsea.jpg",
        sample("chelsea.jpg"),
        true,
    );
    assert_eq!(response.status(), 202);
    let id = response.json::<serde_json::Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for("the async job", Duration::from_secs(30), || {
        (get_json(&web.url(&format!("/jobs/{id}")))["status"] == "done").then_some(())
    });
    // Uploads past 5 MiB stream to S3 as multipart uploads; one whose
    // client leaves halfway is aborted.
    big_upload(web.addr, 12 * 1024 * 1024, 12 * 1024 * 1024);
    big_upload(web.addr, 12 * 1024 * 1024, 7 * 1024 * 1024);
    wait_for(
        "the abandoned upload aborted",
        Duration::from_secs(30),
        || called(web_log, "AbortMultipartUpload").then_some(()),
    );
    assert!(called(web_log, "CompleteMultipartUpload"));
    let unknown = get_json(&web.url(&format!("/jobs/{}", JobId::new())));
    assert_eq!(unknown["error"], "not_found", "{unknown}");
    get_json(&web.url("/status"));
    get_json(&web.url("/healthz"));

    // A job whose input key is not valid: retried, then given up on (a
    // failed result, and the request to the dead-letter queue).
    enqueue(1, "../bad");
    wait_for("the bad job retried", Duration::from_secs(30), || {
        called(worker_log, "ChangeMessageVisibility").then_some(())
    });
    let dead_letters = runtime
        .block_on(SqsQueue::open(admin.sqs.clone(), &config.dead_letter_queue))
        .unwrap();
    wait_for("the bad job set aside", Duration::from_secs(30), || {
        (runtime.block_on(dead_letters.depth()).unwrap().backlog() == 1).then_some(())
    });
    wait_for("the idle tag", Duration::from_secs(30), || {
        tagged("idle").then_some(())
    });

    // Scale in.
    wait_for(
        "the controller to terminate",
        Duration::from_secs(30),
        || called(controller_log, "TerminateInstances").then_some(()),
    );
    assert!(controller.stop().success());
    assert!(worker.stop().success());

    // A queue outage during an upload: the stored image is deleted again.
    runtime
        .block_on(admin.sqs.delete_queue().queue_url(requests.url()).send())
        .unwrap();
    let response = upload(
        &client,
        &web.url("/jobs"),
        "myfile",
        "chelsea.jpg",
        sample("chelsea.jpg"),
        true,
    );
    assert_eq!(response.status(), 503);
    assert!(called(web_log, "DeleteObject"));
    runtime
        .block_on(imagefleet::commands::aws::setup(admin, &config))
        .unwrap();
    drop(web);

    // --- The Auto Scaling group: the controller sizes it, a worker whose
    // instance id comes from IMDSv2 protects itself while busy, and
    // instances whose worker never starts are marked unhealthy.
    // Impatient, so that instances are marked before the queue drains.
    config.workers.ready_timeout_secs = 0;
    std::fs::write(&config_file, config.to_toml()).unwrap();
    runtime
        .block_on(imagefleet::commands::aws::setup_group(admin, &config))
        .unwrap();
    // Enough jobs that the worker is still busy when stopped below, so it
    // hands a job back (sent again: SendMessage on the request queue).
    enqueue(200, &image.input_key());
    let (k, v) = log_env(controller_log);
    let mut controller = Process::start(&controller_args, &[(k, &v)]);
    let member = wait_for("a group instance", Duration::from_secs(30), || {
        let groups = runtime
            .block_on(
                admin
                    .autoscaling
                    .describe_auto_scaling_groups()
                    .auto_scaling_group_names(&config.autoscaling_group)
                    .send(),
            )
            .unwrap();
        groups
            .auto_scaling_groups()
            .first()?
            .instances()
            .first()?
            .instance_id()
            .map(str::to_owned)
    });
    let metadata = imds::start(&member);
    let (k, v) = log_env(worker_log);
    let mut worker = instance_worker(
        &runtime,
        &fleet,
        None,
        &member,
        &[
            (k, &v),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &metadata.url),
        ],
    );
    wait_for(
        "the worker to protect its instance",
        Duration::from_secs(30),
        || {
            read_log(worker_log)
                .iter()
                .any(|c| {
                    c.operation == "SetInstanceProtection"
                        && c.param("ProtectedFromScaleIn").as_deref() == Some("true")
                })
                .then_some(())
        },
    );
    use std::sync::atomic::Ordering::SeqCst;
    assert!(metadata.answered.load(SeqCst) >= 1);
    assert_eq!(metadata.refused.load(SeqCst), 0, "IMDSv2 only");
    wait_for(
        "never-ready instances marked unhealthy",
        Duration::from_secs(30),
        || called(controller_log, "SetInstanceHealth").then_some(()),
    );
    assert!(controller.stop().success());
    assert!(worker.stop().success());
    let user_data = runtime.block_on(fleet.user_data(&member)).unwrap();
    runtime.block_on(moto.teardown());

    // --- The verdict.
    let group = config.autoscaling_group.clone();
    let mut needed: Vec<(&str, Permission, String)> = Vec::new();
    for (tier, log) in [
        ("web", web_log),
        ("worker", worker_log),
        ("controller", controller_log),
    ] {
        for call in read_log(log) {
            for permission in permissions(&call, &group) {
                needed.push((tier, permission, format!("{} {}", call.operation, call.uri)));
            }
        }
    }
    for permission in boot_permissions(&user_data) {
        needed.push(("worker", permission, "cloud-init".into()));
    }
    let policies = policies(&config);
    let mut denied = BTreeSet::new();
    for (tier, permission, call) in &needed {
        let allowed = policies
            .iter()
            .filter(|(t, _)| t == tier)
            .any(|(_, p)| p.allowing(permission).is_some());
        if !allowed {
            denied.insert(format!(
                "{tier}: {} on {} ({call})",
                permission.action, permission.resource
            ));
        }
    }
    assert!(
        denied.is_empty(),
        "calls no policy allows:\n{}",
        join(&denied)
    );
    let mut unused = BTreeSet::new();
    for (tier, policy) in &policies {
        for (sid, action, resource) in policy.grants() {
            let used = needed.iter().any(|(t, p, _)| {
                t == tier
                    && policy::glob(&action.to_ascii_lowercase(), &p.action.to_ascii_lowercase())
                    && policy::glob(&resource, &p.resource)
            });
            if !used {
                unused.insert(format!("{} {sid}: {action} on {resource}", policy.file));
            }
        }
    }
    assert!(
        unused.is_empty(),
        "granted, never needed:\n{}",
        join(&unused)
    );
}

/// Sends `sent` bytes of a PNG upload declared as `declared` bytes over a
/// raw connection (the server reads the image as it comes), then either
/// finishes the request or, when `sent < declared`, hangs up.
fn big_upload(addr: std::net::SocketAddr, declared: usize, sent: usize) {
    use std::io::{Read, Write};
    let preamble = "--XyZ\r\nContent-Disposition: form-data; name=\"myfile\"; filename=\"big.png\"\r\nContent-Type: image/png\r\n\r\n";
    let closing = "\r\n--XyZ--\r\n";
    let head = format!(
        "POST /jobs HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {}\r\n\r\n{preamble}",
        preamble.len() + declared + closing.len()
    );
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut body = vec![7u8; sent];
    body[..8].copy_from_slice(b"\x89PNG\r\n\x1a\n");
    stream.write_all(&body).unwrap();
    if sent < declared {
        return;
    }
    stream.write_all(closing.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 202", "the big upload was accepted");
}

fn join(lines: &BTreeSet<String>) -> String {
    lines.iter().cloned().collect::<Vec<_>>().join("\n")
}

/// `imagefleet-demo-*` would match fleet `demo-2`'s queues: every pattern
/// names the fleet's resources exactly (the reply queues' `_` cannot occur
/// in a fleet name).
#[test]
fn no_pattern_matches_a_fleet_whose_name_starts_the_same() {
    require_endpoint();
    let fleet = unique_fleet("demo");
    let mut config = AwsConfig::derived(&fleet, false);
    config.workers.image_id = Some("ami-12345678".into());
    config.workers.subnet_ids = vec!["subnet-1".into()];
    config.workers.security_group_ids = vec!["sg-1".into()];
    config.workers.instance_profile = Some(format!("imagefleet-{fleet}-worker"));
    config.workers.artifacts = Some("s3://artifacts/builds".into());
    for other in
        ["2", "reply", "requests", "input", "workers", "x-y"].map(|s| format!("{fleet}-{s}"))
    {
        let theirs = AwsConfig::derived(&other, false);
        let resources = [
            sqs_arn(&theirs.requests_queue),
            sqs_arn(&theirs.dead_letter_queue),
            sqs_arn(&theirs.results_queue),
            sqs_arn(&theirs.reply_queue("a1")),
            format!("arn:aws:s3:::{}", theirs.input_bucket),
            format!("arn:aws:s3:::{}/k", theirs.input_bucket),
            format!("arn:aws:s3:::{}", theirs.output_bucket),
            format!("arn:aws:s3:::{}/k.json", theirs.output_bucket),
            group_arn(&theirs.autoscaling_group),
            format!(
                "arn:aws:iam::{}:role/imagefleet-{other}-worker",
                policy::ACCOUNT
            ),
        ];
        for (_, policy) in policies(&config) {
            // "*" only for actions that have no resource to name.
            for statement in &policy.statements {
                if statement.resources.iter().any(|r| r == "*") {
                    for action in &statement.actions {
                        assert!(
                            NO_RESOURCE_LEVEL.contains(&action.as_str()),
                            "{}: {action} on *",
                            policy.file
                        );
                    }
                }
            }
            for pattern in policy.resource_patterns().iter().filter(|p| *p != "*") {
                for resource in &resources {
                    assert!(
                        !policy::glob(pattern, resource),
                        "{}: {pattern} matches fleet {other}'s {resource}",
                        policy.file
                    );
                }
            }
        }
    }
}

/// Actions IAM cannot restrict to a resource: they take "*".
const NO_RESOURCE_LEVEL: &[&str] = &[
    "sqs:ListQueues",
    "ec2:DescribeInstances",
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeAutoScalingInstances",
];

#[test]
fn render_refuses_a_missing_value() {
    require_endpoint();
    let full = [
        ("IMAGEFLEET_WORKER_IMAGE_ID", "ami-1"),
        ("IMAGEFLEET_WORKER_SUBNETS", "subnet-1,subnet-2"),
        ("IMAGEFLEET_WORKER_SECURITY_GROUPS", "sg-1"),
        (
            "IMAGEFLEET_WORKER_INSTANCE_PROFILE",
            "imagefleet-demo-worker",
        ),
    ];
    let controller = policy::render("controller-policy.json", "demo", &full).unwrap();
    assert!(controller.contains("subnet/subnet-1") && controller.contains("subnet/subnet-2"));
    Policy::parse("controller-policy.json", &controller);
    for missing in 0..full.len() {
        let partial: Vec<(&str, &str)> = full
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != missing)
            .map(|(_, kv)| *kv)
            .collect();
        let error = policy::render("controller-policy.json", "demo", &partial).unwrap_err();
        assert!(error.contains(full[missing].0), "{error}");
    }
    assert!(policy::render("worker-artifacts-policy.json", "demo", &[])
        .unwrap_err()
        .contains("IMAGEFLEET_WORKER_ARTIFACTS"));
    assert!(policy::render("web-policy.json", "Bad_Name", &[]).is_err());
    // The policies that need nothing but the fleet render as they are.
    for file in ["web-policy.json", "worker-policy.json"] {
        let text = policy::render(file, "demo", &[]).unwrap();
        assert!(
            !text.contains('*') || !text.contains("imagefleet-demo-*"),
            "{text}"
        );
        Policy::parse(file, &text);
    }
}
