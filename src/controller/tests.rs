//! The controller's tick on real backends (SQLite queue, local fleet
//! registry), in dry run so no worker is ever started.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Action, Controller, ControllerSettings, Limits};
use crate::fleet::{LocalFleet, WorkerCommand};
use crate::policy::{OnOutage, PolicyLimits, PolicySource, Tuning};
use crate::queue::{HookedQueue, Queue, QueueError, QueueHooks};
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

/// Makes the real SQLite queue's depth fail on demand: an injected
/// observation outage.
#[derive(Default)]
struct Unobservable {
    failing: std::sync::atomic::AtomicBool,
}

impl QueueHooks for Unobservable {
    fn before_depth(&self, queue: &str) -> Result<(), QueueError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(QueueError::Unavailable {
                queue: queue.to_owned(),
                message: "injected outage".into(),
            });
        }
        Ok(())
    }
}

/// Says how old its counts are, so the test sees the script was told.
const STALE_AWARE: &str = "
    let desired = (queue.backlog + 9) / 10;
    #{ desired: desired, reason: `stale ${stale_secs > 0.0}, backlog ${queue.backlog}` }";

/// The queue cannot be observed for two ticks: the script is told (and
/// sees the last good counts), the configured fallback decides, /status
/// shows the outage, and all is normal once the queue answers again.
#[test]
fn an_observation_outage_gives_way_to_the_configured_fallback() {
    for (mode, desired, action) in [
        (OnOutage::Hold, 0, Action::Hold),
        (OnOutage::Floor, 1, Action::Launch(1)),
        (OnOutage::LastPlan, 4, Action::Launch(4)),
        (OnOutage::Policy, 4, Action::Launch(4)),
    ] {
        let temp = tempfile::tempdir().unwrap();
        let services = Services::local(temp.path()).unwrap();
        let queue = Arc::new(HookedQueue::new(
            services.requests.clone(),
            Unobservable::default(),
        ));
        let fleet = LocalFleet::open(
            &LocalLayout::new(temp.path()).fleet_file(),
            WorkerCommand {
                program: "imagefleet-never-started".into(),
                args: Vec::new(),
            },
        )
        .unwrap();
        let path = temp.path().join("scale.rhai");
        std::fs::write(&path, STALE_AWARE).unwrap();
        let settings = ControllerSettings {
            dry_run: true,
            limits: Limits { min: 1, max: 20 },
            tuning: Tuning {
                on_outage: mode,
                ..Tuning::default()
            },
            ..ControllerSettings::default()
        };
        let mut controller = Controller::new(
            Arc::clone(&queue) as Arc<dyn Queue>,
            Arc::new(fleet),
            PolicySource::open(&path).unwrap(),
            settings,
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            for i in 0..35 {
                services.requests.send(&format!("job {i}")).await.unwrap();
            }
            let fresh = controller.tick().await.unwrap();
            assert_eq!(fresh.desired, 4);
            assert_eq!(fresh.decision.reason, "stale false, backlog 35");

            queue
                .hooks()
                .failing
                .store(true, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            let stale = controller.tick().await.unwrap();
            assert_eq!(
                stale.decision.reason, "stale true, backlog 35",
                "{mode}: the script sees the last good counts and that they are stale"
            );
            assert!(stale.observation.stale_secs >= 0.02, "{stale:?}");
            assert_eq!(
                (stale.desired, &stale.action),
                (desired, &action),
                "{mode}: {stale}"
            );
            assert!(
                stale.held.as_deref().unwrap().starts_with("outage"),
                "{stale}"
            );
            let status = controller.status().snapshot();
            let outage = status.autoscaler.outage.expect("the outage is shown");
            assert_eq!(outage.fallback, mode);
            assert!(outage.errors[0].contains("injected outage"), "{outage:?}");
            assert!(status.last_error.unwrap().contains("observing the queue"));

            queue
                .hooks()
                .failing
                .store(false, std::sync::atomic::Ordering::SeqCst);
            let again = controller.tick().await.unwrap();
            assert_eq!(again.observation.stale_secs, 0.0);
            assert!(controller.status().snapshot().autoscaler.outage.is_none());
        });
    }
}
