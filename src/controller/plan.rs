//! From observation and decision to an action. Pure: the same inputs always
//! give the same plan, so every rule here is unit-tested directly.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::fleet::{Instance, InstanceState};
use crate::policy::{Decision, Observation};
use crate::queue::QueueDepth;

/// Bounds enforced outside the script, whatever it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub min: u32,
    pub max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { min: 0, max: 20 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", content = "instances", rename_all = "snake_case")]
pub enum Action {
    Hold,
    Launch(u32),
    Terminate(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub action: Action,
    /// The count the plan moves to: the decision clamped to the limits,
    /// then held by the scale-in delay and rate or an outage's fallback.
    pub desired: u32,
    pub decision: Decision,
    pub observation: Observation,
    /// Why `desired` is not the clamped decision, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// Counts instances by state for the policy.
pub fn observe(
    depth: QueueDepth,
    instances: &[Instance],
    limits: Limits,
    since_last_scale_secs: Option<f64>,
    now: f64,
) -> Observation {
    let count = |state| instances.iter().filter(|i| i.state == state).count() as u32;
    Observation {
        visible: depth.visible,
        in_flight: depth.in_flight,
        running: count(InstanceState::Running),
        pending: count(InstanceState::Pending),
        draining: count(InstanceState::Draining),
        idle: instances.iter().filter(|i| i.is_idle()).count() as u32,
        min: limits.min,
        max: limits.max,
        since_last_scale_secs,
        now,
        stale_secs: 0.0,
    }
}

/// What to do to move the fleet to the decision, within the limits. Draining
/// instances still count against the cap (they still run), so a scale-out
/// right after a scale-in never overshoots it.
pub fn plan(
    decision: Decision,
    observation: Observation,
    instances: &[Instance],
    limits: Limits,
) -> Plan {
    let desired = decision.desired;
    plan_to(desired, decision, observation, instances, limits, None)
}

/// What to do to move the fleet to `target` (clamped to the limits here);
/// `held` says why the target is not the decision, when it is not.
pub fn plan_to(
    target: u32,
    decision: Decision,
    observation: Observation,
    instances: &[Instance],
    limits: Limits,
    held: Option<String>,
) -> Plan {
    let desired = target.clamp(limits.min, limits.max.max(limits.min));
    let active = observation.running.saturating_add(observation.pending);
    let action = if desired > active {
        let room = limits
            .max
            .saturating_sub(active.saturating_add(observation.draining));
        match (desired - active).min(room) {
            0 => Action::Hold,
            k => Action::Launch(k),
        }
    } else if desired < active {
        let excess = (active - desired) as usize;
        Action::Terminate(
            termination_order(instances)
                .into_iter()
                .take(excess)
                .map(|i| i.id.clone())
                .collect(),
        )
    } else {
        Action::Hold
    };
    Plan {
        action,
        desired,
        decision,
        observation,
        held,
    }
}

/// Which instances to stop first: idle ones, then ones still starting, then
/// busy ones (they finish their job before stopping). Within each group the
/// newest goes first, keeping the warmest instances.
pub fn termination_order(instances: &[Instance]) -> Vec<&Instance> {
    let rank = |i: &Instance| match (i.state, i.busy) {
        (InstanceState::Running, Some(false)) => 0,
        (InstanceState::Pending, _) => 1,
        _ => 2,
    };
    let mut candidates: Vec<&Instance> = instances
        .iter()
        .filter(|i| i.state != InstanceState::Draining)
        .collect();
    candidates.sort_by(|a, b| {
        rank(a)
            .cmp(&rank(b))
            .then(b.launched_at_ms.cmp(&a.launched_at_ms))
            .then(a.id.cmp(&b.id))
    });
    candidates
}

impl fmt::Display for Plan {
    /// One line, e.g. `plan: launch 3 (desired 4, running 1; visible 35,
    /// in flight 0; reason: ...)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.action {
            Action::Hold => write!(f, "plan: hold")?,
            Action::Launch(k) => write!(f, "plan: launch {k}")?,
            Action::Terminate(ids) => {
                write!(f, "plan: terminate {} [{}]", ids.len(), ids.join(", "))?
            }
        }
        let o = &self.observation;
        write!(f, " (desired {}, running {}", self.desired, o.running)?;
        if o.pending > 0 {
            write!(f, ", pending {}", o.pending)?;
        }
        if o.draining > 0 {
            write!(f, ", draining {}", o.draining)?;
        }
        write!(f, "; visible {}, in flight {}", o.visible, o.in_flight)?;
        if !self.decision.reason.is_empty() {
            write!(f, "; reason: {}", self.decision.reason)?;
        }
        if let Some(held) = &self.held {
            write!(f, "; held: {held}")?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    fn instance(
        id: &str,
        state: InstanceState,
        busy: Option<bool>,
        launched_at_ms: u64,
    ) -> Instance {
        Instance {
            id: id.into(),
            state,
            busy,
            launched_at_ms,
        }
    }

    fn running(n: usize) -> Vec<Instance> {
        (0..n)
            .map(|i| {
                instance(
                    &format!("i{i}"),
                    InstanceState::Running,
                    Some(false),
                    i as u64,
                )
            })
            .collect()
    }

    /// The default policy end to end: observe -> decide -> plan.
    fn default_plan(visible: u64, in_flight: u64, instances: &[Instance]) -> Plan {
        let limits = Limits::default();
        let depth = QueueDepth { visible, in_flight };
        let observation = observe(depth, instances, limits, None, 0.0);
        let decision = Policy::builtin().decide(&observation).unwrap();
        plan(decision, observation, instances, limits)
    }

    #[test]
    fn thirty_five_jobs_and_no_workers_launch_four() {
        let plan = default_plan(35, 0, &[]);
        assert_eq!(plan.action, Action::Launch(4));
        assert_eq!(
            plan.to_string(),
            "plan: launch 4 (desired 4, running 0; visible 35, in flight 0; \
             reason: backlog 35: one instance per 10 messages)"
        );
    }

    #[test]
    fn five_hundred_jobs_stop_at_the_cap() {
        assert_eq!(default_plan(500, 0, &[]).action, Action::Launch(20));
        assert_eq!(default_plan(500, 0, &running(20)).action, Action::Hold);
    }

    #[test]
    fn a_drained_queue_scales_to_zero() {
        let plan = default_plan(0, 0, &running(3));
        assert_eq!(
            plan.action,
            Action::Terminate(vec!["i2".into(), "i1".into(), "i0".into()])
        );
    }

    #[test]
    fn in_flight_jobs_keep_their_workers() {
        assert_eq!(default_plan(0, 10, &running(1)).action, Action::Hold);
    }

    #[test]
    fn idle_instances_are_terminated_first() {
        let instances = vec![
            instance("busy-old", InstanceState::Running, Some(true), 1),
            instance("idle-old", InstanceState::Running, Some(false), 2),
            instance("booting", InstanceState::Pending, None, 3),
            instance("busy-new", InstanceState::Running, Some(true), 4),
            instance("idle-new", InstanceState::Running, Some(false), 5),
            instance("leaving", InstanceState::Draining, Some(true), 6),
        ];
        let order: Vec<&str> = termination_order(&instances)
            .iter()
            .map(|i| i.id.as_str())
            .collect();
        assert_eq!(
            order,
            ["idle-new", "idle-old", "booting", "busy-new", "busy-old"]
        );
        // 25 in flight -> 3 wanted of 5 active: the two idle ones go.
        let plan = default_plan(0, 25, &instances);
        assert_eq!(
            plan.action,
            Action::Terminate(vec!["idle-new".into(), "idle-old".into()])
        );
    }

    #[test]
    fn limits_clamp_whatever_the_script_says() {
        let limits = Limits { min: 2, max: 5 };
        let o = observe(QueueDepth::default(), &[], limits, None, 0.0);
        let ask = |desired| {
            plan(
                Decision {
                    desired,
                    reason: String::new(),
                },
                o.clone(),
                &[],
                limits,
            )
        };
        assert_eq!(ask(0).action, Action::Launch(2));
        assert_eq!(ask(1000).action, Action::Launch(5));
    }

    #[test]
    fn draining_instances_count_against_the_cap() {
        let limits = Limits { min: 0, max: 4 };
        let instances = vec![
            instance("a", InstanceState::Draining, Some(true), 1),
            instance("b", InstanceState::Draining, Some(true), 2),
            instance("c", InstanceState::Running, Some(true), 3),
        ];
        let o = observe(
            QueueDepth {
                visible: 100,
                in_flight: 0,
            },
            &instances,
            limits,
            None,
            0.0,
        );
        let p = plan(
            Decision {
                desired: 4,
                reason: String::new(),
            },
            o,
            &instances,
            limits,
        );
        assert_eq!(p.action, Action::Launch(1));
    }
}
