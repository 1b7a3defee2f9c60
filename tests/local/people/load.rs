//! `imagefleet load` against `serve`: the report, the answers checked
//! against tests/samples/expected.csv, the open loop, and failures by kind.

use std::process::{Command, Output};

use crate::support::{repo_root, Server};

const SAMPLES: [&str; 3] = [
    "tests/samples/chelsea.jpg",
    "tests/samples/coffee.png",
    "tests/samples/camera.png",
];

fn load(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imagefleet"))
        .arg("load")
        .args(args)
        .args(SAMPLES)
        .current_dir(repo_root())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn load_reports_throughput_latency_errors_and_right_answers() {
    let server = Server::start(&["serve", "--workers", "2"]);
    let url = server.url("/");

    let out = load(&[
        "--url",
        &url,
        "--clients",
        "3",
        "--requests",
        "9",
        "--expected",
        "tests/samples/expected.csv",
    ]);
    let (report, progress) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{report}{progress}");
    assert!(report.starts_with("9 requests in "), "{report}");
    assert!(report.contains("(closed loop, 3 clients)"), "{report}");
    assert!(report.contains("\nthroughput  "), "{report}");
    assert!(report.contains("\nlatency ms  p50 "), "{report}");
    assert!(
        report.contains(" p90 ") && report.contains(" p99 "),
        "{report}"
    );
    assert!(report.contains("\nerrors      none\n"), "{report}");
    assert!(
        report.contains("\nexpected    9/9 answers match (100.0%)\n"),
        "{report}"
    );
    assert!(report.contains("       3  espresso\n"), "{report}");
    // Not a terminal: plain progress lines on stderr, none on stdout.
    assert!(
        progress.contains("load: 9/9 answered, 0 failed"),
        "{progress}"
    );

    // The open loop, as JSON (the fields benches/pipeline.rs reads kept).
    let out = load(&[
        "--url",
        &url,
        "--rate",
        "20",
        "--requests",
        "6",
        "--json",
        "--expected",
        "tests/samples/expected.csv",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["requests"], 6);
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["mode"], "open");
    assert_eq!(summary["rate"], 20.0);
    assert!(summary["images_per_s"].as_f64().unwrap() > 0.0);
    for quantile in ["p50", "p90", "p99", "max"] {
        assert!(
            summary["latency_ms"][quantile].as_f64().unwrap() > 0.0,
            "{quantile}"
        );
    }
    // Six arrivals 50 ms apart take at least a quarter second.
    assert!(summary["seconds"].as_f64().unwrap() >= 0.25, "{summary}");
    assert_eq!(summary["expected"]["share"], 1.0);
    assert_eq!(summary["answers"]["tripod"], 2);

    // A wrong expectation is reported as such.
    let temp = tempfile::tempdir().unwrap();
    let csv = temp.path().join("wrong.csv");
    std::fs::write(&csv, "coffee.png,tea\n").unwrap();
    let out = load(&[
        "--url",
        &url,
        "--requests",
        "3",
        "--expected",
        csv.to_str().unwrap(),
    ]);
    let report = text(&out.stdout);
    assert!(
        report.contains("expected    0/1 answers match (0.0%); 2 for images not in the CSV"),
        "{report}"
    );
    assert!(
        report.contains("coffee.png: got \"espresso\" 1 times, expected tea"),
        "{report}"
    );
}

#[test]
fn load_counts_failures_by_kind_and_fails() {
    // Nothing listens on this port.
    let port = super::free_addr();
    let out = load(&[
        "--url",
        &format!("http://{port}/"),
        "--requests",
        "2",
        "--clients",
        "1",
    ]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("errors      2 failed (connection: 2)"),
        "{report}"
    );
}
