//! The `Queue` trait on SQS (moto): delivery, visibility, deletes, the
//! dead-letter queue, FIFO groups and deduplication.

use std::time::Duration;

use crate::moto::{clients, config, unique_fleet};
use imagefleet::aws::AwsConfig;
use imagefleet::commands::aws as provision;
use imagefleet::queue::{Queue, QueueDepth, QueueError, SqsQueue};

const NO_WAIT: Duration = Duration::ZERO;
const HIDE: Duration = Duration::from_secs(60);

fn body(job: &str) -> String {
    serde_json::json!({ "job_id": job, "input_key": job }).to_string()
}

#[tokio::test]
async fn delivery_visibility_delete_and_dead_letters() {
    let fleet = unique_fleet("queue");
    let mut config = config(&fleet);
    config.max_receives = 2;
    let clients = clients(&config).await;
    provision::setup(&clients, &config).await.unwrap();
    let requests = SqsQueue::open(clients.sqs.clone(), &config.requests_queue)
        .await
        .unwrap();
    let dead = SqsQueue::open(clients.sqs.clone(), &config.dead_letter_queue)
        .await
        .unwrap();
    assert_eq!(requests.name(), config.requests_queue);

    for job in ["a", "b", "c"] {
        requests.send(&body(job)).await.unwrap();
    }
    assert_eq!(
        requests.depth().await.unwrap(),
        QueueDepth {
            visible: 3,
            in_flight: 0
        }
    );

    let mut got = requests
        .receive(10, Duration::from_secs(1), HIDE)
        .await
        .unwrap();
    got.sort_by(|x, y| x.body.cmp(&y.body));
    assert_eq!(
        got.iter().map(|m| m.body.clone()).collect::<Vec<_>>(),
        [body("a"), body("b"), body("c")]
    );
    assert!(got.iter().all(|m| m.receive_count == 1));
    // Received messages are hidden from other consumers.
    assert!(requests
        .receive(10, NO_WAIT, HIDE)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        requests.depth().await.unwrap(),
        QueueDepth {
            visible: 0,
            in_flight: 3
        }
    );

    // Zero visibility hands "a" back at once, as a second delivery.
    requests
        .extend_visibility(&got[0].receipt, Duration::ZERO)
        .await
        .unwrap();
    let again = requests
        .receive(10, Duration::from_secs(1), HIDE)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].body, body("a"));
    assert_eq!(again[0].receive_count, 2);

    // "b" is deleted alone, "c" and the redelivered "a" in one batch.
    requests.delete(&got[1].receipt).await.unwrap();
    requests
        .delete_batch(&[got[2].receipt.clone(), again[0].receipt.clone()])
        .await
        .unwrap();
    assert_eq!(requests.depth().await.unwrap(), QueueDepth::default());

    // A message received max_receives times without a delete moves to the DLQ.
    requests.send(&body("poison")).await.unwrap();
    for attempt in 1..=2 {
        let got = requests
            .receive(1, Duration::from_secs(1), HIDE)
            .await
            .unwrap();
        assert_eq!(got.len(), 1, "attempt {attempt}");
        assert_eq!(got[0].receive_count, attempt);
        requests
            .extend_visibility(&got[0].receipt, Duration::ZERO)
            .await
            .unwrap();
    }
    assert!(requests
        .receive(1, Duration::from_secs(1), HIDE)
        .await
        .unwrap()
        .is_empty());
    let dead_letters = dead
        .receive(10, Duration::from_secs(1), HIDE)
        .await
        .unwrap();
    assert_eq!(dead_letters.len(), 1);
    assert_eq!(dead_letters[0].body, body("poison"));

    // Asking for more than SQS allows is the caller's error, not an outage.
    assert!(matches!(
        requests.receive(11, NO_WAIT, HIDE).await,
        Err(QueueError::Invalid { .. })
    ));
    provision::teardown(&clients, &config).await.unwrap();
}

#[tokio::test]
async fn fifo_runs_jobs_in_parallel_and_drops_duplicates() {
    let fleet = unique_fleet("fifoq");
    crate::moto::require_endpoint();
    let config = AwsConfig::load(Some(&fleet), None, |name| {
        (name == "IMAGEFLEET_QUEUE_FIFO").then(|| "1".to_owned())
    })
    .unwrap();
    let clients = clients(&config).await;
    provision::setup(&clients, &config).await.unwrap();
    let requests = SqsQueue::open(clients.sqs.clone(), &config.requests_queue)
        .await
        .unwrap();

    for job in ["j1", "j2", "j3", "j1"] {
        requests.send(&body(job)).await.unwrap();
    }
    assert_eq!(
        requests.depth().await.unwrap().visible,
        3,
        "j1 sent twice, kept once"
    );
    // One group per job: a single receive gets every job, not one group's.
    let got = requests
        .receive(10, Duration::from_secs(1), HIDE)
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    let err = requests.send("no job id here").await.unwrap_err();
    assert!(matches!(err, QueueError::Invalid { .. }), "{err}");
    provision::teardown(&clients, &config).await.unwrap();
}

#[tokio::test]
async fn opening_a_missing_queue_says_to_run_setup() {
    let config = config(&unique_fleet("missing"));
    let clients = clients(&config).await;
    let err = SqsQueue::open(clients.sqs.clone(), &config.requests_queue)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("imagefleet aws setup"), "{err}");
}
