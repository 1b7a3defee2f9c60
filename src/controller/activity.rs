//! What the controller has done since it started: counts of ticks, scaling
//! actions and policy errors, and the last few scaling actions. The status
//! keeps only the newest plan; a dashboard or a metrics scrape that looks
//! every few seconds would miss actions between its looks without these.

use std::collections::VecDeque;

use serde::Serialize;

use super::{Action, Plan};
use crate::job::unix_millis;
use crate::policy::PolicyStatus;

/// Scaling actions kept for display.
pub const RECENT_ACTIONS: usize = 20;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Activity {
    /// Ticks that completed.
    pub ticks: u64,
    /// Ticks that failed (queue or fleet unreachable, a launch refused).
    pub tick_errors: u64,
    /// Scale-out actions, and the instances they launched.
    pub launches: u64,
    pub launched: u64,
    /// Scale-in actions, and the instances they stopped.
    pub terminations: u64,
    pub terminated: u64,
    /// Times the policy file went from in charge (or another error) to
    /// this error: each broken edit counts once, however many ticks it
    /// stays broken.
    pub policy_errors: u64,
    /// The newest scaling actions, oldest first.
    pub recent: VecDeque<ScaleEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScaleEvent {
    pub at_ms: u64,
    /// `launch` or `terminate`.
    pub action: &'static str,
    pub instances: u32,
    pub desired: u32,
    pub reason: String,
}

impl Activity {
    /// Counts one completed tick: its plan (applied unless `dry_run`) and
    /// the policy's state before and after it.
    pub fn tick(
        &mut self,
        plan: &Plan,
        dry_run: bool,
        before: &PolicyStatus,
        after: &PolicyStatus,
    ) {
        self.ticks += 1;
        if after.error_text.is_some() && after.error_text != before.error_text {
            self.policy_errors += 1;
        }
        if dry_run {
            return;
        }
        let (action, instances) = match &plan.action {
            Action::Hold => return,
            Action::Launch(count) => {
                self.launches += 1;
                self.launched += u64::from(*count);
                ("launch", *count)
            }
            Action::Terminate(ids) => {
                self.terminations += 1;
                self.terminated += ids.len() as u64;
                ("terminate", ids.len() as u32)
            }
        };
        if self.recent.len() == RECENT_ACTIONS {
            self.recent.pop_front();
        }
        self.recent.push_back(ScaleEvent {
            at_ms: unix_millis(),
            action,
            instances,
            desired: plan.desired,
            reason: plan.decision.reason.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::plan::{observe, plan, Limits};
    use crate::policy::Decision;
    use crate::queue::QueueDepth;

    fn plan_for(desired: u32) -> Plan {
        let observation = observe(QueueDepth::default(), &[], Limits::default(), None, 0.0);
        let decision = Decision {
            desired,
            reason: format!("want {desired}"),
        };
        plan(decision, observation, &[], Limits::default())
    }

    fn policy(error: Option<&str>) -> PolicyStatus {
        PolicyStatus {
            path: "scale.rhai".into(),
            reloads: 0,
            error: None,
            error_text: error.map(str::to_owned),
            tests: None,
        }
    }

    #[test]
    fn actions_are_counted_and_kept_holds_are_not() {
        let mut activity = Activity::default();
        let ok = policy(None);
        activity.tick(&plan_for(3), false, &ok, &ok);
        activity.tick(&plan_for(0), false, &ok, &ok);
        assert_eq!(activity.ticks, 2);
        assert_eq!((activity.launches, activity.launched), (1, 3));
        assert_eq!(activity.recent.len(), 1);
        assert_eq!(activity.recent[0].action, "launch");
        assert_eq!(activity.recent[0].reason, "want 3");
        for _ in 0..RECENT_ACTIONS + 5 {
            activity.tick(&plan_for(1), false, &ok, &ok);
        }
        assert_eq!(activity.recent.len(), RECENT_ACTIONS);
    }

    #[test]
    fn a_dry_run_takes_no_action() {
        let mut activity = Activity::default();
        let ok = policy(None);
        activity.tick(&plan_for(3), true, &ok, &ok);
        assert_eq!(activity.launches, 0);
        assert!(activity.recent.is_empty());
    }

    #[test]
    fn a_broken_policy_counts_once_per_new_error() {
        let mut activity = Activity::default();
        let (ok, broken, other) = (policy(None), policy(Some("a")), policy(Some("b")));
        activity.tick(&plan_for(0), false, &ok, &broken);
        activity.tick(&plan_for(0), false, &broken, &broken);
        activity.tick(&plan_for(0), false, &broken, &other);
        activity.tick(&plan_for(0), false, &other, &ok);
        activity.tick(&plan_for(0), false, &ok, &broken);
        assert_eq!(activity.policy_errors, 3);
    }
}
