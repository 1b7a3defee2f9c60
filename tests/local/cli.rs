//! The policy tools from the command line: plan, policy check, simulate.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::{exit_within, repo_root};

fn imagefleet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imagefleet"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn plan_prints_the_default_policys_decision() {
    let out = imagefleet(&["plan", "--visible", "35"]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out).trim(),
        "plan: launch 4 (desired 4, running 0; visible 35, in flight 0; reason: backlog 35: one instance per 10 messages)"
    );
    let out = imagefleet(&["plan", "--visible", "500"]);
    assert!(
        stdout(&out).starts_with("plan: launch 20 (desired 20,"),
        "{}",
        stdout(&out)
    );
    let out = imagefleet(&["plan", "--running", "3"]);
    assert!(
        stdout(&out).starts_with(
            "plan: terminate 3 [running-3, running-2, running-1] (desired 0, running 3;"
        ),
        "{}",
        stdout(&out)
    );
    let out = imagefleet(&["plan", "--visible", "35", "--max-instances", "2"]);
    assert!(
        stdout(&out).starts_with("plan: launch 2 (desired 2,"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn policy_check_reports_line_and_column() {
    for file in [
        "scale.rhai",
        "backlog-per-instance.rhai",
        "business-hours-floor.rhai",
    ] {
        let out = imagefleet(&["policy", "check", &format!("policies/{file}")]);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Its tests' figures first (NAME.test.toml), then the verdict.
        assert_eq!(stdout(&out).trim().lines().last(), Some("ok"));
    }
    let temp = tempfile::tempdir().unwrap();
    let broken = temp.path().join("broken.rhai");
    std::fs::write(&broken, "let a = 1;\nlet b = (a + ;\n").unwrap();
    let out = imagefleet(&["policy", "check", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("compile error at line 2, column"),
        "{stderr}"
    );

    std::fs::write(&broken, "if queue.visible > 10 { throw \"too many\" }\n0").unwrap();
    let out = imagefleet(&["policy", "check", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("runtime error at line 1"), "{stderr}");
    assert!(stderr.contains("35 queued jobs"), "{stderr}");
}

#[test]
fn simulate_summarises_and_draws_a_chart() {
    let temp = tempfile::tempdir().unwrap();
    let chart = temp.path().join("burst.svg");
    let out = imagefleet(&[
        "simulate",
        "--trace",
        "policies/traces/burst-100.toml",
        "--chart",
        chart.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(text.contains("jobs: 100 arrived, 100 completed"), "{text}");
    // Woken by the first arrivals, the controller starts fewer instances
    // than the whole burst would ask for at the next tick, and keeps them.
    assert!(text.contains("instances: peak 6, 6 launched,"), "{text}");
    assert!(text.contains("queue wait: p50"), "{text}");
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() == 2);
}

/// A service whose workers cannot load the model refuses to start, rather
/// than taking uploads nobody will answer.
#[test]
fn serve_refuses_to_start_without_a_model() {
    let data = tempfile::tempdir().unwrap();
    let missing = data.path().join("no-such-model.toml");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_imagefleet"))
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", "1"])
        .arg("--data-dir")
        .arg(data.path())
        .arg("--model")
        .arg(&missing)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A serve that starts anyway would run until killed.
    let status = exit_within(&mut serve, Duration::from_secs(30), "serve without a model");
    assert!(!status.success());
    let mut stderr = String::new();
    serve
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("the workers could not load the model")
            && stderr.contains("no-such-model.toml"),
        "{stderr}"
    );
}
