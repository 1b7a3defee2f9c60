//! The controller's tick on real backends (SQLite queue, local fleet
//! registry), in dry run so no worker is ever started.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Controller, ControllerSettings};
use crate::fleet::{LocalFleet, WorkerCommand};
use crate::policy::{PolicyLimits, PolicySource};
use crate::services::{LocalLayout, Services};

/// Over half a second of work in few operations: each `contains` scans the
/// whole array as one operation.
const BUSY_POLICY: &str = "
    let a = [];
    for i in 0..1000 { a.push(i); }
    let found = 0;
    for i in 0..4000 { if a.contains(-1) { found += 1; } }
    #{ desired: found, reason: \"busy\" }";

fn controller(data_dir: &std::path::Path, script: &str, deadline: Duration) -> Controller {
    let services = Services::local(data_dir).unwrap();
    let fleet = LocalFleet::open(
        &LocalLayout::new(data_dir).fleet_file(),
        WorkerCommand {
            // Dry run: never started.
            program: "imagefleet-never-started".into(),
            args: Vec::new(),
        },
    )
    .unwrap();
    let path = data_dir.join("scale.rhai");
    std::fs::write(&path, script).unwrap();
    let policy = PolicySource::open_with(
        &path,
        PolicyLimits {
            deadline,
            ..PolicyLimits::default()
        },
    )
    .unwrap();
    let settings = ControllerSettings {
        dry_run: true,
        ..ControllerSettings::default()
    };
    Controller::new(services.requests, Arc::new(fleet), policy, settings)
}

/// A policy busy for a second does not hold up other tasks, even on a
/// runtime with a single thread (the web tier shares the controller's).
#[test]
fn a_slow_policy_does_not_stall_the_async_runtime() {
    let temp = tempfile::tempdir().unwrap();
    let mut controller = controller(temp.path(), BUSY_POLICY, Duration::from_secs(10));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // A heartbeat every 10 ms; its longest gap is how long the runtime
        // was unavailable to anything else.
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let heartbeat = tokio::spawn(async move {
            let mut longest = Duration::ZERO;
            let mut last = Instant::now();
            loop {
                let stopping = tokio::select! {
                    _ = &mut stopped => true,
                    _ = tokio::time::sleep(Duration::from_millis(10)) => false,
                };
                longest = longest.max(last.elapsed());
                last = Instant::now();
                if stopping {
                    return longest;
                }
            }
        });
        tokio::task::yield_now().await;
        let started = Instant::now();
        let plan = controller.tick().await.unwrap();
        let tick = started.elapsed();
        stop.send(()).unwrap();
        let longest_gap = heartbeat.await.unwrap();
        println!("tick {tick:?}, longest heartbeat gap {longest_gap:?}");
        assert_eq!(plan.decision.reason, "busy", "{plan:?}");
        assert!(
            tick > Duration::from_millis(300),
            "not slow enough: {tick:?}"
        );
        assert!(
            longest_gap < Duration::from_millis(150),
            "the runtime stalled for {longest_gap:?} during a {tick:?} tick"
        );
    });
}

/// Past its deadline the policy is an error in `/status` and the built-in
/// default decides.
#[test]
fn a_policy_past_its_deadline_is_reported_and_replaced() {
    let temp = tempfile::tempdir().unwrap();
    let mut controller = controller(temp.path(), BUSY_POLICY, Duration::from_millis(50));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let plan = runtime.block_on(controller.tick()).unwrap();
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(
        plan.decision.reason.starts_with("last good policy"),
        "{plan:?}"
    );
    let status = controller.status().snapshot();
    let error = status.policy.error.expect("the deadline error is shown");
    assert_eq!(error.kind, crate::policy::PolicyErrorKind::Deadline);
}
