//! The autoscaler of issue 15 through the real binary: woken by an arrival
//! (in-process, and through the queue's change signal), the policy's state
//! across a reload and a restart, reloads gated by the policy's tests,
//! shadow policies, and the replay of a recorded run. The outage fallback
//! is tested on the controller itself, with a queue made to fail
//! (`controller::tests::an_observation_outage_gives_way_to_the_configured_fallback`).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{
    dry_run_server, expected_labels, get_json, queue_requests, repo_root, sample, upload,
    upload_concurrently, wait_for, worker_pids, Process, Server,
};

fn controller_status(server: &Server) -> serde_json::Value {
    get_json(&server.url("/status"))["controller"].clone()
}

/// Uploads a sample, checks its label, and returns how long that took.
fn timed_label(server: &Server) -> Duration {
    let (file, accept) = expected_labels().remove(0);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let started = Instant::now();
    let response = upload(
        &client,
        &server.url("/"),
        "myfile",
        &file,
        sample(&file),
        false,
    );
    let took = started.elapsed();
    assert_eq!(response.status(), 200);
    let label = response.text().unwrap();
    assert!(accept.contains(&label), "{file}: {label}");
    took
}

/// A minute between ticks, yet one upload to the idle default `serve` is
/// answered within seconds: the web tier wakes the controller, which
/// starts a worker at once.
#[test]
fn an_arrival_wakes_the_controller_without_waiting_for_the_tick() {
    let server = Server::start(&["serve", "--interval-ms", "60000"]);
    wait_for("the first tick", Duration::from_secs(10), || {
        (controller_status(&server)["ticks"]["total"].as_u64() >= Some(1)).then_some(())
    });
    let took = timed_label(&server);
    println!("first label from idle in {took:?}");
    assert!(
        took < Duration::from_secs(10),
        "the label took {took:?}: the controller waited for its tick"
    );
    let ticks = &controller_status(&server)["ticks"];
    assert!(ticks["woken_by_arrivals"].as_u64() >= Some(1), "{ticks}");
}

/// The same after the fleet has scaled in to zero: the tick that stopped
/// the last worker leaves the controller watching for arrivals, so the
/// next upload does not wait for the following tick either.
#[test]
fn after_a_scale_in_to_zero_an_arrival_still_wakes_the_controller() {
    let server = Server::start(&["serve", "--interval-ms", "4000", "--scale-in-delay", "0"]);
    timed_label(&server);
    wait_for("the scale-in to zero", Duration::from_secs(10), || {
        (controller_status(&server)["activity"]["terminated"].as_u64() >= Some(1)).then_some(())
    });
    let woken = controller_status(&server)["ticks"]["woken_by_arrivals"]
        .as_u64()
        .unwrap();
    let took = timed_label(&server);
    println!("first label after the scale-in in {took:?}");
    let ticks = &controller_status(&server)["ticks"];
    assert!(
        ticks["woken_by_arrivals"].as_u64() > Some(woken),
        "not woken by the arrival: {ticks}"
    );
    assert!(
        took < Duration::from_secs(2),
        "the label took {took:?}: the controller waited for its tick"
    );
}

/// A controller in its own process hears of a job queued by another
/// process (a separate web tier) through the queue's change signal, long
/// before its next tick.
#[test]
fn a_separate_controller_is_woken_by_the_queues_change_signal() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    queue_requests(&data_dir, 0);
    let controller = Process::start(
        &[
            "controller",
            "--dry-run",
            "--interval-ms",
            "60000",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        &[],
    );
    wait_for("the first plan", Duration::from_secs(10), || {
        (!controller.stdout.lock().unwrap().is_empty()).then_some(())
    });
    let queued = Instant::now();
    queue_requests(&data_dir, 1);
    wait_for("a plan for the job", Duration::from_secs(10), || {
        let lines = controller.stdout.lock().unwrap();
        lines
            .iter()
            .any(|l| l.starts_with("plan: launch 1 "))
            .then_some(())
    });
    println!("planned {:?} after the job was queued", queued.elapsed());
}

/// Counts its ticks in `state`; `version` tells which text is in charge.
fn counting_policy(version: u32) -> String {
    format!(
        "let n = if \"ticks\" in state {{ state.ticks }} else {{ 0 }};\n\
         state.ticks = n + 1;\n\
         state.version = {version};\n\
         #{{ desired: 0, reason: `version {version}, tick ${{state.ticks}}` }}\n"
    )
}

fn state_of(server: &Server) -> (u64, u64) {
    let state = &controller_status(server)["policy_state"];
    (
        state["ticks"].as_u64().unwrap_or(0),
        state["version"].as_u64().unwrap_or(0),
    )
}

/// The policy's `state` is kept across ticks, across a reload of the
/// script, and across a restart (in DATA/policy-state.json).
#[test]
fn policy_state_survives_a_reload_and_a_restart() {
    let temp = tempfile::tempdir().unwrap();
    let policy = temp.path().join("counting.rhai");
    std::fs::write(&policy, counting_policy(1)).unwrap();
    let data_dir = temp.path().join("data");
    let args = [
        "serve",
        "--dry-run",
        "--interval-ms",
        "100",
        "--policy",
        policy.to_str().unwrap(),
    ];
    let mut server = Server::start_in(&args, &data_dir);
    let before = wait_for("a few ticks counted", Duration::from_secs(10), || {
        let (ticks, version) = state_of(&server);
        (ticks >= 5 && version == 1).then_some(ticks)
    });

    std::fs::write(&policy, counting_policy(2)).unwrap();
    let reloaded = wait_for("the edited policy", Duration::from_secs(10), || {
        let (ticks, version) = state_of(&server);
        (version == 2).then_some(ticks)
    });
    assert!(
        reloaded > before,
        "the count went on across the reload: {before} then {reloaded}"
    );

    assert!(server.stop().success());
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("policy-state.json")).unwrap())
            .unwrap();
    let saved = saved["live"]["ticks"].as_u64().unwrap();
    assert!(saved >= reloaded, "saved {saved}, seen {reloaded}");

    let server = Server::start_in(&args, &data_dir);
    let restarted = wait_for("a tick after the restart", Duration::from_secs(10), || {
        let status = controller_status(&server);
        (status["ticks"]["total"].as_u64() >= Some(1)).then(|| state_of(&server).0)
    });
    assert!(
        restarted > saved,
        "the count went on across the restart: {saved} then {restarted}"
    );
}

/// An edit that breaks the policy's tests (NAME.test.toml beside it) is
/// not applied: the version before stays in charge and /status says which
/// case failed. Fixing the tests applies the edit.
#[test]
fn a_policy_failing_its_tests_is_not_applied() {
    let temp = tempfile::tempdir().unwrap();
    let policy = temp.path().join("scale.rhai");
    std::fs::copy(repo_root().join("policies/scale.rhai"), &policy).unwrap();
    let tests = temp.path().join("scale.test.toml");
    let case = |expect: u32| {
        format!(
            "[[case]]\nname = \"35 queued jobs want {expect}\"\n\
             queue = {{ visible = 35 }}\nexpect = {expect}\n"
        )
    };
    std::fs::write(&tests, case(4)).unwrap();
    let data_dir = temp.path().join("data");
    queue_requests(&data_dir, 35);
    let server = dry_run_server(&data_dir, &policy);
    let desired = |server: &Server| controller_status(server)["last_plan"]["desired"].as_u64();
    wait_for("the first plan", Duration::from_secs(10), || {
        (desired(&server) == Some(4)).then_some(())
    });
    let passed = controller_status(&server)["policy"]["tests"].clone();
    assert!(
        passed
            .as_str()
            .unwrap()
            .starts_with("1 case and 0 invariants passed"),
        "{passed}"
    );

    // One instance per 5 messages: 7 for 35, which the tests refuse.
    std::fs::write(
        &policy,
        "#{ desired: (queue.backlog + 4) / 5, reason: \"per 5\" }",
    )
    .unwrap();
    let error = wait_for(
        "the failed test in /status",
        Duration::from_secs(10),
        || {
            let error = controller_status(&server)["policy"]["error"].clone();
            (error["kind"] == "test").then_some(error)
        },
    );
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("35 queued jobs want 4"), "{error}");
    assert!(message.contains('7'), "{error}");
    std::thread::sleep(Duration::from_millis(600));
    let status = controller_status(&server);
    assert_eq!(status["last_plan"]["desired"], 4, "the old version decides");
    assert!(
        status["last_plan"]["decision"]["reason"]
            .as_str()
            .unwrap()
            .contains("one instance per 10 messages"),
        "{}",
        status["last_plan"]
    );

    // The tests now agree with the edit: it is applied.
    std::fs::write(&tests, case(7)).unwrap();
    wait_for("the edit applied", Duration::from_secs(10), || {
        (desired(&server) == Some(7)).then_some(())
    });
    assert!(controller_status(&server)["policy"]["error"].is_null());
}

/// A shadow policy is evaluated on every tick: its plan shows in /status
/// and the log, its agreement with the live policy is counted, and nothing
/// is launched for it.
#[test]
fn a_shadow_policys_plan_is_shown_and_never_applied() {
    let temp = tempfile::tempdir().unwrap();
    let live = temp.path().join("none.rhai");
    std::fs::write(&live, "#{ desired: 0, reason: \"none\" }").unwrap();
    let shadow = temp.path().join("candidate.rhai");
    std::fs::copy(repo_root().join("policies/scale.rhai"), &shadow).unwrap();
    let data_dir = temp.path().join("data");
    queue_requests(&data_dir, 35);
    // Not a dry run: a plan applied by mistake would start workers.
    let server = Server::start_in(
        &[
            "serve",
            "--max-instances",
            "20",
            "--interval-ms",
            "100",
            "--policy",
            live.to_str().unwrap(),
            "--shadow-policy",
            shadow.to_str().unwrap(),
        ],
        &data_dir,
    );
    let shadows = wait_for("a few shadow plans", Duration::from_secs(10), || {
        let shadows = controller_status(&server)["shadows"].clone();
        (shadows[0]["ticks"].as_u64() >= Some(5)).then_some(shadows)
    });
    let candidate = &shadows[0];
    assert_eq!(candidate["last_plan"]["desired"], 4, "{candidate}");
    assert_eq!(candidate["agreements"], 0, "{candidate}");
    assert!(candidate["last_plan_text"]
        .as_str()
        .unwrap()
        .starts_with("plan: launch 4 "));
    assert!(!server.logged("(not applied)").is_empty());

    let status = controller_status(&server);
    assert_eq!(status["last_plan"]["desired"], 0);
    assert_eq!(status["instances"].as_array().unwrap().len(), 0);
    assert_eq!(status["activity"]["launched"], 0, "{}", status["activity"]);
    assert!(worker_pids(&data_dir, None).is_empty());
}

/// A real run (uploads, workers started and stopped) is recorded in
/// DATA/decisions; `simulate --replay` on it with the same policy launches
/// as many instances as the run did, give or take one (the tolerance: the
/// simulated service and boot times are estimates, so a wake-up may fall
/// on the other side of a tick).
#[test]
fn replaying_a_recorded_run_reproduces_its_launches() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let mut server = Server::start_in(
        &[
            "serve",
            "--interval-ms",
            "200",
            "--max-instances",
            "2",
            "--scale-in-delay",
            "0",
        ],
        &data_dir,
    );
    // Two bursts, the fleet back at zero after each.
    for _ in 0..2 {
        upload_concurrently(&server.url("/"), 30, Duration::from_secs(60));
        wait_for("the fleet back to zero", Duration::from_secs(20), || {
            let status = controller_status(&server);
            status["instances"]
                .as_array()
                .unwrap()
                .is_empty()
                .then_some(())
        });
    }
    let launched = controller_status(&server)["activity"]["launched"]
        .as_u64()
        .unwrap();
    assert!(launched >= 2, "{launched} launched");
    assert!(server.stop().success());

    let out = Command::new(env!("CARGO_BIN_EXE_imagefleet"))
        .args(["simulate", "--policy", "policies/scale.rhai", "--replay"])
        .arg(data_dir.join("decisions"))
        .arg("--chart")
        .arg(temp.path().join("replay.svg"))
        .current_dir(repo_root())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(text.contains("workload: 60 jobs (counted)"), "{text}");
    let launches = |row: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no {row} row: {text}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let (recorded, candidate) = (launches("recorded"), launches("candidate"));
    assert_eq!(recorded, launched, "the record holds every launch");
    assert!(
        candidate.abs_diff(recorded) <= 1,
        "recorded {recorded} launches, replayed {candidate}"
    );
}
