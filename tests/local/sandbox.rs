//! The policy sandbox through the real binary: `import` is refused by
//! `policy check` and shown in `/status`, and a slow policy does not delay
//! `/healthz`.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{get_json, repo_root, wait_for, Process};

/// Over a second of work in few operations: each `contains` scans the
/// whole array as one operation.
const BUSY_POLICY: &str = "
    let a = [];
    for i in 0..1000 { a.push(i); }
    let found = 0;
    for i in 0..8000 { if a.contains(-1) { found += 1; } }
    #{ desired: found, reason: \"busy\" }";

fn policy_check(file: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_imagefleet"))
        .args(["policy", "check"])
        .arg(file)
        .current_dir(repo_root())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn policy_check_refuses_import_and_slow_scripts() {
    let temp = tempfile::tempdir().unwrap();
    let module = temp.path().join("module.rhai");
    std::fs::write(&module, "export const X = 42;").unwrap();
    let policy = temp.path().join("policy.rhai");
    std::fs::write(
        &policy,
        format!(
            "let a = 1;\nimport \"{}\" as m;\nm::X",
            temp.path().join("module").display()
        ),
    )
    .unwrap();
    let (code, stderr) = policy_check(&policy);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("compile error at line 2, column 1: `import` is not allowed"),
        "{stderr}"
    );

    std::fs::write(&policy, BUSY_POLICY).unwrap();
    let started = Instant::now();
    let (code, stderr) = policy_check(&policy);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("deadline error") && stderr.contains("100 ms"),
        "{stderr}"
    );
    // Four sample states, each stopped at its deadline.
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_slow_policy_does_not_delay_healthz() {
    let temp = tempfile::tempdir().unwrap();
    let policy = temp.path().join("scale.rhai");
    std::fs::write(&policy, BUSY_POLICY).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let data_dir = temp.path().join("data");
    let listen = format!("127.0.0.1:{port}");
    // Killed when dropped, also when an assertion fails.
    let mut server = Process::start(
        &[
            "serve",
            "--dry-run",
            "--interval-ms",
            "50",
            "--policy-deadline-ms",
            "5000",
            "--policy",
            policy.to_str().unwrap(),
            "--listen",
            &listen,
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        // One runtime thread, as on a one-core machine: a policy evaluated
        // on the runtime holds up every request.
        &[("TOKIO_WORKER_THREADS", "1")],
    );
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let healthz = || {
        let started = Instant::now();
        let ok = client
            .get(format!("{base}/healthz"))
            .send()
            .is_ok_and(|r| r.status().is_success());
        ok.then(|| started.elapsed())
    };
    wait_for("the server", Duration::from_secs(60), healthz);
    // The busy policy has decided at least once: the controller is now
    // evaluating it back to back.
    wait_for("the busy policy's plan", Duration::from_secs(20), || {
        let status = get_json(&format!("{base}/status"));
        (status["controller"]["last_plan"]["decision"]["reason"] == "busy").then_some(())
    });
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        slowest = slowest.max(healthz().expect("healthz answers"));
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("slowest /healthz while the policy ran: {slowest:?}");
    assert!(slowest < Duration::from_millis(300), "{slowest:?}");

    // An edit that imports a module: refused, shown in /status with its
    // position, and the last good policy stays in charge.
    std::fs::write(&policy, "// a comment\nimport \"scale\" as s;\n1").unwrap();
    let status = wait_for("the import error", Duration::from_secs(10), || {
        let status = get_json(&format!("{base}/status"));
        status["controller"]["policy"]["error"]
            .is_object()
            .then_some(status)
    });
    let error = &status["controller"]["policy"]["error"];
    assert_eq!(error["kind"], "compile", "{error}");
    assert_eq!(error["line"], 2, "{error}");
    assert!(
        status["controller"]["policy"]["error_text"]
            .as_str()
            .unwrap()
            .contains("`import` is not allowed"),
        "{status}"
    );
    server.stop();
}
