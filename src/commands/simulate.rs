//! `imagefleet simulate`: a policy against a workload trace, on a simulated
//! clock, with a timeline summary and a chart; or against a recorded
//! period (`--replay`); or over a range of one parameter (`--sweep`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::args::{LimitArgs, PolicyArgs, TuningArgs};
use crate::controller::DEFAULT_MAX_INSTANCES;
use crate::policy::Policy;
use crate::simulate::{replay, simulate_with, svg, sweep, SimOptions, Summary, Trace};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub tuning: TuningArgs,
    /// Workload trace (TOML), e.g. policies/traces/burst-100.toml.
    #[arg(long, required_unless_present = "replay", conflicts_with = "replay")]
    pub trace: Option<PathBuf>,
    /// A recorded period instead of a trace: a decision log file or
    /// directory (DATA/decisions). Its arrivals, service and boot times are
    /// estimated from the records, the policy is simulated on them and
    /// compared with what happened.
    #[arg(long)]
    pub replay: Option<PathBuf>,
    /// For a replay without exact arrival counts (SQS): the service time
    /// per image to assume, in milliseconds (default: estimated, else 40).
    #[arg(long)]
    pub service_time_ms: Option<f64>,
    /// Inject a fault (repeatable): outage=START..END, count_noise=0.2,
    /// boot_failure=0.1, slow_boot=0.2, slow_boot_factor=5,
    /// crashes_per_hour=2, lease_s=10, seed=7. Adds to the trace's
    /// [faults].
    #[arg(long = "fault", value_name = "KEY=VALUE")]
    pub faults: Vec<String>,
    /// Run one simulation per value of a policy constant (`let NAME = N;`
    /// at the top of the script) or of a controller setting
    /// (scale_in_delay, scale_in_step), e.g. messages_per_instance=5..30,
    /// =5..30:5 or =5,10,20; prints cost against latency, the Pareto front,
    /// and charts it.
    #[arg(long, value_name = "NAME=RANGE", conflicts_with = "replay")]
    pub sweep: Option<String>,
    /// Tick only on the interval: no instant wake-up on arrivals (as a
    /// controller in another process than the web tier on SQS, or before).
    #[arg(long)]
    pub no_wake: bool,
    /// Where to write the chart (SVG): backlog and instances over time, or
    /// for a sweep, cost against p95 wait.
    #[arg(long, default_value = "simulation.svg")]
    pub chart: PathBuf,
    /// Also write each simulated tick's decision record here (JSON lines,
    /// as the controller's decision log).
    #[arg(long)]
    pub record: Option<PathBuf>,
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let policy_path = args.policy.path();
    let script = std::fs::read_to_string(&policy_path)
        .map_err(|e| anyhow::anyhow!("cannot read policy {}: {e}", policy_path.display()))?;
    let policy = Policy::compile_with(&script, args.policy.limits())
        .map_err(|e| anyhow::anyhow!("{}: {e}", policy_path.display()))?;
    let limits = args.limits.limits(DEFAULT_MAX_INSTANCES)?;
    let mut options = SimOptions::new(limits);
    // The interval comes from the trace.
    options.tuning = args.tuning.tuning(Duration::from_secs(2));
    options.history_len = args.tuning.policy_history;
    options.wake = !args.no_wake;
    options.record = args.record.is_some();

    if let Some(log) = &args.replay {
        let report = replay::replay(log, &policy, &options, args.service_time_ms)
            .map_err(|e| anyhow::anyhow!("replaying {}: {e:#}", log.display()))?;
        println!("policy: {}", policy_path.display());
        print!("{report}");
        write_chart(
            &args.chart,
            &svg(&report.candidate.samples, &chart_title(&policy_path, log)),
        )?;
        return Ok(());
    }
    let trace_path = args
        .trace
        .as_ref()
        .expect("clap requires --trace without --replay");
    let trace = Trace::load(trace_path)?;
    options.faults = trace.faults.clone();
    for fault in &args.faults {
        options.faults.set(fault)?;
    }
    println!(
        "trace: {} ({} s of arrivals; service {} ms per image; boot {} s; tick {} s)",
        trace_path.display(),
        trace.duration(),
        trace.service_time_ms,
        trace.boot_delay_s,
        trace.tick_s
    );
    if let Some(spec) = &args.sweep {
        let table = sweep::sweep(&trace, &script, args.policy.limits(), &options, spec)?;
        println!(
            "policy: {} (instances {}..{}), sweeping {}",
            policy_path.display(),
            limits.min,
            limits.max,
            table.parameter
        );
        print!("{table}");
        write_chart(
            &args.chart,
            &table.svg(&chart_title(&policy_path, trace_path)),
        )?;
        return Ok(());
    }
    let summary = simulate_with(&trace, &policy, &options)
        .map_err(|e| anyhow::anyhow!("{}: {e}", policy_path.display()))?;
    println!(
        "policy: {} (instances {}..{}; scale-in delay {} s, step {}; on outage {}{})",
        policy_path.display(),
        limits.min,
        limits.max,
        options.tuning.scale_in_delay_s,
        options.tuning.scale_in_step,
        options.tuning.on_outage,
        if options.wake { "" } else { "; no wake-up" },
    );
    if options.faults.any() {
        println!("faults: {:?}", options.faults);
    }
    print_summary(&summary);
    if let Some(path) = &args.record {
        let mut lines = String::new();
        for record in &summary.records {
            lines.push_str(&serde_json::to_string(record)?);
            lines.push('\n');
        }
        std::fs::write(path, lines)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        println!("records: {}", path.display());
    }
    write_chart(
        &args.chart,
        &svg(&summary.samples, &chart_title(&policy_path, trace_path)),
    )
}

pub fn print_summary(summary: &Summary) {
    println!(
        "jobs: {} arrived, {} completed, last at {:.1} s",
        summary.arrivals, summary.completed, summary.last_completion_s
    );
    println!(
        "instances: peak {}, {} launched, {} terminated, {:.1} instance-seconds",
        summary.peak_instances, summary.launches, summary.terminations, summary.instance_seconds
    );
    println!(
        "queue wait: p50 {:.2} s, p95 {:.2} s, max {:.2} s, mean {:.2} s",
        summary.wait_p50_s, summary.wait_p95_s, summary.wait_max_s, summary.wait_mean_s
    );
    println!(
        "ticks: {} ({} woken by arrivals, {} on stale counts)",
        summary.ticks, summary.wakes, summary.stale_ticks
    );
    if summary.boot_failures + summary.crashes > 0 {
        println!(
            "faults: {} failed boots, {} crashes",
            summary.boot_failures, summary.crashes
        );
    }
    println!(
        "settled at {:.1} s ({:.1} s after the last job)",
        summary.end_s, summary.idle_to_floor_s
    );
}

fn chart_title(policy: &Path, input: &Path) -> String {
    format!(
        "{} on {}",
        policy.file_name().unwrap_or_default().to_string_lossy(),
        input.file_name().unwrap_or_default().to_string_lossy()
    )
}

fn write_chart(path: &Path, svg: &str) -> anyhow::Result<()> {
    std::fs::write(path, svg)
        .map_err(|e| anyhow::anyhow!("cannot write chart {}: {e}", path.display()))?;
    println!("chart: {}", path.display());
    Ok(())
}
