//! `imagefleet policy check FILE`: compile the script and try it on a few
//! representative states, so runtime errors show up before deployment too,
//! then run its tests if it has any. `imagefleet policy test FILE`: run
//! its tests (`NAME.test.toml`), as the controller does on each reload.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;

use crate::policy::{Observation, Policy, PolicyLimits};
use crate::simulate::policy_tests::{self, tests_path};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Compile a policy and try it on sample states, under the limits the
    /// controller applies; prints `ok` or the errors with line and column
    /// (exit status 1).
    Check {
        file: PathBuf,
        /// The controller's `--policy-deadline-ms`: wall-clock milliseconds
        /// one decision may take.
        #[arg(long, env = "IMAGEFLEET_POLICY_DEADLINE_MS", default_value_t = 100,
              value_parser = clap::value_parser!(u64).range(1..=60_000))]
        policy_deadline_ms: u64,
    },
    /// Run a policy's tests: the cases and invariants of NAME.test.toml
    /// beside NAME.rhai (or --tests FILE). Prints each failure and the
    /// figures of each invariant; exit status 1 if any fails.
    Test {
        file: PathBuf,
        /// The tests to run instead of the file beside the policy.
        #[arg(long)]
        tests: Option<PathBuf>,
        #[arg(long, env = "IMAGEFLEET_POLICY_DEADLINE_MS", default_value_t = 100,
              value_parser = clap::value_parser!(u64).range(1..=60_000))]
        policy_deadline_ms: u64,
    },
}

fn limits(deadline_ms: u64) -> PolicyLimits {
    PolicyLimits {
        deadline: Duration::from_millis(deadline_ms),
        ..PolicyLimits::default()
    }
}

/// Returns false (exit status 1) when the policy has errors.
pub fn run(command: PolicyCommand) -> anyhow::Result<bool> {
    match command {
        PolicyCommand::Check {
            file,
            policy_deadline_ms,
        } => check(&file, limits(policy_deadline_ms)),
        PolicyCommand::Test {
            file,
            tests,
            policy_deadline_ms,
        } => {
            let tests = tests.unwrap_or_else(|| tests_path(&file));
            anyhow::ensure!(
                tests.exists(),
                "{} has no tests: write them in {}",
                file.display(),
                tests.display()
            );
            test(&file, &tests, limits(policy_deadline_ms))
        }
    }
}

/// Runs the tests in `tests` on the policy in `file`; false when one fails.
pub fn test(file: &Path, tests: &Path, limits: PolicyLimits) -> anyhow::Result<bool> {
    match compile_or_report(file, limits)? {
        Some(policy) => run_tests(file, &policy, tests),
        None => Ok(false),
    }
}

/// The policy in `file`, or `None` after printing why it does not compile.
fn compile_or_report(file: &Path, limits: PolicyLimits) -> anyhow::Result<Option<Policy>> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    match Policy::compile_with(&text, limits) {
        Ok(policy) => Ok(Some(policy)),
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            Ok(None)
        }
    }
}

/// Runs the tests in `tests` on `policy` (read from `file`); prints the
/// report, false when a test fails.
fn run_tests(file: &Path, policy: &Policy, tests: &Path) -> anyhow::Result<bool> {
    let report = policy_tests::run(policy, tests)?;
    for note in &report.notes {
        println!("invariant {note}");
    }
    for failure in &report.failures {
        eprintln!("{}: {failure}", file.display());
    }
    if report.ok() {
        println!("{}", report.summary());
    }
    Ok(report.ok())
}

/// Returns false (exit status 1) when the policy has errors.
pub fn check(file: &Path, limits: PolicyLimits) -> anyhow::Result<bool> {
    let Some(policy) = compile_or_report(file, limits)? else {
        return Ok(false);
    };
    let mut ok = true;
    for (name, observation) in sample_states() {
        if let Err(e) = policy.decide(&observation) {
            eprintln!("{}: {e} (with {name})", file.display());
            ok = false;
        }
    }
    if !ok {
        return Ok(false);
    }
    let tests = tests_path(file);
    if tests.exists() && !run_tests(file, &policy, &tests)? {
        return Ok(false);
    }
    println!("ok");
    Ok(ok)
}

fn sample_states() -> Vec<(&'static str, Observation)> {
    let base = Observation {
        max: 20,
        now: 1_800_000_000.0,
        ..Observation::default()
    };
    vec![
        ("an empty queue and no instances", base.clone()),
        (
            "35 queued jobs and no instances",
            Observation {
                visible: 35,
                ..base.clone()
            },
        ),
        (
            "500 queued jobs and 20 busy instances just scaled",
            Observation {
                visible: 480,
                in_flight: 20,
                running: 20,
                since_last_scale_secs: Some(1.0),
                ..base.clone()
            },
        ),
        (
            "a drained queue and 5 idle instances",
            Observation {
                running: 5,
                idle: 5,
                since_last_scale_secs: Some(300.0),
                ..base
            },
        ),
    ]
}
