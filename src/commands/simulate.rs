//! `imagefleet simulate`: a policy against a workload trace, on a simulated
//! clock, with a timeline summary and a chart.

use std::path::PathBuf;

use clap::Args;

use super::args::{LimitArgs, PolicyArgs};
use crate::controller::DEFAULT_MAX_INSTANCES;
use crate::policy::Policy;
use crate::simulate::{simulate, svg, Trace};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Workload trace (TOML), e.g. policies/traces/burst-100.toml.
    #[arg(long)]
    pub trace: PathBuf,
    /// Where to write the chart of backlog and instances (SVG).
    #[arg(long, default_value = "simulation.svg")]
    pub chart: PathBuf,
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let policy_path = args.policy.path();
    let script = std::fs::read_to_string(&policy_path)
        .map_err(|e| anyhow::anyhow!("cannot read policy {}: {e}", policy_path.display()))?;
    let policy = Policy::compile_with(&script, args.policy.limits())
        .map_err(|e| anyhow::anyhow!("{}: {e}", policy_path.display()))?;
    let trace = Trace::load(&args.trace)?;
    let limits = args.limits.limits(DEFAULT_MAX_INSTANCES)?;
    let summary = simulate(&trace, &policy, limits)
        .map_err(|e| anyhow::anyhow!("{}: {e}", policy_path.display()))?;

    println!(
        "trace: {} ({} s of arrivals; service {} ms per image; boot {} s; tick {} s)",
        args.trace.display(),
        trace.duration(),
        trace.service_time_ms,
        trace.boot_delay_s,
        trace.tick_s
    );
    println!(
        "policy: {} (instances {}..{})",
        policy_path.display(),
        limits.min,
        limits.max
    );
    println!(
        "jobs: {} arrived, {} completed, last at {:.1} s",
        summary.arrivals, summary.completed, summary.last_completion_s
    );
    println!(
        "instances: peak {}, {} launched, {} terminated, {:.1} instance-seconds",
        summary.peak_instances, summary.launches, summary.terminations, summary.instance_seconds
    );
    println!(
        "queue wait: p50 {:.2} s, p95 {:.2} s, max {:.2} s",
        summary.wait_p50_s, summary.wait_p95_s, summary.wait_max_s
    );
    println!("settled at {:.1} s", summary.end_s);
    let title = format!(
        "{} on {}",
        policy_path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy(),
        args.trace.file_name().unwrap_or_default().to_string_lossy()
    );
    std::fs::write(&args.chart, svg(&summary.samples, &title))
        .map_err(|e| anyhow::anyhow!("cannot write chart {}: {e}", args.chart.display()))?;
    println!("chart: {}", args.chart.display());
    Ok(())
}
