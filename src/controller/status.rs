//! The controller's view, shared with the web tier's `GET /status`.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::shadow::ShadowStatus;
use super::wake::Cause;
use super::{Activity, ControllerSettings, Limits, Plan};
use crate::fleet::Instance;
use crate::job::unix_millis;
use crate::policy::{OnOutage, PolicyStatus, Tuning};

#[derive(Debug, Clone, Serialize)]
pub struct ControllerStatus {
    pub dry_run: bool,
    pub interval_ms: u64,
    pub limits: Limits,
    pub policy: PolicyStatus,
    pub last_plan: Option<Plan>,
    /// The plan as its one-line text.
    pub last_plan_text: Option<String>,
    pub instances: Vec<Instance>,
    /// Why the last tick could not complete, if it could not.
    pub last_error: Option<String>,
    pub updated_at_ms: u64,
    /// Counts and recent scaling actions since the start (dashboard, metrics).
    pub activity: Activity,
    /// Stabilization, outages, shadows, the policy's state, wake-ups
    /// (issue 15), flattened into the same object.
    #[serde(flatten)]
    pub autoscaler: AutoscalerStatus,
}

#[derive(Debug, Clone, Serialize)]
pub struct AutoscalerStatus {
    /// The scale-in delay and rate and the outage fallback in force.
    pub tuning: Tuning,
    /// While the queue or the fleet cannot be observed.
    pub outage: Option<OutageStatus>,
    pub shadows: Vec<ShadowStatus>,
    /// What the live policy keeps between decisions.
    pub policy_state: serde_json::Value,
    pub ticks: TickCounts,
    /// Where each tick's decision record goes.
    pub decision_log: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutageStatus {
    /// What could not be observed, and why.
    pub errors: Vec<String>,
    pub since_ms: u64,
    /// How old the counts the last tick used were.
    pub stale_secs: f64,
    /// What the controller does meanwhile.
    pub fallback: OnOutage,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TickCounts {
    pub total: u64,
    /// Ticks started by jobs arriving (in this process) and by the queue's
    /// change signal, rather than the interval.
    pub woken_by_arrivals: u64,
    pub woken_by_queue: u64,
    pub last_cause: Option<Cause>,
}

#[derive(Clone)]
pub struct SharedStatus(Arc<Mutex<ControllerStatus>>);

impl SharedStatus {
    pub fn new(settings: &ControllerSettings, policy: PolicyStatus) -> SharedStatus {
        SharedStatus(Arc::new(Mutex::new(ControllerStatus {
            dry_run: settings.dry_run,
            interval_ms: settings.interval.as_millis() as u64,
            limits: settings.limits,
            policy,
            last_plan: None,
            last_plan_text: None,
            instances: Vec::new(),
            last_error: None,
            updated_at_ms: unix_millis(),
            activity: Activity::default(),
            autoscaler: AutoscalerStatus {
                tuning: settings.tuning,
                outage: None,
                shadows: Vec::new(),
                policy_state: crate::policy::empty_state(),
                ticks: TickCounts::default(),
                decision_log: None,
            },
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ControllerStatus> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn record(&self, plan: &Plan, instances: Vec<Instance>, policy: PolicyStatus) {
        let mut guard = self.lock();
        let status = &mut *guard;
        let before = std::mem::replace(&mut status.policy, policy);
        status
            .activity
            .tick(plan, status.dry_run, &before, &status.policy);
        status.last_plan_text = Some(plan.to_string());
        status.last_plan = Some(plan.clone());
        status.instances = instances;
        status.last_error = None;
        status.updated_at_ms = unix_millis();
    }

    pub(super) fn record_error(&self, error: String) {
        let mut status = self.lock();
        status.last_error = Some(error);
        status.activity.tick_errors += 1;
        status.updated_at_ms = unix_millis();
    }

    /// Everything issue 15 added, recorded after `record` on each tick.
    pub(super) fn record_autoscaler(&self, update: impl FnOnce(&mut AutoscalerStatus)) {
        let mut status = self.lock();
        update(&mut status.autoscaler);
    }

    pub fn snapshot(&self) -> ControllerStatus {
        self.lock().clone()
    }
}
