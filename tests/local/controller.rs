//! The controller through the real binary: hot-reloaded policy, dry run,
//! and a restart that adopts the workers of the previous run.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{
    collect_lines, dry_run_server, get_json, process_gone, queue_requests, repo_root, wait_for,
    worker_pids,
};
use imagefleet::fleet::{InstanceRegistry, InstanceState};
use imagefleet::services::LocalLayout;

fn desired(status: &serde_json::Value) -> Option<u64> {
    status["controller"]["last_plan"]["desired"].as_u64()
}

#[test]
fn policy_edits_apply_live_and_broken_edits_do_not() {
    let temp = tempfile::tempdir().unwrap();
    let policy = temp.path().join("scale.rhai");
    std::fs::copy(repo_root().join("policies/scale.rhai"), &policy).unwrap();
    let data_dir = temp.path().join("data");
    queue_requests(&data_dir, 35);
    let server = dry_run_server(&data_dir, &policy);
    let status_url = server.url("/status");

    // Dry run: the default policy wants 4 and says so, once per tick.
    wait_for("the first plan", Duration::from_secs(10), || {
        (desired(&get_json(&status_url)) == Some(4)).then_some(())
    });
    let expected = "plan: launch 4 (desired 4, running 0; visible 35, in flight 0; \
                    reason: backlog 35: one instance per 10 messages)";
    wait_for("two dry-run plan lines", Duration::from_secs(10), || {
        let lines = server.stdout.lock().unwrap();
        (lines.iter().filter(|l| l.as_str() == expected).count() >= 2).then_some(())
    });

    // An operator edit: one instance per 5 messages, followed within 2 s.
    std::fs::write(
        &policy,
        "#{ desired: (queue.backlog + 4) / 5, reason: \"per 5\" }",
    )
    .unwrap();
    let edited = std::time::Instant::now();
    wait_for("the edited policy", Duration::from_secs(2), || {
        (desired(&get_json(&status_url)) == Some(7)).then_some(())
    });
    println!("edit followed after {:?}", edited.elapsed());

    // A broken edit: the previous policy stays in charge, the error is shown.
    std::fs::write(&policy, "let backlog = queue.backlog;\nlet x = ;\n").unwrap();
    let error = wait_for(
        "the compile error in /status",
        Duration::from_secs(2),
        || {
            let status = get_json(&status_url);
            status["controller"]["policy"]["error"]
                .is_object()
                .then_some(status)
        },
    );
    let policy_status = &error["controller"]["policy"];
    assert_eq!(policy_status["error"]["kind"], "compile");
    assert_eq!(policy_status["error"]["line"], 2);
    assert!(policy_status["error"]["column"].as_u64().is_some());
    assert!(policy_status["error_text"]
        .as_str()
        .unwrap()
        .contains("line 2"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(desired(&get_json(&status_url)), Some(7));

    // An endless loop is cut off by the operation limit.
    std::fs::write(&policy, "let n = 0;\nloop { n += 1; }\n").unwrap();
    wait_for("the operation-limit error", Duration::from_secs(2), || {
        let status = get_json(&status_url);
        (status["controller"]["policy"]["error"]["kind"] == "operation_limit").then_some(())
    });
    let status = get_json(&status_url);
    assert_eq!(desired(&status), Some(7));
    assert!(status["controller"]["last_plan_text"]
        .as_str()
        .unwrap()
        .contains("last good policy"));

    // Dry run never started anything.
    assert!(status["controller"]["instances"]
        .as_array()
        .unwrap()
        .is_empty());
    let registry = InstanceRegistry::open(&LocalLayout::new(&data_dir).fleet_file()).unwrap();
    assert!(registry.all().unwrap().is_empty());
}

/// A controller that dies takes its workers down with it (they would run
/// on unsupervised and uncounted); a worker left from elsewhere on the data
/// dir is adopted by the next controller, counted against the cap, and
/// stopped when the policy wants none.
#[test]
fn workers_die_with_their_controller_and_leftovers_are_adopted() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let policy = temp.path().join("two.rhai");
    std::fs::write(&policy, "#{ desired: 2, reason: \"always two\" }").unwrap();
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_imagefleet"))
            .args(["controller", "--interval-ms", "200", "--max-instances", "3"])
            // Stop at once when the policy says so (the default waits 30 s).
            .args(["--scale-in-delay", "0"])
            .arg("--policy")
            .arg(&policy)
            .arg("--data-dir")
            .arg(&data_dir)
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let running = || worker_pids(&data_dir, Some(InstanceState::Running));

    let mut first = start();
    let _out = collect_lines(first.stdout.take().unwrap());
    let pids = wait_for("two running workers", Duration::from_secs(30), || {
        let pids = running();
        (pids.len() == 2).then_some(pids)
    });
    // Crash: no chance to clean up, yet the workers follow within seconds.
    first.kill().unwrap();
    first.wait().unwrap();
    wait_for(
        "the crashed controller's workers gone",
        Duration::from_secs(5),
        || pids.iter().all(|pid| process_gone(*pid)).then_some(()),
    );

    // A worker someone started by hand on this data dir, registered under
    // an instance id as the fleet's workers are.
    let mut leftover = Command::new(env!("CARGO_BIN_EXE_imagefleet"))
        .args(["worker", "--instance-id", "w-leftover", "--data-dir"])
        .arg(&data_dir)
        // Gone with this test process, even if it panics.
        .args(["--parent-pid", &std::process::id().to_string()])
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the leftover worker ready", Duration::from_secs(30), || {
        running().contains(&leftover.id()).then_some(())
    });
    let mut second = start();
    let _out = collect_lines(second.stdout.take().unwrap());
    let both = wait_for("two running workers again", Duration::from_secs(30), || {
        let pids = running();
        (pids.len() == 2).then_some(pids)
    });
    assert!(
        both.contains(&leftover.id()),
        "the leftover is adopted: {both:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(running().len(), 2, "the adopted worker counts: none added");

    // The policy now wants none: the adopted worker is stopped too.
    std::fs::write(&policy, "0").unwrap();
    wait_for("the workers to exit", Duration::from_secs(30), || {
        (both.iter().all(|pid| process_gone(*pid)) && running().is_empty()).then_some(())
    });
    assert!(leftover.wait().unwrap().success());
    unsafe {
        libc::kill(second.id() as i32, libc::SIGTERM);
    }
    assert!(second.wait().unwrap().success());
}
