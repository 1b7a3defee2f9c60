//! `imagefleet controller --backend aws` on moto, through the real binary:
//! the EC2 fleet follows the SQS backlog (35 -> 4, 500 -> 20, drained -> 0),
//! a restarted controller adopts the instances it finds by tag, and the cap
//! holds across restarts.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::moto::{controller_args, live_instances, tagged_instances, MotoFleet};
use crate::support::{wait_for, Process, Sampler};
use imagefleet::aws::user_data;
use imagefleet::fleet::{Ec2Fleet, Fleet};
use imagefleet::queue::{Queue, SqsQueue};

fn live(runtime: &tokio::runtime::Runtime, fleet: &Ec2Fleet) -> BTreeSet<String> {
    runtime
        .block_on(live_instances(fleet))
        .into_iter()
        .collect()
}

#[test]
fn the_fleet_follows_the_backlog_and_survives_restarts() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let moto = runtime.block_on(MotoFleet::setup("ctl"));
    let (fleet_name, config, clients, image) =
        (&moto.name, &moto.config, &moto.clients, &moto.image);
    let requests = runtime
        .block_on(SqsQueue::open(clients.sqs.clone(), &config.requests_queue))
        .unwrap();
    let enqueue = |count: usize| {
        runtime.block_on(async {
            for i in 0..count {
                // No workers run here, so the bodies are never read.
                requests.send(&format!("job {i}")).await.unwrap();
            }
        })
    };
    // Only the AMI comes from the environment; everything else derives
    // from the fleet name, as for an operator after `aws setup`.
    let env = [("IMAGEFLEET_WORKER_IMAGE_ID", image.as_str())];
    let data = tempfile::tempdir().unwrap();
    let args = controller_args(fleet_name, data.path(), &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let fleet = Ec2Fleet::new(clients, config);
    // Every instance of the fleet, draining ones included, against the cap.
    let fleet_size = {
        let fleet = fleet.clone();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        Sampler::start(move || runtime.block_on(fleet.list()).unwrap().len())
    };

    // 35 jobs, no instances: the default policy wants 4.
    enqueue(35);
    let mut controller = Process::start(&args, &env);
    let first = wait_for("4 instances", Duration::from_secs(30), || {
        let ids = live(&runtime, &fleet);
        (ids.len() == 4).then_some(ids)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(live(&runtime, &fleet), first, "4 and no more");

    // Tagged as the fleet's, and told its queues, buckets and region.
    let expected_env = user_data::worker_env(config, clients.region.as_deref());
    for id in &first {
        let env = user_data::parse_env(&runtime.block_on(fleet.user_data(id)).unwrap());
        assert_eq!(env, expected_env, "user data of {id}");
    }
    let tagged = runtime.block_on(tagged_instances(clients, fleet_name, None));
    assert_eq!(tagged, first);

    // The controller crashes; the backlog grows to 500 meanwhile. The next
    // one adopts the 4 and launches 16, not 20.
    controller.crash();
    enqueue(465);
    let mut controller = Process::start(&args, &env);
    let full = wait_for("20 instances", Duration::from_secs(30), || {
        let ids = live(&runtime, &fleet);
        (ids.len() == 20).then_some(ids)
    });
    assert!(first.is_subset(&full), "the first 4 were adopted");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(live(&runtime, &fleet), full, "capped at 20");

    // A clean restart with the cap already reached launches nothing.
    assert!(controller.stop().success());
    let mut controller = Process::start(&args, &env);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(live(&runtime, &fleet), full, "still the same 20");

    // The queue drains: every instance is terminated.
    runtime
        .block_on(clients.sqs.purge_queue().queue_url(requests.url()).send())
        .unwrap();
    wait_for("the fleet to scale in", Duration::from_secs(30), || {
        live(&runtime, &fleet).is_empty().then_some(())
    });
    assert!(controller.stop().success());

    let sizes = fleet_size.finish();
    let peak = sizes.iter().copied().max().unwrap();
    assert_eq!(peak, 20, "never above the cap (samples: {sizes:?})");
    runtime.block_on(moto.teardown());
}

/// Dry run on AWS: the plan is printed, nothing is launched.
#[test]
fn dry_run_prints_the_plan_and_launches_nothing() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let moto = runtime.block_on(MotoFleet::setup("dry"));
    let (config, clients) = (&moto.config, &moto.clients);
    runtime.block_on(async {
        let requests = SqsQueue::open(clients.sqs.clone(), &config.requests_queue)
            .await
            .unwrap();
        for i in 0..35 {
            requests.send(&format!("job {i}")).await.unwrap();
        }
    });
    let data = tempfile::tempdir().unwrap();
    let args = controller_args(&moto.name, data.path(), &["--dry-run"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut controller = Process::start(&args, &[("IMAGEFLEET_WORKER_IMAGE_ID", &moto.image)]);
    let expected = "plan: launch 4 (desired 4, running 0; visible 35, in flight 0; \
                    reason: backlog 35: one instance per 10 messages)";
    wait_for("two dry-run plan lines", Duration::from_secs(20), || {
        let lines = controller.stdout.lock().unwrap();
        (lines.iter().filter(|l| l.as_str() == expected).count() >= 2).then_some(())
    });
    assert!(controller.stop().success());
    let fleet = Ec2Fleet::new(clients, config);
    assert!(runtime.block_on(fleet.list()).unwrap().is_empty());
    runtime.block_on(moto.teardown());
}

/// A launch that fails is retried with backoff, not every tick, and the
/// controller says why on GET /status (`--status-listen`).
#[test]
fn a_failing_launch_shows_in_the_controllers_status() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let moto = runtime.block_on(MotoFleet::setup("failing"));
    runtime.block_on(async {
        let requests = SqsQueue::open(moto.clients.sqs.clone(), &moto.config.requests_queue)
            .await
            .unwrap();
        for i in 0..35 {
            requests.send(&format!("job {i}")).await.unwrap();
        }
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let data = tempfile::tempdir().unwrap();
    let args = controller_args(&moto.name, data.path(), &["--status-listen", &listen]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut controller = Process::start(
        &args,
        &[
            ("IMAGEFLEET_WORKER_IMAGE_ID", &moto.image),
            ("IMAGEFLEET_WORKER_SUBNETS", "subnet-00000000000000000"),
        ],
    );
    let error = wait_for(
        "the launch error in /status",
        Duration::from_secs(20),
        || {
            let status: serde_json::Value =
                reqwest::blocking::get(format!("http://{listen}/status"))
                    .ok()?
                    .json()
                    .ok()?;
            let error = status["last_error"].as_str()?.to_owned();
            error.contains("next attempt in").then_some(error)
        },
    );
    assert!(error.contains("InvalidSubnetID"), "{error}");
    assert!(controller.stop().success());
    let fleet = Ec2Fleet::new(&moto.clients, &moto.config);
    assert!(runtime.block_on(fleet.list()).unwrap().is_empty());
    runtime.block_on(moto.teardown());
}

/// The controller's lease in the output bucket admits one holder: a
/// second is refused while the first renews; it is handed over on release,
/// taken over once expired or once its holder's process on this host is
/// gone; and a holder that lost it finds out at its next renewal.
#[test]
fn the_controller_lease_admits_one_holder_at_a_time() {
    use imagefleet::fleet::{ControllerLease, Holder, LeaseError};

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let moto = runtime.block_on(MotoFleet::setup("lease"));
    let (s3, bucket) = (&moto.clients.s3, moto.config.output_bucket.as_str());
    let other = |host: &str| Holder {
        host: host.into(),
        pid: 1,
    };
    let minute = Duration::from_secs(60);
    runtime.block_on(async {
        let a = ControllerLease::acquire(s3.clone(), bucket, other("host-a"), minute)
            .await
            .unwrap();
        match ControllerLease::acquire(s3.clone(), bucket, other("host-b"), minute).await {
            Err(LeaseError::Held { holder, left_s, .. }) => {
                assert_eq!(holder, other("host-a"));
                assert!((55..=60).contains(&left_s), "{left_s}");
            }
            other => panic!("a second holder got {:?}", other.err()),
        }
        a.renew().await.unwrap();

        // Released: the next takes it at once, and the first has lost it.
        a.release().await;
        let b =
            ControllerLease::acquire(s3.clone(), bucket, other("host-b"), Duration::from_secs(1))
                .await
                .unwrap();
        assert!(matches!(a.renew().await, Err(LeaseError::Lost { .. })));

        // Expired (b stalled past its lease): taken over; b finds out.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let c = ControllerLease::acquire(s3.clone(), bucket, other("host-c"), minute)
            .await
            .unwrap();
        assert!(matches!(b.renew().await, Err(LeaseError::Lost { .. })));
        c.release().await;

        // A holder on this host whose process died: no need to wait.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        let crashed = Holder {
            pid: gone.id(),
            ..Holder::this_process()
        };
        let _d = ControllerLease::acquire(s3.clone(), bucket, crashed, minute)
            .await
            .unwrap();
        ControllerLease::acquire(s3.clone(), bucket, Holder::this_process(), minute)
            .await
            .expect("the lease of a dead process on this host is taken over");
    });
    runtime.block_on(moto.teardown());
}

/// Through the binary: a second controller on the same fleet refuses to
/// start and says who runs it; once the first stops, the next one starts.
#[test]
fn a_second_controller_on_the_same_fleet_refuses_to_start() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let moto = runtime.block_on(MotoFleet::setup("two"));
    let env = [("IMAGEFLEET_WORKER_IMAGE_ID", moto.image.as_str())];
    let (first_dir, second_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let args = |dir: &std::path::Path| controller_args(&moto.name, dir, &[]);
    let first_args = args(first_dir.path());
    let mut first = Process::start(
        &first_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &env,
    );
    wait_for(
        "the first controller's lease",
        Duration::from_secs(20),
        || first.logged("holding the controller lease").then_some(()),
    );

    let second_args = args(second_dir.path());
    let mut second = Process::start(
        &second_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &env,
    );
    let status = crate::support::exit_within(
        &mut second.child,
        Duration::from_secs(20),
        "the second controller",
    );
    assert!(!status.success());
    let pid = first.child.id().to_string();
    wait_for("the refusal", Duration::from_secs(5), || {
        let lines = second.stderr.lock().unwrap();
        lines
            .iter()
            .any(|l| l.contains("another controller") && l.contains(&format!("pid {pid}")))
            .then_some(())
    });

    assert!(first.stop().success());
    let mut third = Process::start(
        &second_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &env,
    );
    wait_for(
        "the next controller's lease",
        Duration::from_secs(20),
        || third.logged("holding the controller lease").then_some(()),
    );
    assert!(third.stop().success());
    runtime.block_on(moto.teardown());
}
