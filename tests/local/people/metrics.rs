//! `GET /metrics` read as Prometheus text after real uploads and a policy
//! edit: every series the web tier and the in-process controller export.

use std::time::Duration;

use super::prometheus::{parse, Exposition};
use super::LoggedServe;
use crate::support::{repo_root, sample, upload, wait_for};

fn scrape(server: &LoggedServe) -> Exposition {
    let response = reqwest::blocking::get(server.url("/metrics")).unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().unwrap();
    parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn metrics_cover_uploads_results_queue_fleet_and_policy() {
    let temp = tempfile::tempdir().unwrap();
    let policy = temp.path().join("scale.rhai");
    std::fs::copy(repo_root().join("policies/scale.rhai"), &policy).unwrap();
    let server = LoggedServe::start(
        &[
            "--workers",
            "1",
            "--interval-ms",
            "200",
            "--policy",
            policy.to_str().unwrap(),
        ],
        &[],
    );
    let client = reqwest::blocking::Client::new();
    for (file, json) in [("coffee.png", false), ("camera.png", true)] {
        let response = upload(
            &client,
            &server.url("/"),
            "myfile",
            file,
            sample(file),
            json,
        );
        assert_eq!(response.status(), 200);
    }
    let response = upload(
        &client,
        &server.url("/upload"),
        "myfile",
        "notes.txt",
        b"not an image".to_vec(),
        false,
    );
    assert_eq!(response.status(), 415);
    // A broken edit: refused, counted, and shown until it is fixed.
    std::fs::write(&policy, "let x = (;\n").unwrap();

    // The sampler mirrors queue, fleet and policy once a second.
    let metrics = wait_for(
        "the fleet and the broken policy in /metrics",
        Duration::from_secs(15),
        || {
            let metrics = scrape(&server);
            (metrics.find("imagefleet_instances", &[("state", "running")]) == Some(1.0)
                && metrics.find("imagefleet_policy_error", &[]) == Some(1.0))
            .then_some(metrics)
        },
    );

    let types = |name: &str| metrics.types.get(name).map(String::as_str);
    assert_eq!(types("imagefleet_uploads_total"), Some("counter"));
    assert_eq!(
        metrics.value(
            "imagefleet_uploads_total",
            &[("route", "/"), ("status", "200")]
        ),
        2.0
    );
    assert_eq!(
        metrics.value(
            "imagefleet_uploads_total",
            &[("route", "/upload"), ("status", "415")]
        ),
        1.0
    );
    for histogram in [
        "imagefleet_upload_duration_seconds",
        "imagefleet_job_duration_seconds",
        "imagefleet_queue_wait_seconds",
        "imagefleet_inference_seconds",
    ] {
        assert_eq!(types(histogram), Some("histogram"), "{histogram}");
        assert!(
            metrics
                .find(&format!("{histogram}_bucket"), &[("le", "+Inf")])
                .is_some(),
            "{histogram}"
        );
    }
    assert_eq!(
        metrics.value(
            "imagefleet_upload_duration_seconds_count",
            &[("route", "/")]
        ),
        2.0
    );
    assert!(metrics.value("imagefleet_upload_duration_seconds_sum", &[("route", "/")]) > 0.0);
    // Observed from the results the workers (separate processes) sent back.
    assert_eq!(
        metrics.value("imagefleet_results_total", &[("outcome", "done")]),
        2.0
    );
    assert_eq!(
        metrics.value("imagefleet_inference_seconds_count", &[]),
        2.0
    );
    assert!(metrics.value("imagefleet_inference_seconds_sum", &[]) > 0.0);
    assert_eq!(
        metrics.value("imagefleet_queue_wait_seconds_count", &[]),
        2.0
    );
    assert_eq!(
        metrics.value("imagefleet_job_duration_seconds_count", &[]),
        2.0
    );

    assert_eq!(types("imagefleet_queue_messages"), Some("gauge"));
    assert_eq!(
        metrics.value("imagefleet_queue_messages", &[("state", "visible")]),
        0.0
    );
    assert_eq!(
        metrics.value("imagefleet_queue_messages", &[("state", "in_flight")]),
        0.0
    );
    assert_eq!(metrics.value("imagefleet_dead_letter_messages", &[]), 0.0);
    assert_eq!(metrics.value("imagefleet_waiting_requests", &[]), 0.0);
    for state in ["pending", "draining"] {
        assert_eq!(
            metrics.value("imagefleet_instances", &[("state", state)]),
            0.0
        );
    }
    assert_eq!(metrics.value("imagefleet_instances_desired", &[]), 1.0);
    // `--workers 1` is the controller held at one: it launched it.
    assert_eq!(types("imagefleet_scaling_actions_total"), Some("counter"));
    assert_eq!(
        metrics.value("imagefleet_scaling_actions_total", &[("action", "launch")]),
        1.0
    );
    assert_eq!(
        metrics.value(
            "imagefleet_scaling_actions_total",
            &[("action", "terminate")]
        ),
        0.0
    );
    assert_eq!(
        metrics.value("imagefleet_scaled_instances_total", &[("action", "launch")]),
        1.0
    );
    assert_eq!(metrics.value("imagefleet_policy_reloads_total", &[]), 1.0);
    assert_eq!(metrics.value("imagefleet_policy_errors_total", &[]), 1.0);
    assert_eq!(
        metrics.value("imagefleet_controller_tick_errors_total", &[]),
        0.0
    );
    for name in metrics.types.keys() {
        assert!(name.starts_with("imagefleet_"), "{name} lacks the prefix");
        assert!(
            metrics.help.get(name).is_some_and(|h| !h.is_empty()),
            "{name} has no help"
        );
    }

    // Fixed: in charge again; the count of errors stays.
    std::fs::copy(repo_root().join("policies/scale.rhai"), &policy).unwrap();
    let metrics = wait_for(
        "the fixed policy in /metrics",
        Duration::from_secs(15),
        || {
            let metrics = scrape(&server);
            (metrics.find("imagefleet_policy_error", &[]) == Some(0.0)).then_some(metrics)
        },
    );
    assert_eq!(metrics.value("imagefleet_policy_reloads_total", &[]), 2.0);
    assert_eq!(metrics.value("imagefleet_policy_errors_total", &[]), 1.0);
}
