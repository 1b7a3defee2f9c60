//! From the policy's answer to a plan, with the memory that takes: the
//! limits clamp the answer, an outage (counts that could not be refreshed)
//! gives way to the configured fallback, and scale-in is held by the
//! scale-in delay and rate. It also keeps the recent observations the
//! script sees as `history`. Pure, so the controller and the simulator run
//! the same code and the rules are unit-tested directly.

use std::collections::VecDeque;

use super::plan::{plan_to, Limits, Plan};
use super::stabilize::Stabilizer;
use crate::fleet::Instance;
use crate::policy::{Answer, HistoryEntry, Observation, OnOutage, Tuning};

#[derive(Debug, Clone)]
pub struct Decider {
    limits: Limits,
    tuning: Tuning,
    history: VecDeque<HistoryEntry>,
    history_len: usize,
    stabilizer: Stabilizer,
    /// The count of the last plan made on fresh counts (`last-plan`).
    last_fresh: Option<u32>,
}

impl Decider {
    pub fn new(limits: Limits, tuning: Tuning, history_len: usize) -> Decider {
        Decider {
            limits,
            tuning,
            history: VecDeque::with_capacity(history_len),
            history_len,
            stabilizer: Stabilizer::default(),
            last_fresh: None,
        }
    }

    pub fn tuning(&self) -> &Tuning {
        &self.tuning
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The last observations, oldest first, as the script sees them.
    pub fn history(&self) -> Vec<HistoryEntry> {
        self.history.iter().cloned().collect()
    }

    /// The plan for `answer` on `observation` at time `t` (seconds on a
    /// steady clock). `instances` are the ones the observation counted.
    pub fn plan(
        &mut self,
        t: f64,
        answer: &Answer,
        observation: Observation,
        instances: &[Instance],
    ) -> Plan {
        let tuning = self.tuning.with(&answer.overrides);
        let limits = self.limits;
        let wanted = answer
            .decision
            .desired
            .clamp(limits.min, limits.max.max(limits.min));
        let active = observation.running.saturating_add(observation.pending);
        let stale = observation.stale_secs > 0.0;
        let age = observation.stale_secs;
        let (target, held) = match (stale, tuning.on_outage) {
            (true, OnOutage::Hold) => (
                active,
                Some(format!("outage: counts {age:.0} s old; holding the fleet")),
            ),
            (true, OnOutage::Floor) => (
                limits.min,
                Some(format!(
                    "outage: counts {age:.0} s old; going to the floor of {}",
                    limits.min
                )),
            ),
            (true, OnOutage::LastPlan) => {
                let last = self.last_fresh.unwrap_or(active);
                (
                    last,
                    Some(format!(
                        "outage: counts {age:.0} s old; keeping the last plan's {last}"
                    )),
                )
            }
            (_, mode) => {
                let stabilized = self.stabilizer.stabilize(t, wanted, active, &tuning);
                let note = match (stale, mode) {
                    (true, _) => Some(format!(
                        "outage: counts {age:.0} s old; the policy decides{}",
                        stabilized
                            .note
                            .as_deref()
                            .map(|n| format!("; {n}"))
                            .unwrap_or_default()
                    )),
                    _ => stabilized.note,
                };
                (stabilized.target, note)
            }
        };
        let hold = stale && tuning.on_outage == OnOutage::Hold;
        let mut plan = plan_to(
            target,
            answer.decision.clone(),
            observation,
            instances,
            limits,
            held,
        );
        if hold {
            // "Launch nothing, stop nothing", even below the floor: the
            // counts the floor would be measured against are not trusted.
            plan.desired = active;
            plan.action = super::plan::Action::Hold;
        }
        if !stale {
            self.last_fresh = Some(plan.desired);
        }
        let o = &plan.observation;
        if self.history_len > 0 {
            if self.history.len() == self.history_len {
                self.history.pop_front();
            }
            self.history.push_back(HistoryEntry {
                t: o.now,
                visible: o.visible,
                in_flight: o.in_flight,
                running: o.running,
                pending: o.pending,
                draining: o.draining,
                idle: o.idle,
                desired: plan.desired,
                stale_secs: o.stale_secs,
            });
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::plan::{observe, Action};
    use crate::fleet::InstanceState;
    use crate::policy::{empty_state, Decision, Overrides};
    use crate::queue::QueueDepth;

    fn answer(desired: u32) -> Answer {
        Answer {
            decision: Decision {
                desired,
                reason: String::new(),
            },
            overrides: Overrides::default(),
            state: empty_state(),
        }
    }

    fn running(n: usize) -> Vec<Instance> {
        (0..n)
            .map(|i| Instance {
                id: format!("i{i}"),
                state: InstanceState::Running,
                busy: Some(false),
                launched_at_ms: i as u64,
            })
            .collect()
    }

    fn observation(instances: &[Instance], stale_secs: f64) -> Observation {
        let mut o = observe(
            QueueDepth::default(),
            instances,
            Limits { min: 1, max: 10 },
            None,
            0.0,
        );
        o.stale_secs = stale_secs;
        o
    }

    fn decider(mode: OnOutage) -> Decider {
        let tuning = Tuning {
            scale_in_delay_s: 0.0,
            scale_in_step: 100,
            on_outage: mode,
            interval_s: 2.0,
        };
        Decider::new(Limits { min: 1, max: 10 }, tuning, 3)
    }

    #[test]
    fn each_outage_fallback_does_what_it_says() {
        let fleet = running(5);
        for (mode, expected, words) in [
            (OnOutage::Hold, Action::Hold, "holding the fleet"),
            (
                OnOutage::Floor,
                Action::Terminate(vec!["i4".into(), "i3".into(), "i2".into(), "i1".into()]),
                "floor of 1",
            ),
            (
                OnOutage::LastPlan,
                Action::Terminate(vec!["i4".into(), "i3".into()]),
                "last plan's 3",
            ),
            (OnOutage::Policy, Action::Launch(4), "the policy decides"),
        ] {
            let mut d = decider(mode);
            // A fresh plan of 3, then the counts go stale.
            d.plan(0.0, &answer(3), observation(&fleet, 0.0), &fleet);
            let plan = d.plan(2.0, &answer(9), observation(&fleet, 6.0), &fleet);
            assert_eq!(plan.action, expected, "{mode}");
            let held = plan.held.unwrap_or_default();
            assert!(held.contains(words), "{mode}: {held}");
            assert!(held.contains("6 s old"), "{mode}: {held}");
        }
    }

    #[test]
    fn a_script_may_override_the_settings_for_its_answer() {
        let mut d = Decider::new(Limits { min: 0, max: 10 }, Tuning::default(), 3);
        let fleet = running(5);
        d.plan(0.0, &answer(5), observation(&fleet, 0.0), &fleet);
        // Default delay 30 s: held.
        let held = d.plan(2.0, &answer(0), observation(&fleet, 0.0), &fleet);
        assert_eq!(held.action, Action::Hold);
        let mut now = answer(0);
        now.overrides.scale_in_delay_s = Some(0.0);
        now.overrides.scale_in_step = Some(3);
        let plan = d.plan(4.0, &now, observation(&fleet, 0.0), &fleet);
        assert_eq!(plan.desired, 2);
        // The outage fallback too.
        let mut trusting = answer(7);
        trusting.overrides.on_outage = Some(OnOutage::Policy);
        let plan = d.plan(6.0, &trusting, observation(&fleet, 3.0), &fleet);
        assert_eq!(plan.action, Action::Launch(2));
    }

    #[test]
    fn history_keeps_the_last_observations_with_their_plans() {
        let mut d = decider(OnOutage::Hold);
        let fleet = running(2);
        for (i, want) in [4, 5, 6, 7].into_iter().enumerate() {
            let mut o = observation(&fleet, 0.0);
            o.now = i as f64;
            d.plan(i as f64, &answer(want), o, &fleet);
        }
        let history = d.history();
        assert_eq!(history.len(), 3);
        assert_eq!(
            history.iter().map(|h| (h.t, h.desired)).collect::<Vec<_>>(),
            [(1.0, 5), (2.0, 6), (3.0, 7)]
        );
    }
}
