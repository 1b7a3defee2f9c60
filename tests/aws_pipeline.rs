//! AWS mode end to end on moto: the web tier (`imagefleet web --backend
//! aws`) and workers started the way EC2 would start them. The harness
//! mirrors each running instance of the (moto) fleet with a local
//! `imagefleet worker` process configured from that instance's user data,
//! so what is tested is exactly what an instance would be told.

mod aws_common;
mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_common::{any_image, clients, config, unique_fleet};
use common::{expected_labels, repo_root, sample, upload, Server};
use imagefleet::aws::{resources, user_data, AwsClients, AwsConfig};
use imagefleet::fleet::{Ec2Fleet, Fleet, InstanceState};
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
        let live: Vec<String> = fleet
            .list()
            .await
            .unwrap()
            .into_iter()
            .filter(|i| i.state != InstanceState::Draining)
            .map(|i| i.id)
            .collect();
        for id in &live {
            if self.workers.contains_key(id) {
                continue;
            }
            let env = user_data::parse_env(&fleet.user_data(id).await.unwrap());
            assert!(!env.is_empty(), "instance {id} has no worker env");
            let child = Command::new(env!("CARGO_BIN_EXE_imagefleet"))
                .args(["worker", "--instance-id", id])
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
        for id in gone {
            let child = self.workers.remove(&id).unwrap();
            stop(child, &id);
        }
    }
}

/// SIGTERM, as systemd stops the unit when the instance shuts down.
fn stop(mut child: Child, id: &str) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "worker for {id} exited with {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("worker for {id} did not stop within 60 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
fn uploads_go_through_sqs_workers_and_s3() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fleet_name = unique_fleet("e2e");
    let mut config: AwsConfig = config(&fleet_name);
    let clients = runtime.block_on(clients(&config));
    runtime
        .block_on(resources::setup(&clients, &config))
        .unwrap();
    config.workers.image_id = Some(runtime.block_on(any_image(&clients)));
    let fleet = Ec2Fleet::new(&clients, &config);

    let web = Server::start(&[
        "web",
        "--backend",
        "aws",
        "--fleet",
        &fleet_name,
        "--result-timeout-secs",
        "240",
    ]);
    let mut mirror = Mirror::new();
    runtime.block_on(fleet.launch(2)).unwrap();
    runtime.block_on(mirror.sync(&fleet));
    assert_eq!(mirror.workers.len(), 2);

    let expected = Arc::new(expected_labels());
    let url = Arc::new(web.url("/"));
    let clients_threads: Vec<_> = (0..100)
        .map(|i| {
            let expected = Arc::clone(&expected);
            let url = Arc::clone(&url);
            std::thread::spawn(move || {
                let (file, accept) = &expected[i % expected.len()];
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(300))
                    .build()
                    .unwrap();
                let response = upload(&client, &url, "myfile", file, sample(file), false);
                let status = response.status();
                let label = response.text().unwrap();
                assert_eq!(status, 200, "{file}: {label}");
                assert!(
                    accept.contains(&label),
                    "{file}: got {label:?}, accepted {accept:?}"
                );
            })
        })
        .collect();
    for thread in clients_threads {
        thread.join().expect("client thread");
    }

    runtime.block_on(async {
        let outputs = S3Store::open(clients.s3.clone(), &config.output_bucket)
            .await
            .unwrap();
        let inputs = S3Store::open(clients.s3.clone(), &config.input_bucket)
            .await
            .unwrap();
        assert_eq!(outputs.list("").await.unwrap().len(), 100);
        assert_eq!(inputs.list("").await.unwrap().len(), 100);
        // Every request was deleted once done: nothing waits, nothing died.
        for name in [&config.requests_queue, &config.dead_letter_queue] {
            assert_eq!(
                queue(&clients, name).await.depth().await.unwrap(),
                QueueDepth::default(),
                "{name}"
            );
        }
    });

    // Scale in: terminated instances take their workers with them.
    let ids: Vec<String> = runtime
        .block_on(fleet.list())
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    runtime.block_on(fleet.terminate(&ids)).unwrap();
    runtime.block_on(mirror.sync(&fleet));
    assert!(mirror.workers.is_empty());
    drop(web);
    runtime
        .block_on(resources::teardown(&clients, &config))
        .unwrap();
}
