//! AWS mode end to end on moto: the web tier (`imagefleet web --backend
//! aws`), the controller (`imagefleet controller --backend aws`) scaling the
//! EC2 fleet, and workers started the way EC2 would start them. The harness
//! mirrors each running instance of the (moto) fleet with a local
//! `imagefleet worker` process configured from that instance's user data,
//! so what is tested is exactly what an instance would be told.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::moto::{controller_args, live_instances, MotoFleet};
use crate::support::{
    repo_root, terminate, upload_concurrently, wait_for, Process, Sampler, Server,
};
use imagefleet::aws::{user_data, AwsClients};
use imagefleet::fleet::{Ec2Fleet, Fleet, InstanceState, LEASE_KEY};
use imagefleet::queue::{Queue, QueueDepth, SqsQueue};
use imagefleet::store::{ObjectStore, S3Store};

/// Local worker processes standing in for the fleet's EC2 instances.
struct Mirror {
    workers: HashMap<String, Child>,
}

impl Mirror {
    fn new() -> Mirror {
        Mirror {
            workers: HashMap::new(),
        }
    }

    /// One worker per live instance, none for the rest.
    async fn sync(&mut self, fleet: &Ec2Fleet) {
        let live = live_instances(fleet).await;
        for id in &live {
            if self.workers.contains_key(id) {
                continue;
            }
            let env = user_data::parse_env(&fleet.user_data(id).await.unwrap());
            assert!(!env.is_empty(), "instance {id} has no worker env");
            let child = Command::new(env!("CARGO_BIN_EXE_imagefleet"))
                .args(["worker", "--instance-id", id])
                // Gone with this test process, even if it panics.
                .args(["--parent-pid", &std::process::id().to_string()])
                .envs(env)
                // The instance's model path is on the AMI; here the repo's.
                .env("IMAGEFLEET_MODEL", repo_root().join("models/model.toml"))
                .current_dir(repo_root())
                .stdin(Stdio::null())
                .spawn()
                .expect("start worker");
            self.workers.insert(id.clone(), child);
        }
        let gone: Vec<String> = self
            .workers
            .keys()
            .filter(|id| !live.contains(id))
            .cloned()
            .collect();
        // SIGTERM them all first: each may take a few seconds to finish.
        let stopping: Vec<(String, Child)> = gone
            .into_iter()
            .map(|id| {
                let child = self.workers.remove(&id).unwrap();
                unsafe {
                    libc::kill(child.id() as i32, libc::SIGTERM);
                }
                (id, child)
            })
            .collect();
        for (id, child) in stopping {
            stop(child, &id);
        }
    }
}

/// SIGTERM, as systemd stops the unit when the instance shuts down.
fn stop(mut child: Child, id: &str) {
    let status = terminate(&mut child, &format!("worker for {id}"));
    assert!(status.success(), "worker for {id} exited with {status}");
}

impl Drop for Mirror {
    fn drop(&mut self) {
        for child in self.workers.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn queue(clients: &AwsClients, name: &str) -> SqsQueue {
    SqsQueue::open(clients.sqs.clone(), name).await.unwrap()
}

#[test]
fn uploads_go_through_sqs_workers_and_s3_while_the_fleet_scales() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let moto = runtime.block_on(MotoFleet::setup("e2e"));
    let (fleet_name, config, clients) = (&moto.name, &moto.config, &moto.clients);
    let fleet = Ec2Fleet::new(clients, config);

    let web = Server::start(&[
        "web",
        "--backend",
        "aws",
        "--fleet",
        fleet_name,
        "--result-timeout-secs",
        "240",
    ]);
    // At most 4 instances: each one is a worker process on this machine.
    let data = tempfile::tempdir().unwrap();
    let args = controller_args(fleet_name, data.path(), &["--max-instances", "4"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut controller = Process::start(&args, &[("IMAGEFLEET_WORKER_IMAGE_ID", &moto.image)]);
    // The mirror follows the fleet the controller sizes, and samples it.
    let mirroring = {
        let fleet = fleet.clone();
        let mut mirror = Mirror::new();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        Sampler::start(move || {
            runtime.block_on(mirror.sync(&fleet));
            mirror.workers.len()
        })
    };

    upload_concurrently(&web.url("/"), 100, Duration::from_secs(300));

    runtime.block_on(async {
        let outputs = S3Store::open(clients.s3.clone(), &config.output_bucket)
            .await
            .unwrap();
        let inputs = S3Store::open(clients.s3.clone(), &config.input_bucket)
            .await
            .unwrap();
        // Every result, and beside them the controller's lease.
        let mut results = outputs.list("").await.unwrap();
        results.retain(|key| key != LEASE_KEY);
        assert_eq!(results.len(), 100);
        // Each input went once its result was stored.
        assert_eq!(inputs.list("").await.unwrap().len(), 0);
        // Every request was deleted once done: nothing waits, nothing died.
        for name in [&config.requests_queue, &config.dead_letter_queue] {
            assert_eq!(
                queue(clients, name).await.depth().await.unwrap(),
                QueueDepth::default(),
                "{name}"
            );
        }
    });

    // Scale in: the controller terminates the idle fleet, and the
    // instances take their workers with them.
    wait_for("the fleet to scale in", Duration::from_secs(60), || {
        runtime
            .block_on(fleet.list())
            .unwrap()
            .iter()
            .all(|i| i.state == InstanceState::Draining)
            .then_some(())
    });
    wait_for(
        "every mirrored worker to stop",
        Duration::from_secs(60),
        || (mirroring.latest() == Some(0)).then_some(()),
    );
    let workers = mirroring.finish();
    let peak = workers.iter().copied().max().unwrap();
    assert!(
        (1..=4).contains(&peak),
        "peak workers {peak}, cap 4 (samples: {workers:?})"
    );
    assert!(controller.stop().success());
    drop(web);
    runtime.block_on(moto.teardown());
}
