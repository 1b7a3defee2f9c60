//! Policy tests: `policies/<name>.test.toml` beside `<name>.rhai` holds
//! cases (an observation, optionally a state and history, and the count or
//! range expected) and invariants checked over simulated traces (never
//! above the cap, every job done, back at the floor within N idle seconds,
//! at most K launches per peak, a p95 wait bound). `imagefleet policy test`
//! runs them, `policy check` too, and the controller runs them on every
//! reload: a version that fails is not applied ([`PolicyTests`] is its
//! reload gate).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{simulate_with, SimOptions, Trace};
use crate::controller::plan::Limits;
use crate::policy::{
    empty_state, HistoryEntry, Observation, OnOutage, Policy, PolicyInput, ReloadGate, Tuning,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    #[serde(default, rename = "case")]
    pub cases: Vec<Case>,
    #[serde(default, rename = "invariant")]
    pub invariants: Vec<Invariant>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueCounts {
    pub visible: u64,
    pub in_flight: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InstanceCounts {
    pub running: u32,
    pub pending: u32,
    pub draining: u32,
    /// Default: the running instances without an in-flight job.
    pub idle: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseLimits {
    #[serde(default)]
    pub min: u32,
    #[serde(default = "default_max")]
    pub max: u32,
}

fn default_max() -> u32 {
    20
}

/// The settings a script sees, under the names it sees them by.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaseSettings {
    pub scale_in_delay: Option<f64>,
    pub scale_in_step: Option<u32>,
    pub on_outage: Option<String>,
    pub interval: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Expect {
    Exactly(u32),
    Range { min: Option<u32>, max: Option<u32> },
}

/// 2027-01-15 08:00 UTC, a Friday: the time a case sees unless it says.
const CASE_NOW: f64 = 1_800_000_000.0;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub queue: QueueCounts,
    #[serde(default)]
    pub instances: InstanceCounts,
    pub limits: Option<CaseLimits>,
    pub since_last_scale: Option<f64>,
    pub now: Option<f64>,
    #[serde(default)]
    pub stale_secs: f64,
    pub state: Option<toml::Table>,
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    #[serde(default)]
    pub settings: CaseSettings,
    pub expect: Expect,
    /// Keys the state must hold, with these values, after the decision.
    pub expect_state: Option<toml::Table>,
    /// Words the reason must contain.
    pub expect_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invariant {
    /// A workload trace, relative to the test file.
    pub trace: PathBuf,
    #[serde(default)]
    pub min_instances: u32,
    #[serde(default = "default_max")]
    pub max_instances: u32,
    /// The controller's settings for the run (default: its defaults).
    pub scale_in_delay: Option<f64>,
    pub scale_in_step: Option<u32>,
    pub on_outage: Option<String>,
    /// Tick on arrivals as `serve` does (default true).
    pub wake: Option<bool>,
    /// Faults on top of the trace's, as `simulate --fault` takes them.
    #[serde(default)]
    pub faults: Vec<String>,
    /// The fleet is back at its floor within this many seconds of the
    /// last job.
    pub idle_to_floor_s: Option<f64>,
    /// At most this many launches per instance of the peak.
    pub launches_per_peak: Option<f64>,
    pub max_p95_wait_s: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct TestReport {
    pub file: PathBuf,
    pub cases: usize,
    pub invariants: usize,
    /// One line per check that failed.
    pub failures: Vec<String>,
    /// One line per invariant run, with its figures.
    pub notes: Vec<String>,
}

impl TestReport {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// E.g. `5 cases and 2 invariants passed (policies/scale.test.toml)`.
    pub fn summary(&self) -> String {
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        let counts = format!(
            "{} and {}",
            plural(self.cases, "case"),
            plural(self.invariants, "invariant")
        );
        if self.ok() {
            format!("{counts} passed ({})", self.file.display())
        } else {
            format!(
                "{} of {counts} failed ({}): {}",
                self.failures.len(),
                self.file.display(),
                self.failures.join("; ")
            )
        }
    }
}

/// Where the tests of the policy at `policy` live: `NAME.test.toml` beside
/// `NAME.rhai`.
pub fn tests_path(policy: &Path) -> PathBuf {
    let stem = policy.file_stem().unwrap_or_default().to_string_lossy();
    policy.with_file_name(format!("{stem}.test.toml"))
}

pub fn load(path: &Path) -> anyhow::Result<TestFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Runs every case and invariant of `tests` on `policy`. An error means the
/// tests themselves could not be read or run (a trace missing).
pub fn run(policy: &Policy, tests: &Path) -> anyhow::Result<TestReport> {
    let file = load(tests)?;
    let base = tests.parent().unwrap_or(Path::new("."));
    let mut report = TestReport {
        file: tests.to_owned(),
        cases: file.cases.len(),
        invariants: file.invariants.len(),
        failures: Vec::new(),
        notes: Vec::new(),
    };
    for case in &file.cases {
        if let Err(why) = run_case(policy, case) {
            report.failures.push(format!("case {:?}: {why}", case.name));
        }
    }
    for invariant in &file.invariants {
        let name = invariant.trace.display().to_string();
        let (note, failures) = run_invariant(policy, invariant, base)?;
        report.notes.push(format!("{name}: {note}"));
        report.failures.extend(
            failures
                .into_iter()
                .map(|f| format!("invariant {name:?}: {f}")),
        );
    }
    Ok(report)
}

fn tuning(
    delay: Option<f64>,
    step: Option<u32>,
    on_outage: Option<&str>,
    interval: Option<f64>,
) -> Result<Tuning, String> {
    let mut tuning = Tuning::default();
    if let Some(delay) = delay {
        tuning.scale_in_delay_s = delay;
    }
    if let Some(step) = step {
        tuning.scale_in_step = step.max(1);
    }
    if let Some(mode) = on_outage {
        tuning.on_outage = OnOutage::parse(mode).ok_or_else(|| {
            format!("on_outage {mode:?}: expected hold, floor, last-plan or policy")
        })?;
    }
    if let Some(interval) = interval {
        tuning.interval_s = interval;
    }
    Ok(tuning)
}

fn run_case(policy: &Policy, case: &Case) -> Result<(), String> {
    let limits = case
        .limits
        .as_ref()
        .map_or(Limits { min: 0, max: 20 }, |l| Limits {
            min: l.min,
            max: l.max,
        });
    let i = &case.instances;
    let busy = case.queue.in_flight.min(u64::from(i.running)) as u32;
    let observation = Observation {
        visible: case.queue.visible,
        in_flight: case.queue.in_flight,
        running: i.running,
        pending: i.pending,
        draining: i.draining,
        idle: i.idle.unwrap_or(i.running - busy).min(i.running),
        min: limits.min,
        max: limits.max,
        since_last_scale_secs: case.since_last_scale,
        now: case.now.unwrap_or(CASE_NOW),
        stale_secs: case.stale_secs,
    };
    let state = match &case.state {
        Some(table) => serde_json::to_value(table).map_err(|e| format!("state: {e}"))?,
        None => empty_state(),
    };
    let s = &case.settings;
    let tuning = tuning(
        s.scale_in_delay,
        s.scale_in_step,
        s.on_outage.as_deref(),
        s.interval,
    )?;
    let answer = policy
        .evaluate(&PolicyInput {
            observation: &observation,
            state: &state,
            history: &case.history,
            tuning: &tuning,
        })
        .map_err(|e| e.to_string())?;
    let got = answer.decision.desired;
    let ok = match case.expect {
        Expect::Exactly(n) => got == n,
        Expect::Range { min, max } => {
            min.is_none_or(|min| got >= min) && max.is_none_or(|max| got <= max)
        }
    };
    if !ok {
        let wanted = match case.expect {
            Expect::Exactly(n) => n.to_string(),
            Expect::Range { min, max } => format!(
                "{}..={}",
                min.map(|n| n.to_string()).unwrap_or_default(),
                max.map(|n| n.to_string()).unwrap_or_default()
            ),
        };
        return Err(format!(
            "expected {wanted}, got {got} (reason: {:?})",
            answer.decision.reason
        ));
    }
    if let Some(words) = &case.expect_reason {
        if !answer.decision.reason.contains(words.as_str()) {
            return Err(format!(
                "the reason {:?} does not contain {words:?}",
                answer.decision.reason
            ));
        }
    }
    if let Some(expected) = &case.expect_state {
        let expected = serde_json::to_value(expected).map_err(|e| format!("expect_state: {e}"))?;
        for (key, value) in expected.as_object().into_iter().flatten() {
            let left = answer.state.get(key);
            if !same_json(left, value) {
                return Err(format!(
                    "state.{key} is {}, expected {value}",
                    left.map_or("missing".to_owned(), ToString::to_string)
                ));
            }
        }
    }
    Ok(())
}

/// Equal, with 3 and 3.0 the same number (TOML and Rhai differ on which
/// numbers are floats).
fn same_json(left: Option<&serde_json::Value>, right: &serde_json::Value) -> bool {
    match (left, right) {
        (Some(l), r) if l.is_number() && r.is_number() => l.as_f64() == r.as_f64(),
        (Some(l), r) => l == r,
        (None, _) => false,
    }
}

/// Runs one invariant's simulation; returns its figures and what failed.
fn run_invariant(
    policy: &Policy,
    invariant: &Invariant,
    base: &Path,
) -> anyhow::Result<(String, Vec<String>)> {
    let path = base.join(&invariant.trace);
    let trace = Trace::load(&path)?;
    let limits = Limits {
        min: invariant.min_instances,
        max: invariant.max_instances,
    };
    let mut options = SimOptions::new(limits);
    options.tuning = tuning(
        invariant.scale_in_delay,
        invariant.scale_in_step,
        invariant.on_outage.as_deref(),
        None,
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    options.wake = invariant.wake.unwrap_or(true);
    options.faults = trace.faults.clone();
    for fault in &invariant.faults {
        options.faults.set(fault)?;
    }
    let mut failures = Vec::new();
    let summary = match simulate_with(&trace, policy, &options) {
        Ok(summary) => summary,
        Err(e) => return Ok((String::from("the policy failed"), vec![e.to_string()])),
    };
    let note = format!(
        "peak {}, {} launches, p95 wait {:.2} s, {:.1} instance-seconds, at the floor {:.1} s after the last job",
        summary.peak_instances,
        summary.launches,
        summary.wait_p95_s,
        summary.instance_seconds,
        summary.idle_to_floor_s
    );
    if summary.peak_instances > limits.max {
        failures.push(format!(
            "{} instances, above the cap of {}",
            summary.peak_instances, limits.max
        ));
    }
    if summary.completed < summary.arrivals {
        failures.push(format!(
            "{} of {} jobs never finished",
            summary.arrivals - summary.completed,
            summary.arrivals
        ));
    }
    if let Some(limit) = invariant.idle_to_floor_s {
        if summary.idle_to_floor_s > limit {
            failures.push(format!(
                "back at {} instances {:.1} s after the last job, later than {limit} s",
                limits.min, summary.idle_to_floor_s
            ));
        }
    }
    if let Some(per_peak) = invariant.launches_per_peak {
        let peak = summary.peak_instances.max(1);
        if f64::from(summary.launches) > per_peak * f64::from(peak) {
            failures.push(format!(
                "{} launches for a peak of {peak}, more than {per_peak} per peak instance",
                summary.launches
            ));
        }
    }
    if let Some(limit) = invariant.max_p95_wait_s {
        if summary.wait_p95_s > limit {
            failures.push(format!(
                "p95 queue wait {:.2} s, above {limit} s",
                summary.wait_p95_s
            ));
        }
    }
    Ok((note, failures))
}

/// The controller's reload gate: a version must pass the tests beside it.
pub struct PolicyTests;

impl ReloadGate for PolicyTests {
    fn fingerprint(&self, policy_path: &Path) -> String {
        std::fs::read_to_string(tests_path(policy_path)).unwrap_or_default()
    }

    fn check(&self, policy_path: &Path, policy: &Policy) -> Result<Option<String>, String> {
        let tests = tests_path(policy_path);
        if !tests.exists() {
            return Ok(None);
        }
        let report = run(policy, &tests).map_err(|e| format!("{e:#}"))?;
        if report.ok() {
            Ok(Some(report.summary()))
        } else {
            Err(report.summary())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
    }

    /// Every shipped policy passes the tests shipped beside it.
    #[test]
    fn shipped_policies_pass_their_tests() {
        let mut tested = 0;
        for entry in std::fs::read_dir(policies()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rhai") {
                continue;
            }
            let tests = tests_path(&path);
            assert!(tests.exists(), "{} has no tests", path.display());
            let policy = Policy::compile(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let report = run(&policy, &tests).unwrap();
            assert!(report.ok(), "{}", report.summary());
            println!("{}\n  {}", report.summary(), report.notes.join("\n  "));
            tested += 1;
        }
        assert!(tested >= 3);
    }

    /// The checks bite: a flapping, capless or stuck policy fails them.
    #[test]
    fn broken_policies_fail_the_default_tests() {
        let tests = tests_path(&policies().join("scale.rhai"));
        for (script, words) in [
            // One per 20 messages: the cases of one per 10 fail.
            ("(queue.backlog + 19) / 20", "case"),
            // Never scales in: not back at zero.
            (
                "max(instances.active, (queue.backlog + 9) / 10)",
                "after the last job",
            ),
            // Follows the backlog with no delay at all: flaps.
            (
                "#{ desired: (queue.backlog + 9) / 10, scale_in_delay: 0, scale_in_step: 100 }",
                "launches for a peak",
            ),
        ] {
            let policy = Policy::compile(script).unwrap();
            let report = run(&policy, &tests).unwrap();
            assert!(!report.ok(), "{script} passed");
            assert!(
                report.summary().contains(words),
                "{script}: {}",
                report.summary()
            );
        }
    }

    #[test]
    fn cases_check_counts_ranges_reasons_and_state() {
        let dir = tempfile::tempdir().unwrap();
        let tests = dir.path().join("p.test.toml");
        std::fs::write(
            &tests,
            r#"
[[case]]
name = "exact"
queue = { visible = 30 }
expect = 3

[[case]]
name = "range"
queue = { visible = 30 }
expect = { min = 2, max = 4 }
expect_reason = "backlog"

[[case]]
name = "state"
state = { n = 4 }
expect = { min = 0 }
expect_state = { n = 5 }

[[case]]
name = "wrong"
queue = { visible = 30 }
expect = 7
"#,
        )
        .unwrap();
        let policy = Policy::compile(
            "state.n = (if \"n\" in state { state.n } else { 0 }) + 1;
             #{ desired: queue.backlog / 10, reason: `backlog ${queue.backlog}` }",
        )
        .unwrap();
        let report = run(&policy, &tests).unwrap();
        assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
        assert!(report.failures[0].starts_with("case \"wrong\": expected 7, got 3"));
    }

    #[test]
    fn unknown_keys_in_a_test_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let tests = dir.path().join("p.test.toml");
        std::fs::write(
            &tests,
            "[[case]]\nname = \"x\"\nexpect = 1\nqueue = { visibel = 3 }\n",
        )
        .unwrap();
        let err = run(&Policy::compile("1").unwrap(), &tests).unwrap_err();
        assert!(err.to_string().contains("visibel"), "{err}");
    }

    #[test]
    fn tests_live_beside_their_policy() {
        assert_eq!(
            tests_path(Path::new("policies/scale.rhai")),
            Path::new("policies/scale.test.toml")
        );
    }
}
