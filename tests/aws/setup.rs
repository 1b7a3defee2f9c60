//! `imagefleet aws setup|status|teardown` against moto: idempotent setup
//! (no empty updates, checked on the recorded calls), the redrive policy,
//! tags and lifecycle rules, and a teardown that leaves nothing of the
//! fleet's behind and nothing else touched.

use crate::support::run_imagefleet;

use crate::moto::{clients, config, unique_fleet};
use aws_sdk_sqs::types::QueueAttributeName;
use imagefleet::aws::config::FLEET_TAG;
use imagefleet::aws::{AwsClients, AwsConfig};
use imagefleet::commands::aws::{self as provision, Outcome};

async fn queues_of(clients: &AwsClients, fleet: &str) -> Vec<String> {
    let mut urls: Vec<String> = clients
        .sqs
        .list_queues()
        .queue_name_prefix(format!("imagefleet-{fleet}-"))
        .send()
        .await
        .unwrap()
        .queue_urls()
        .to_vec();
    urls.sort();
    urls
}

async fn buckets_of(clients: &AwsClients, fleet: &str) -> Vec<String> {
    let mut names: Vec<String> = clients
        .s3
        .list_buckets()
        .send()
        .await
        .unwrap()
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_owned))
        .filter(|name| name.starts_with(&format!("imagefleet-{fleet}-")))
        .collect();
    names.sort();
    names
}

async fn redrive_policy(clients: &AwsClients, config: &AwsConfig) -> serde_json::Value {
    let url = clients
        .sqs
        .get_queue_url()
        .queue_name(&config.requests_queue)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let attributes = clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    serde_json::from_str(&attributes[&QueueAttributeName::RedrivePolicy]).unwrap()
}

#[tokio::test]
async fn setup_twice_leaves_one_of_each_resource() {
    let fleet = unique_fleet("setup");
    let config = config(&fleet);
    let clients = clients(&config).await;

    let first = provision::setup(&clients, &config).await.unwrap();
    assert_eq!(first.len(), 5, "{first:?}");
    assert!(
        first.iter().all(|s| s.outcome == Outcome::Created),
        "{first:?}"
    );
    let second = provision::setup(&clients, &config).await.unwrap();
    assert_eq!(second.len(), 5);
    assert!(
        second.iter().all(|s| s.outcome == Outcome::Existed),
        "{second:?}"
    );

    let queues = queues_of(&clients, &fleet).await;
    assert_eq!(queues.len(), 3, "{queues:?}");
    for name in [
        &config.requests_queue,
        &config.results_queue,
        &config.dead_letter_queue,
    ] {
        assert_eq!(
            queues
                .iter()
                .filter(|u| u.ends_with(&format!("/{name}")))
                .count(),
            1,
            "{name} in {queues:?}"
        );
    }
    assert_eq!(
        buckets_of(&clients, &fleet).await,
        [config.input_bucket.clone(), config.output_bucket.clone()]
    );

    let policy = redrive_policy(&clients, &config).await;
    assert!(
        policy["deadLetterTargetArn"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", config.dead_letter_queue)),
        "{policy}"
    );
    assert_eq!(
        policy["maxReceiveCount"].to_string().trim_matches('"'),
        config.max_receives.to_string()
    );

    let status = provision::status(&clients, &config).await;
    assert!(status.complete(), "{status:?}");
    assert!(status.instances.is_empty());

    let removed = provision::teardown(&clients, &config)
        .await
        .unwrap()
        .removed;
    assert_eq!(removed.len(), 5, "{removed:?}");
    assert!(queues_of(&clients, &fleet).await.is_empty());
    assert!(buckets_of(&clients, &fleet).await.is_empty());
    let status = provision::status(&clients, &config).await;
    assert!(!status.complete());
    assert!(status.queues.iter().all(|q| q.depth.is_none()));
}

#[tokio::test]
async fn fifo_setup_makes_fifo_queues_with_a_fifo_dead_letter_queue() {
    let fleet = unique_fleet("fifo");
    let config = AwsConfig::load(Some(&fleet), None, |name| {
        (name == "IMAGEFLEET_QUEUE_FIFO").then(|| "true".to_owned())
    })
    .unwrap();
    crate::moto::require_endpoint();
    let clients = clients(&config).await;
    provision::setup(&clients, &config).await.unwrap();
    provision::setup(&clients, &config).await.unwrap();
    let queues = queues_of(&clients, &fleet).await;
    assert_eq!(queues.len(), 3, "{queues:?}");
    assert_eq!(queues.iter().filter(|u| u.ends_with(".fifo")).count(), 2);
    let policy = redrive_policy(&clients, &config).await;
    assert!(policy["deadLetterTargetArn"]
        .as_str()
        .unwrap()
        .ends_with("-requests-dlq.fifo"));
    provision::teardown(&clients, &config).await.unwrap();
}

#[test]
fn the_cli_sets_up_reports_and_tears_down() {
    crate::moto::require_endpoint();
    let fleet = unique_fleet("cli");
    for run in 0..2 {
        let output = run_imagefleet(&["aws", "setup", "--fleet", &fleet], &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "setup run {run}: {stderr}");
        let verb = if run == 0 { "created" } else { "exists" };
        // One line per resource (the log lines start with a timestamp).
        let reported = stderr.lines().filter(|l| l.starts_with(verb)).count();
        assert_eq!(reported, 5, "{stderr}");
        // stdout is a config file that loads back.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aws.toml");
        std::fs::write(&file, &output.stdout).unwrap();
        let loaded = AwsConfig::load(None, Some(&file), |_| None).unwrap();
        assert_eq!(loaded.fleet, fleet);
        assert_eq!(loaded.region.as_deref(), Some("us-east-1"));
    }

    let output = run_imagefleet(&["aws", "status", "--fleet", &fleet, "--json"], &[]);
    assert!(output.status.success());
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["queues"].as_array().unwrap().len(), 3);
    assert_eq!(status["queues"][0]["depth"]["visible"], 0);

    // Without --yes and without a confirmation on stdin, nothing goes.
    let output = run_imagefleet(&["aws", "teardown", "--fleet", &fleet], &[]);
    assert!(!output.status.success());
    assert!(run_imagefleet(&["aws", "status", "--fleet", &fleet], &[])
        .status
        .success());

    let output = run_imagefleet(&["aws", "teardown", "--fleet", &fleet, "--yes"], &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 5);
    let output = run_imagefleet(&["aws", "status", "--fleet", &fleet], &[]);
    assert!(
        !output.status.success(),
        "status of a torn-down fleet is incomplete"
    );
}

/// Real SQS rejects SetQueueAttributes with an empty attribute map (moto
/// accepts it): a second setup must send none at all, and a later one
/// only what changed. Checked on the calls setup really makes.
#[tokio::test]
async fn setup_sends_only_real_changes_and_tags_everything() {
    let fleet = unique_fleet("idem");
    let config = config(&fleet);
    let log = imagefleet::aws::calls::CallLog::memory();
    let clients = AwsClients::recorded(&config, &log).await;
    provision::setup(&clients, &config).await.unwrap();
    let first = log.calls().len();
    let second = provision::setup(&clients, &config).await.unwrap();
    assert!(
        second.iter().all(|s| s.outcome == Outcome::Existed),
        "{second:?}"
    );
    let updates: Vec<_> = log.calls()[first..]
        .iter()
        .filter(|c| c.operation == "SetQueueAttributes" || c.operation.starts_with("Put"))
        .cloned()
        .collect();
    assert!(
        updates.is_empty(),
        "the second setup changed nothing: {updates:?}"
    );

    // Someone changed the visibility timeout: the next setup puts back
    // that one attribute, and nothing else.
    let url = queue_url(&clients, &config.requests_queue).await;
    clients
        .sqs
        .set_queue_attributes()
        .queue_url(&url)
        .attributes(QueueAttributeName::VisibilityTimeout, "5")
        .send()
        .await
        .unwrap();
    let before = log.calls().len();
    let third = provision::setup(&clients, &config).await.unwrap();
    let updates: Vec<serde_json::Value> = log.calls()[before..]
        .iter()
        .filter(|c| c.operation == "SetQueueAttributes")
        .map(|c| c.json().unwrap()["Attributes"].clone())
        .collect();
    assert_eq!(updates, [serde_json::json!({"VisibilityTimeout": "60"})]);
    assert!(third
        .iter()
        .any(|s| s.name == config.requests_queue && s.outcome == Outcome::Updated));
    // Never an empty map, in any of the three runs.
    for call in log
        .calls()
        .iter()
        .filter(|c| c.operation == "SetQueueAttributes")
    {
        let attributes = &call.json().unwrap()["Attributes"];
        assert!(
            attributes.as_object().is_some_and(|a| !a.is_empty()),
            "{call:?}"
        );
    }

    // Every queue and bucket carries the fleet's tag; the buckets expire
    // objects after the retention (one day by default).
    for name in [
        &config.requests_queue,
        &config.results_queue,
        &config.dead_letter_queue,
    ] {
        let url = queue_url(&clients, name).await;
        let tags = clients
            .sqs
            .list_queue_tags()
            .queue_url(url)
            .send()
            .await
            .unwrap();
        assert_eq!(
            tags.tags().and_then(|t| t.get(FLEET_TAG)),
            Some(&fleet),
            "{name}"
        );
    }
    for bucket in [&config.input_bucket, &config.output_bucket] {
        let tags = clients
            .s3
            .get_bucket_tagging()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        assert!(tags
            .tag_set()
            .iter()
            .any(|t| t.key() == FLEET_TAG && t.value() == fleet));
        let lifecycle = clients
            .s3
            .get_bucket_lifecycle_configuration()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        let days: Vec<Option<i32>> = lifecycle
            .rules()
            .iter()
            .map(|r| r.expiration().and_then(|e| e.days()))
            .collect();
        assert_eq!(days, [Some(1)], "{bucket}");
    }
    provision::teardown(&clients, &config).await.unwrap();
}

async fn queue_url(clients: &AwsClients, name: &str) -> String {
    clients
        .sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap()
}

/// Teardown trusts tags, not names: a queue or bucket that does not carry
/// the fleet's tag (someone else's, or made by hand) is refused, reported,
/// and left alone; setup tags resources an older setup left untagged.
#[tokio::test]
async fn teardown_refuses_what_is_not_tagged_as_the_fleets() {
    let fleet = unique_fleet("untagged");
    let config = config(&fleet);
    let clients = clients(&config).await;
    provision::setup(&clients, &config).await.unwrap();
    let url = queue_url(&clients, &config.results_queue).await;
    clients
        .sqs
        .untag_queue()
        .queue_url(&url)
        .tag_keys(FLEET_TAG)
        .send()
        .await
        .unwrap();
    clients
        .s3
        .delete_bucket_tagging()
        .bucket(&config.input_bucket)
        .send()
        .await
        .unwrap();

    let report = provision::teardown(&clients, &config).await.unwrap();
    assert_eq!(report.refused.len(), 2, "{report:?}");
    assert!(
        report.refused[0].contains(&config.results_queue),
        "{report:?}"
    );
    assert!(
        report.refused[1].contains(&config.input_bucket),
        "{report:?}"
    );
    assert_eq!(report.removed.len(), 3, "{report:?}");
    assert_eq!(
        queues_of(&clients, &fleet).await.len(),
        1,
        "the untagged queue stays"
    );
    assert_eq!(
        buckets_of(&clients, &fleet).await,
        std::slice::from_ref(&config.input_bucket)
    );

    // Setup claims them again (an older setup made them untagged), and
    // then teardown takes everything.
    let steps = provision::setup(&clients, &config).await.unwrap();
    assert!(steps
        .iter()
        .any(|s| s.name == config.results_queue && s.outcome == Outcome::Updated));
    let report = provision::teardown(&clients, &config).await.unwrap();
    assert!(report.refused.is_empty(), "{report:?}");
    assert!(queues_of(&clients, &fleet).await.is_empty());
    assert!(buckets_of(&clients, &fleet).await.is_empty());
}
