//! Log lines: JSON with `--log-format json`, and a request id from the
//! client (or made by the web tier) through the queue into the worker's
//! lines, and back to the client in `X-Request-Id`.

use std::time::Duration;

use super::LoggedServe;
use crate::support::{sample, wait_for};

/// The JSON log lines of `serve` and its workers, parsed (every line must
/// be JSON).
fn json_lines(server: &LoggedServe) -> Vec<serde_json::Value> {
    server
        .process
        .stderr
        .lock()
        .unwrap()
        .iter()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"))
        })
        .collect()
}

/// Whether a line was written inside a span `name` with field `key` = `value`.
fn in_span(line: &serde_json::Value, name: &str, key: &str, value: &str) -> bool {
    line["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|span| span["name"] == name && span[key] == value)
}

#[test]
fn request_ids_reach_the_workers_log_lines_and_come_back() {
    let server = LoggedServe::start(
        &["--workers", "1", "--log-format", "json"],
        &[("RUST_LOG", "info,imagefleet=debug")],
    );
    let client = reqwest::blocking::Client::new();
    let part =
        reqwest::blocking::multipart::Part::bytes(sample("coffee.png")).file_name("coffee.png");
    let response = client
        .post(server.url("/"))
        .header("X-Request-Id", "trace-me-42")
        .multipart(reqwest::blocking::multipart::Form::new().part("myfile", part))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    assert_eq!(response.text().unwrap(), "espresso");

    // Without one (or with one unfit for a log line), the web tier makes one.
    for header in [None, Some("two words")] {
        let mut request = client.get(server.url("/healthz"));
        if let Some(value) = header {
            request = request.header("X-Request-Id", value);
        }
        let response = request.send().unwrap();
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert!(uuid::Uuid::try_parse(id).is_ok(), "generated id {id:?}");
    }

    // The worker, another process, logged the job inside a span naming the
    // request; the controller's lines carry their tick.
    let lines = wait_for(
        "the worker's line about the job",
        Duration::from_secs(10),
        || {
            let lines = json_lines(&server);
            lines
                .iter()
                .any(|l| {
                    in_span(l, "job", "request_id", "trace-me-42")
                        && l["fields"]["message"] == "job computed"
                })
                .then_some(lines)
        },
    );
    assert!(lines
        .iter()
        .all(|l| l["timestamp"].is_string() && l["level"].is_string()));
    assert!(
        lines.iter().any(|l| l["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["name"] == "tick")),
        "no controller line in a tick span"
    );
}
