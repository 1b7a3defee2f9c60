//! Several web tiers on one fleet (`web --backend aws` replicas behind a
//! load balancer): each has its own reply queue, named in its jobs, so no
//! replica takes another's results. Queues of replicas that died are
//! removed by `--reap` (once their heartbeat is old) and by teardown.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::moto::MotoFleet;
use crate::support::{expected_labels, repo_root, sample, upload, wait_for, Process, Server};
use imagefleet::aws::AwsClients;
use imagefleet::queue::reply::HEARTBEAT_TAG;
use imagefleet::queue::SqsQueue;

fn reply_queues(
    runtime: &tokio::runtime::Runtime,
    clients: &AwsClients,
    prefix: &str,
) -> Vec<String> {
    runtime
        .block_on(SqsQueue::list_names(&clients.sqs, prefix))
        .unwrap()
}

fn web(fleet: &str, replica: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "web",
        "--backend",
        "aws",
        "--fleet",
        fleet,
        "--replica",
        replica,
        // A result routed to the wrong replica would be found in the
        // output bucket only after this: far beyond the 3 s asked for.
        "--result-timeout-secs",
        "10",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

#[test]
fn two_replicas_and_one_worker_answer_every_upload_within_three_seconds() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let moto = runtime.block_on(MotoFleet::setup("replicas"));
    let prefix = moto.config.reply_queue_prefix();
    let replicas = [web(&moto.name, "a", &[]), web(&moto.name, "b", &[])];
    assert_eq!(
        reply_queues(&runtime, &moto.clients, &prefix),
        [moto.config.reply_queue("a"), moto.config.reply_queue("b")]
    );
    let model = repo_root().join("models/model.toml");
    let mut worker = Process::start(
        &["worker", "--backend", "aws", "--fleet", &moto.name],
        &[("IMAGEFLEET_MODEL", model.to_str().unwrap())],
    );

    // 40 uploads from 8 clients, 5 each in turn, alternating replicas.
    let expected = Arc::new(expected_labels());
    let urls: Arc<Vec<String>> = Arc::new(replicas.iter().map(|r| r.url("/")).collect());
    let took = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let (expected, urls, took) = (expected.clone(), urls.clone(), took.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                for n in 0..5 {
                    let i = client * 5 + n;
                    let (file, accept) = &expected[i % expected.len()];
                    let url = &urls[i % 2];
                    let started = Instant::now();
                    let response = upload(&http, url, "myfile", file, sample(file), false);
                    let status = response.status();
                    let label = response.text().unwrap();
                    let elapsed = started.elapsed();
                    assert_eq!(status, 200, "{file} via {url}: {label}");
                    assert!(accept.contains(&label), "{file}: got {label:?}");
                    took.lock().unwrap().push((elapsed, url.clone()));
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client thread");
    }
    let took = took.lock().unwrap().clone();
    assert_eq!(took.len(), 40);
    let slowest = took.iter().map(|(t, _)| *t).max().unwrap();
    println!("40 uploads over two replicas, slowest {slowest:?}");
    assert!(
        took.iter().all(|(t, _)| *t < Duration::from_secs(3)),
        "every upload answered within 3 s: {took:?}"
    );

    // Each replica deletes its queue when it stops.
    assert!(worker.stop().success());
    for mut replica in replicas {
        assert!(replica.stop().success());
    }
    assert!(reply_queues(&runtime, &moto.clients, &prefix).is_empty());
    runtime.block_on(moto.teardown());
}

#[test]
fn queues_of_dead_replicas_are_reaped_once_stale_and_torn_down() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let moto = runtime.block_on(MotoFleet::setup("reap"));
    let prefix = moto.config.reply_queue_prefix();
    // A replica dies without deleting its queue.
    let mut dead = web(&moto.name, "dead", &[]);
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    let dead_queue = moto.config.reply_queue("dead");
    // Its heartbeat is fresh: another replica's --reap leaves it (it might
    // be alive).
    let live = web(&moto.name, "live", &["--reap"]);
    assert_eq!(
        reply_queues(&runtime, &moto.clients, &prefix),
        [dead_queue.clone(), moto.config.reply_queue("live")]
    );
    drop(live);
    // Ten minutes later, with no heartbeat since, it is stale.
    runtime.block_on(async {
        let queue = SqsQueue::open(moto.clients.sqs.clone(), &dead_queue)
            .await
            .unwrap();
        let old = imagefleet::job::unix_millis() / 1000 - 11 * 60;
        queue.tag(HEARTBEAT_TAG, &old.to_string()).await.unwrap();
    });
    let live = web(&moto.name, "live", &["--reap"]);
    wait_for("the stale queue to go", Duration::from_secs(10), || {
        (reply_queues(&runtime, &moto.clients, &prefix) == [moto.config.reply_queue("live")])
            .then_some(())
    });
    // A replica that dies now leaves its queue to teardown.
    let mut live = live;
    live.child.kill().unwrap();
    live.child.wait().unwrap();
    let report = runtime
        .block_on(imagefleet::commands::aws::teardown(
            &moto.clients,
            &moto.config,
        ))
        .unwrap();
    assert!(
        report
            .removed
            .contains(&format!("queue {}", moto.config.reply_queue("live"))),
        "{report:?}"
    );
    assert!(reply_queues(&runtime, &moto.clients, &prefix).is_empty());
}
