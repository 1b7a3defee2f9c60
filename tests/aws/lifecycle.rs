//! Job lifecycle on SQS and S3 (moto): hand-backs that do not use up an
//! attempt, failures that are answers, and the dead-letter queue's redrive,
//! through a real worker process on the AWS backend.

use std::time::Duration;

use bytes::Bytes;
use imagefleet::commands::aws as provision;
use imagefleet::job::{unix_millis, FailureKind, JobId, JobRequest, JobResult, Outcome};
use imagefleet::queue::{Queue, QueueDepth, SqsQueue};
use imagefleet::services::Services;

use crate::moto::{clients, config, unique_fleet, MotoFleet};
use crate::support::{run_imagefleet_ok, sample, Process};

/// SQS counts every receive; a hand-back is sent again as a new message, so
/// a job handed back more often than the redrive threshold stays queued.
#[tokio::test]
async fn a_released_message_comes_back_without_counting_a_receive() {
    let fleet = unique_fleet("release");
    let mut config = config(&fleet);
    config.max_receives = 2;
    let clients = clients(&config).await;
    provision::setup(&clients, &config).await.unwrap();
    let requests = SqsQueue::open(clients.sqs.clone(), &config.requests_queue)
        .await
        .unwrap();
    let body = serde_json::json!({ "job_id": "j1", "input_key": "j1" }).to_string();
    requests.send(&body).await.unwrap();
    for _ in 0..5 {
        let got = requests
            .receive(1, Duration::from_secs(2), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(got.len(), 1, "the job is still queued");
        assert_eq!(got[0].body, body);
        assert_eq!(got[0].receive_count, 1, "a release is not an attempt");
        requests.release(&got[0]).await.unwrap();
    }
    assert_eq!(requests.depth().await.unwrap().backlog(), 1);
    provision::teardown(&clients, &config).await.unwrap();
}

fn request(job_id: JobId, input_key: &str) -> String {
    serde_json::to_string(&JobRequest {
        job_id,
        input_key: input_key.to_owned(),
        file_name: "cat.jpg".into(),
        content_type: "image/jpeg".into(),
        submitted_at_ms: unix_millis(),
        attempt: 1,
        reply_to: None,
        request_id: None,
        keep_input: false,
    })
    .unwrap()
}

async fn next_result(services: &Services) -> JobResult {
    for _ in 0..60 {
        let got = services
            .results
            .receive(1, Duration::from_secs(1), Duration::from_secs(60))
            .await
            .unwrap();
        if let Some(message) = got.first() {
            services.results.delete(&message.receipt).await.unwrap();
            return serde_json::from_str(&message.body).unwrap();
        }
    }
    panic!("no result announced within a minute");
}

/// A worker on SQS/S3 answers a job whose input is gone with a failed
/// result; a dead-lettered job is listed and redriven with `imagefleet dlq`
/// and then completed.
#[test]
fn failures_are_answers_and_dead_letters_can_be_redriven_on_aws() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let moto = runtime.block_on(MotoFleet::setup("dlq"));
    let services = runtime
        .block_on(Services::aws(&moto.clients, &moto.config))
        .unwrap();
    let parent = std::process::id().to_string();
    // --parent-pid: gone with this test process, even if it panics.
    let mut worker = Process::start(
        &[
            "worker",
            "--backend",
            "aws",
            "--fleet",
            &moto.name,
            "--parent-pid",
            &parent,
        ],
        &[],
    );

    // The input is gone: a failure the client sees, at once.
    let gone = JobId::new();
    runtime
        .block_on(services.requests.send(&request(gone, &gone.input_key())))
        .unwrap();
    let result = runtime.block_on(next_result(&services));
    assert_eq!(result.id, gone);
    assert!(
        matches!(
            result.outcome,
            Outcome::Failed {
                kind: FailureKind::InputMissing,
                ..
            }
        ),
        "{result:?}"
    );

    // A job the queue's redrive set aside (as after repeated crashes),
    // with the failure answer a worker gave up with.
    let parked = JobId::new();
    runtime.block_on(async {
        services
            .inputs
            .put(
                &parked.input_key(),
                Bytes::from(sample("chelsea.jpg")),
                "image/jpeg",
            )
            .await
            .unwrap();
        let failed = JobResult {
            id: parked,
            file_name: "cat.jpg".into(),
            outcome: Outcome::Failed {
                kind: FailureKind::AttemptsExhausted,
                message: "the job failed 3 times".into(),
            },
            model: "efficientnet-lite0".into(),
            worker_id: "w".into(),
            attempt: 3,
            submitted_at_ms: 0,
            completed_at_ms: 0,
        };
        services
            .outputs
            .put(
                &parked.output_key(),
                Bytes::from(serde_json::to_string(&failed).unwrap()),
                "application/json",
            )
            .await
            .unwrap();
        services
            .dead_letters
            .send(&request(parked, &parked.input_key()))
            .await
            .unwrap();
    });
    let target = ["--backend", "aws", "--fleet", moto.name.as_str()];
    let listed = run_imagefleet_ok(&[&["dlq", "list"][..], &target].concat());
    assert!(
        listed.contains(&parked.to_string()) && listed.contains("attempts_exhausted"),
        "{listed}"
    );
    let id = parked.to_string();
    let redriven = run_imagefleet_ok(&[&["dlq", "redrive", "--id", &id][..], &target].concat());
    assert!(redriven.contains("queued again"), "{redriven}");
    let result = runtime.block_on(next_result(&services));
    assert_eq!(result.id, parked);
    assert!(matches!(result.outcome, Outcome::Done { .. }), "{result:?}");
    let stored: JobResult = serde_json::from_slice(
        &runtime
            .block_on(services.outputs.get(&parked.output_key()))
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stored, result, "the new answer replaced the failure");
    assert_eq!(
        runtime.block_on(services.dead_letters.depth()).unwrap(),
        QueueDepth::default()
    );

    assert!(worker.stop().success());
    runtime.block_on(moto.teardown());
}
