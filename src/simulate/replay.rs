//! Replay: a recorded period (the controller's decision log) turned back
//! into a workload, so a candidate policy can be tried on what really
//! happened and compared with it. The records hold, per tick, the queue
//! counts, the fleet, and (on the embedded backend) how many jobs were ever
//! sent; from those come the arrivals between two ticks (exact where `sent`
//! is known, else estimated from the backlog and the fleet's capacity), the
//! service time per image and the boot delay. The candidate runs under the
//! recorded limits and scale-in settings.

use std::fmt;
use std::path::Path;

use super::{simulate_with, Phase, SimOptions, Summary, Trace};
use crate::controller::decisions::{read_records, DecisionRecord};
use crate::controller::plan::Limits;
use crate::fleet::InstanceState;
use crate::policy::{Policy, Tuning};

/// Assumed when nothing in the record tells (measured locally, 40 ms).
const DEFAULT_SERVICE_MS: f64 = 40.0;
const DEFAULT_BOOT_S: f64 = 1.0;

/// What the record says happened.
#[derive(Debug, Clone, Default)]
pub struct Happened {
    pub launches: u32,
    pub terminations: u32,
    pub peak_instances: u32,
    pub instance_seconds: f64,
    /// Mean queue wait by Little's law: time-averaged visible messages over
    /// the arrival rate.
    pub wait_mean_s: f64,
}

/// The workload and settings estimated from a record.
#[derive(Debug, Clone)]
pub struct Estimate {
    pub trace: Trace,
    pub limits: Limits,
    pub tuning: Tuning,
    pub records: usize,
    pub span_s: f64,
    pub arrivals: u64,
    /// The arrivals are counted (`sent`), not estimated.
    pub counted: bool,
    pub service_source: &'static str,
    pub boot_source: &'static str,
    pub dry_run: bool,
    pub happened: Happened,
}

pub struct ReplayReport {
    pub log: String,
    pub skipped: usize,
    pub estimate: Estimate,
    pub candidate: Summary,
}

/// Reads the log at `path` and runs `policy` on its period.
pub fn replay(
    path: &Path,
    policy: &Policy,
    options: &SimOptions,
    service_time_ms: Option<f64>,
) -> anyhow::Result<ReplayReport> {
    let (records, skipped) = read_records(path)?;
    let estimate = estimate(&records, service_time_ms)?;
    let options = SimOptions {
        limits: estimate.limits,
        tuning: estimate.tuning,
        ..options.clone()
    };
    let candidate = simulate_with(&estimate.trace, policy, &options)
        .map_err(|e| anyhow::anyhow!("the policy failed: {e}"))?;
    Ok(ReplayReport {
        log: path.display().to_string(),
        skipped,
        estimate,
        candidate,
    })
}

struct Point<'a> {
    t: f64,
    record: &'a DecisionRecord,
    backlog: u64,
    running: f64,
    busy: f64,
    fleet: f64,
}

fn point(record: &DecisionRecord, t0: f64) -> Point<'_> {
    let o = &record.plan.observation;
    let busy = record
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::Running && i.busy == Some(true))
        .count();
    Point {
        t: record.t - t0,
        record,
        backlog: o.visible.saturating_add(o.in_flight),
        running: f64::from(o.running),
        busy: busy as f64,
        fleet: f64::from(o.running + o.pending + o.draining),
    }
}

/// The trace, settings and outcome a record describes.
pub fn estimate(
    records: &[DecisionRecord],
    service_time_ms: Option<f64>,
) -> anyhow::Result<Estimate> {
    let first = records
        .first()
        .ok_or_else(|| anyhow::anyhow!("the log holds no records"))?;
    let t0 = first.t;
    // Stale counts say nothing new about the queue.
    let points: Vec<Point> = records
        .iter()
        .filter(|r| r.outage.is_none() && r.plan.observation.stale_secs == 0.0)
        .map(|r| point(r, t0))
        .collect();
    anyhow::ensure!(
        points.len() >= 2,
        "the log holds {} record(s) with fresh counts; a replay needs two",
        points.len()
    );
    let pairs = || points.windows(2).filter(|w| w[1].t > w[0].t);
    let counted = pairs().all(|w| w[0].record.sent.is_some() && w[1].record.sent.is_some());

    // Service time: where arrivals are counted, completions are known; in
    // intervals with work waiting throughout, every running instance was
    // busy, which gives its rate directly.
    let (mut saturated_time, mut saturated_done) = (0.0, 0.0);
    let (mut busy_time, mut done) = (0.0, 0.0);
    if counted {
        for w in pairs() {
            let (a, b) = (&w[0], &w[1]);
            let dt = b.t - a.t;
            let arrived = b
                .record
                .sent
                .unwrap_or(0)
                .saturating_sub(a.record.sent.unwrap_or(0));
            let completed = (arrived as f64 + a.backlog as f64 - b.backlog as f64).max(0.0);
            let waiting =
                a.record.plan.observation.visible > 0 && b.record.plan.observation.visible > 0;
            if waiting && a.running > 0.0 && b.running > 0.0 {
                saturated_time += (a.running + b.running) / 2.0 * dt;
                saturated_done += completed;
            }
            busy_time += (a.busy + b.busy) / 2.0 * dt;
            done += completed;
        }
    }
    let (service_s, service_source) = match service_time_ms {
        Some(ms) => (ms / 1000.0, "given"),
        None if saturated_done >= 1.0 => (
            saturated_time / saturated_done,
            "estimated from saturated intervals",
        ),
        None if done >= 1.0 && busy_time > 0.0 => {
            (busy_time / done, "estimated from sampled busy workers")
        }
        None => (DEFAULT_SERVICE_MS / 1000.0, "assumed"),
    };
    let service_s = service_s.clamp(0.001, 60.0);

    let mut phases = Vec::new();
    let mut arrivals = 0u64;
    let mut happened = Happened::default();
    let mut visible_time = 0.0;
    for w in pairs() {
        let (a, b) = (&w[0], &w[1]);
        let dt = b.t - a.t;
        let arrived = if counted {
            b.record
                .sent
                .unwrap_or(0)
                .saturating_sub(a.record.sent.unwrap_or(0)) as f64
        } else {
            // What the backlog grew by, plus what the fleet could have
            // finished of what was there: a lower bound.
            let capacity = (a.running + b.running) / 2.0 * dt / service_s;
            (b.backlog as f64 - a.backlog as f64 + capacity.min(a.backlog as f64)).max(0.0)
        };
        arrivals += arrived.round() as u64;
        phases.push(Phase {
            seconds: dt,
            rate: arrived / dt,
            rate_end: None,
        });
        happened.instance_seconds += (a.fleet + b.fleet) / 2.0 * dt;
        visible_time +=
            (a.record.plan.observation.visible + b.record.plan.observation.visible) as f64 / 2.0
                * dt;
    }
    for record in records {
        happened.launches += record.launches();
        happened.terminations += record.terminations();
        let o = &record.plan.observation;
        happened.peak_instances = happened
            .peak_instances
            .max(o.running + o.pending + o.draining);
    }
    if arrivals > 0 {
        happened.wait_mean_s = visible_time / arrivals as f64;
    }

    let (boot_s, boot_source) = match boot_delay(records) {
        Some(boot) => (boot, "estimated from launches"),
        None => (DEFAULT_BOOT_S, "assumed"),
    };
    let mut intervals: Vec<f64> = records.iter().map(|r| r.interval_s).collect();
    intervals.sort_by(f64::total_cmp);
    let tick_s = intervals[intervals.len() / 2].max(0.05);
    let span_s = points.last().map_or(0.0, |p| p.t);
    anyhow::ensure!(
        span_s <= 86_400.0,
        "the log covers {span_s:.0} s; replay at most a day (pass one file of the log)"
    );
    let mut trace = Trace::from_phases(
        format!("replay of {} records", records.len()),
        service_s * 1000.0,
        boot_s,
        tick_s,
        phases,
    )?;
    let start = &points[0];
    trace.initial_backlog = start.backlog;
    trace.initial_instances =
        start.record.plan.observation.running + start.record.plan.observation.pending;
    Ok(Estimate {
        trace,
        limits: first.limits,
        tuning: first.tuning,
        records: records.len(),
        span_s,
        arrivals,
        counted,
        service_source,
        boot_source,
        dry_run: records.iter().any(|r| r.dry_run),
        happened,
    })
}

/// The median time from a launch to the instance's first appearance as
/// running, taking the midpoint between the last record that saw it
/// starting (or the launch) and the first that saw it running.
fn boot_delay(records: &[DecisionRecord]) -> Option<f64> {
    let mut boots = Vec::new();
    for (i, record) in records.iter().enumerate() {
        for id in &record.launched {
            let mut last_not_ready = record.t;
            for later in &records[i + 1..] {
                match later
                    .instances
                    .iter()
                    .find(|x| &x.id == id)
                    .map(|x| x.state)
                {
                    Some(InstanceState::Running) => {
                        boots.push(((last_not_ready + later.t) / 2.0 - record.t).max(0.0));
                        break;
                    }
                    Some(InstanceState::Draining) => break,
                    _ => last_not_ready = later.t,
                }
            }
        }
    }
    if boots.is_empty() {
        return None;
    }
    boots.sort_by(f64::total_cmp);
    Some(boots[boots.len() / 2])
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.estimate;
        let c = &self.candidate;
        let h = &e.happened;
        writeln!(
            f,
            "replay: {} ({} records over {:.1} s{}{})",
            self.log,
            e.records,
            e.span_s,
            if self.skipped > 0 {
                format!(", {} unreadable lines skipped", self.skipped)
            } else {
                String::new()
            },
            if e.dry_run {
                "; a dry run: the launches were planned, not made"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "workload: {} jobs ({}); service {:.1} ms per image ({}); boot {:.2} s ({}); tick {} s",
            e.arrivals,
            if e.counted {
                "counted"
            } else {
                "estimated, a lower bound"
            },
            e.trace.service_time_ms,
            e.service_source,
            e.trace.boot_delay_s,
            e.boot_source,
            e.trace.tick_s
        )?;
        writeln!(
            f,
            "settings: instances {}..{}, scale-in delay {} s, step {}, on outage {}",
            e.limits.min,
            e.limits.max,
            e.tuning.scale_in_delay_s,
            e.tuning.scale_in_step,
            e.tuning.on_outage
        )?;
        writeln!(
            f,
            "{:<12} {:>8} {:>11} {:>5} {:>11} {:>10} {:>9}",
            "", "launches", "terminated", "peak", "instance-s", "wait mean", "wait p95"
        )?;
        writeln!(
            f,
            "{:<12} {:>8} {:>11} {:>5} {:>11.1} {:>9.2}s {:>9}",
            "recorded",
            h.launches,
            h.terminations,
            h.peak_instances,
            h.instance_seconds,
            h.wait_mean_s,
            "-"
        )?;
        writeln!(
            f,
            "{:<12} {:>8} {:>11} {:>5} {:>11.1} {:>9.2}s {:>8.2}s",
            "candidate",
            c.launches,
            c.terminations,
            c.peak_instances,
            c.instance_seconds,
            c.wait_mean_s,
            c.wait_p95_s
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::plan::Limits;

    /// A trace the simulator records, replayed: the launches come back
    /// within the stated tolerance (max(2, 25 %)), the arrivals exactly.
    #[test]
    fn a_recorded_run_replays_to_the_same_launches() {
        let trace = Trace::parse(
            "service_time_ms = 40.0\nboot_delay_s = 0.5\ntick_s = 2.0\n\
             [[phase]]\nseconds = 30.0\nrate = 0.0\nrate_end = 150.0\n\
             [[phase]]\nseconds = 20.0\nrate = 150.0\n\
             [[phase]]\nseconds = 40.0\nrate = 5.0\n\
             [[phase]]\nseconds = 30.0\nrate = 0.0\n",
        )
        .unwrap();
        for script in [
            crate::policy::DEFAULT_POLICY,
            include_str!("../../policies/backlog-per-instance.rhai"),
        ] {
            let policy = Policy::compile(script).unwrap();
            let mut options = SimOptions::new(Limits::default());
            options.record = true;
            let recorded = simulate_with(&trace, &policy, &options).unwrap();
            let estimate = estimate(&recorded.records, None).unwrap();
            assert!(estimate.counted);
            assert_eq!(estimate.arrivals, recorded.arrivals);
            assert_eq!(estimate.happened.launches, recorded.launches);
            let service = estimate.trace.service_time_ms;
            assert!((30.0..=50.0).contains(&service), "service {service} ms");
            let boot = estimate.trace.boot_delay_s;
            assert!(boot <= 2.0, "boot {boot} s");
            options.record = false;
            let replayed = simulate_with(&estimate.trace, &policy, &options).unwrap();
            let tolerance = (recorded.launches / 4).max(2);
            assert!(
                recorded.launches.abs_diff(replayed.launches) <= tolerance,
                "recorded {} launches, replayed {}",
                recorded.launches,
                replayed.launches
            );
            println!(
                "recorded {} launches, replayed {}; service {service:.1} ms, boot {boot:.2} s",
                recorded.launches, replayed.launches
            );
        }
    }
}
