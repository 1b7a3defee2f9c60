//! Shadow policies (`--shadow-policy FILE`): candidates evaluated on every
//! tick's real observation, each with its own state, history and scale-in
//! memory, whose would-be plans are logged, shown in `GET /status`,
//! recorded and counted against the live policy's, and never applied.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use super::decide::Decider;
use super::decisions::ShadowRecord;
use super::plan::{Limits, Plan};
use crate::fleet::Instance;
use crate::policy::{Observation, PolicySource, PolicyStatus, Tuning};

pub struct Shadow {
    source: PolicySource,
    decider: Decider,
    status: ShadowStatus,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShadowStatus {
    pub path: PathBuf,
    /// Ticks evaluated, and of them those where this policy planned the
    /// same count as the live one.
    pub ticks: u64,
    pub agreements: u64,
    /// `agreements / ticks`.
    pub agreement: f64,
    /// What it would have done on the last tick.
    pub last_plan: Option<Plan>,
    pub last_plan_text: Option<String>,
    pub policy: PolicyStatus,
    pub state: Value,
}

impl Shadow {
    pub fn new(source: PolicySource, limits: Limits, tuning: Tuning, history_len: usize) -> Shadow {
        let status = ShadowStatus {
            path: source.path().to_owned(),
            ticks: 0,
            agreements: 0,
            agreement: 0.0,
            last_plan: None,
            last_plan_text: None,
            policy: source.status(),
            state: source.state().clone(),
        };
        Shadow {
            source,
            decider: Decider::new(limits, tuning, history_len),
            status,
        }
    }

    pub fn source_mut(&mut self) -> &mut PolicySource {
        &mut self.source
    }

    pub fn status(&self) -> &ShadowStatus {
        &self.status
    }

    /// What this policy would do on the tick the live policy planned
    /// `live` for. Runs the script: call it off the async runtime.
    pub fn evaluate(
        &mut self,
        t: f64,
        observation: &Observation,
        instances: &[Instance],
        live: &Plan,
    ) -> ShadowRecord {
        self.source.refresh();
        let history = self.decider.history();
        let tuning = *self.decider.tuning();
        let answer = self.source.evaluate(observation, &history, &tuning);
        let plan = self
            .decider
            .plan(t, &answer, observation.clone(), instances);
        let status = &mut self.status;
        status.ticks += 1;
        if plan.desired == live.desired {
            status.agreements += 1;
            tracing::debug!(target: "shadow", path = %status.path.display(), "{plan}");
        } else {
            tracing::info!(target: "shadow", path = %status.path.display(),
                live = live.desired, "{plan} (not applied)");
        }
        status.agreement = status.agreements as f64 / status.ticks as f64;
        status.last_plan_text = Some(plan.to_string());
        status.policy = self.source.status();
        status.state = self.source.state().clone();
        let record = ShadowRecord {
            path: status.path.clone(),
            desired: plan.desired,
            action: plan.action.clone(),
            reason: plan.decision.reason.clone(),
            error: status.policy.error_text.clone(),
        };
        status.last_plan = Some(plan);
        record
    }
}
