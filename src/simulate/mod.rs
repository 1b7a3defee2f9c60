//! Replays a workload trace through the real decide and plan code on a
//! simulated clock, so a policy can be tried before it is deployed.

mod chart;
mod trace;

use std::collections::VecDeque;

use serde::Serialize;

pub use chart::svg;
pub use trace::{Phase, Trace};

use crate::controller::plan::{observe, plan, Action, Limits};
use crate::fleet::{Instance, InstanceState};
use crate::policy::{Policy, PolicyError};
use crate::queue::QueueDepth;

/// Simulation step. Small against service times of tens of milliseconds.
const STEP_S: f64 = 0.005;
/// Chart resolution.
const SAMPLE_EVERY_S: f64 = 0.25;
/// After the trace ends, keep going this long at most for the fleet to
/// drain and scale in.
const DRAIN_LIMIT_S: f64 = 900.0;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub t: f64,
    /// Waiting plus in service.
    pub backlog: u64,
    pub instances: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub arrivals: u64,
    pub completed: u64,
    /// When the last job finished, in simulated seconds.
    pub last_completion_s: f64,
    pub peak_instances: u32,
    pub instance_seconds: f64,
    pub wait_p50_s: f64,
    pub wait_p95_s: f64,
    pub wait_max_s: f64,
    /// Simulated seconds until the work was done and the fleet back at its
    /// floor.
    pub end_s: f64,
    pub launches: u32,
    pub terminations: u32,
    pub samples: Vec<Sample>,
}

struct SimInstance {
    id: String,
    state: InstanceState,
    ready_at: f64,
    busy_until: Option<f64>,
    launched_at: f64,
}

pub fn simulate(trace: &Trace, policy: &Policy, limits: Limits) -> Result<Summary, PolicyError> {
    let service_s = trace.service_time_ms / 1000.0;
    let mut queue: VecDeque<f64> = VecDeque::new();
    let mut fleet: Vec<SimInstance> = Vec::new();
    let mut waits: Vec<f64> = Vec::new();
    let mut samples = Vec::new();
    let (mut arrivals, mut completed) = (0u64, 0u64);
    let mut owed_arrivals = 0.0;
    let (mut last_completion, mut instance_seconds) = (0.0, 0.0);
    let (mut peak, mut launches, mut terminations, mut next_id) = (0u32, 0u32, 0u32, 0u32);
    let mut last_scale: Option<f64> = None;
    let (mut next_tick, mut next_sample) = (0.0, 0.0);
    let trace_end = trace.duration();
    let mut step = 0u64;
    let end = loop {
        let t = step as f64 * STEP_S;
        step += 1;

        owed_arrivals += trace.rate_at(t) * STEP_S;
        while owed_arrivals >= 1.0 {
            queue.push_back(t);
            arrivals += 1;
            owed_arrivals -= 1.0;
        }

        for instance in fleet.iter_mut() {
            if instance.state == InstanceState::Pending && t >= instance.ready_at {
                instance.state = InstanceState::Running;
            }
            if instance.busy_until.is_some_and(|until| until <= t) {
                instance.busy_until = None;
                completed += 1;
                last_completion = t;
            }
            if instance.state == InstanceState::Running && instance.busy_until.is_none() {
                if let Some(arrived) = queue.pop_front() {
                    waits.push(t - arrived);
                    instance.busy_until = Some(t + service_s);
                }
            }
        }
        fleet.retain(|i| !(i.state == InstanceState::Draining && i.busy_until.is_none()));
        instance_seconds += fleet.len() as f64 * STEP_S;

        let in_service = fleet.iter().filter(|i| i.busy_until.is_some()).count() as u64;
        if t >= next_tick {
            next_tick += trace.tick_s;
            let instances: Vec<Instance> = fleet
                .iter()
                .map(|i| Instance {
                    id: i.id.clone(),
                    state: i.state,
                    busy: Some(i.busy_until.is_some()),
                    launched_at_ms: (i.launched_at * 1000.0) as u64,
                })
                .collect();
            let depth = QueueDepth {
                visible: queue.len() as u64,
                in_flight: in_service,
            };
            let observation = observe(depth, &instances, limits, last_scale.map(|s| t - s), t);
            let decision = policy.decide(&observation)?;
            match plan(decision, observation, &instances, limits).action {
                Action::Hold => {}
                Action::Launch(count) => {
                    for _ in 0..count {
                        next_id += 1;
                        fleet.push(SimInstance {
                            id: format!("sim-{next_id}"),
                            state: InstanceState::Pending,
                            ready_at: t + trace.boot_delay_s,
                            busy_until: None,
                            launched_at: t,
                        });
                    }
                    launches += count;
                    last_scale = Some(t);
                }
                Action::Terminate(ids) => {
                    for instance in fleet.iter_mut().filter(|i| ids.contains(&i.id)) {
                        instance.state = InstanceState::Draining;
                    }
                    fleet.retain(|i| {
                        !(i.state == InstanceState::Draining && i.busy_until.is_none())
                    });
                    terminations += ids.len() as u32;
                    last_scale = Some(t);
                }
            }
        }
        peak = peak.max(fleet.len() as u32);
        if t >= next_sample {
            next_sample += SAMPLE_EVERY_S;
            samples.push(Sample {
                t,
                backlog: queue.len() as u64 + in_service,
                instances: fleet.len() as u32,
            });
        }
        let settled = queue.is_empty() && in_service == 0 && fleet.len() as u32 <= limits.min;
        if (t >= trace_end && settled) || t >= trace_end + DRAIN_LIMIT_S {
            break t;
        }
    };
    waits.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        if waits.is_empty() {
            0.0
        } else {
            waits[((waits.len() - 1) as f64 * q).round() as usize]
        }
    };
    Ok(Summary {
        arrivals,
        completed,
        last_completion_s: last_completion,
        peak_instances: peak,
        instance_seconds,
        wait_p50_s: quantile(0.5),
        wait_p95_s: quantile(0.95),
        wait_max_s: waits.last().copied().unwrap_or(0.0),
        end_s: end,
        launches,
        terminations,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn burst() -> Trace {
        Trace::parse(
            "service_time_ms = 40.0\nboot_delay_s = 1.0\ntick_s = 2.0\n\
             [[phase]]\nseconds = 1.0\nrate = 100.0\n[[phase]]\nseconds = 59.0\nrate = 0.0\n",
        )
        .unwrap()
    }

    #[test]
    fn a_burst_is_served_and_the_fleet_returns_to_zero() {
        let summary = simulate(&burst(), &Policy::builtin(), Limits::default()).unwrap();
        assert_eq!(summary.arrivals, 100);
        assert_eq!(summary.completed, 100);
        // First tick at t=0 sees an empty queue; the next at 2 s sees 100.
        assert_eq!(summary.peak_instances, 10);
        assert_eq!(summary.samples.last().unwrap().instances, 0);
        assert!(summary.wait_p95_s >= summary.wait_p50_s && summary.wait_p50_s > 2.0);
        assert!(summary.instance_seconds > 0.0);
    }

    #[test]
    fn the_cap_holds_in_simulation() {
        let summary = simulate(
            &burst(),
            &Policy::compile("1000").unwrap(),
            Limits { min: 0, max: 3 },
        )
        .unwrap();
        assert_eq!(summary.peak_instances, 3);
        assert_eq!(summary.completed, 100);
    }

    #[test]
    fn policy_errors_stop_the_simulation() {
        let err = simulate(
            &burst(),
            &Policy::compile("throw \"x\"").unwrap(),
            Limits::default(),
        )
        .unwrap_err();
        assert_eq!(err.line, Some(1));
    }

    #[test]
    fn ramps_interpolate() {
        let trace = Trace::parse(
            "service_time_ms = 1.0\nboot_delay_s = 0.0\n[[phase]]\nseconds = 10.0\nrate = 0.0\nrate_end = 10.0\n",
        )
        .unwrap();
        assert!((trace.rate_at(5.0) - 5.0).abs() < 1e-9);
        assert_eq!(trace.rate_at(11.0), 0.0);
        assert!(Trace::parse(
            "service_time_ms = -1.0\nboot_delay_s = 0.0\n[[phase]]\nseconds = 1.0\nrate = 1.0\n"
        )
        .is_err());
    }
}
