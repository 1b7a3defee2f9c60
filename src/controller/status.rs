//! The controller's view, shared with the web tier's `GET /status`.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::{Activity, ControllerSettings, Limits, Plan};
use crate::fleet::Instance;
use crate::job::unix_millis;
use crate::policy::PolicyStatus;

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

    pub fn snapshot(&self) -> ControllerStatus {
        self.lock().clone()
    }
}
