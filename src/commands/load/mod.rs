//! `imagefleet load`: a workload generator in the manner of the classic
//! course one. Many uploads at once (a closed loop of `--clients`, or an
//! open loop at `--rate` per second), progress on stderr, and a closing
//! report: throughput, latency percentiles, errors by status and, with
//! `--expected`, how many answers were right.

mod drive;
mod expected;
mod progress;
mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use expected::Expected;
use progress::Progress;
use report::{Mode, RunShape};

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The upload endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8080/")]
    pub url: String,
    /// Uploads in flight at once: the closed loop's uploaders, or the open
    /// loop's cap.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Uploads in all, cycling through the files.
    #[arg(long, default_value_t = 100)]
    pub requests: usize,
    /// Open loop: uploads arrive at this many per second whatever the
    /// answers do (latency counts from each arrival). Without it, each
    /// client sends its next upload when the last is answered.
    #[arg(long, value_parser = positive_rate)]
    pub rate: Option<f64>,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// CSV of the labels each image should get (`file,label`, or a header
    /// with `file` and `accept` columns; `a|b` accepts either): the report
    /// then gives the share of answers that match.
    #[arg(long, value_name = "CSV")]
    pub expected: Option<PathBuf>,
    /// Print the summary as one JSON object (for scripts and benches).
    #[arg(long)]
    pub json: bool,
    /// Image files to upload.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a positive number of uploads per second"
        )),
    }
}

/// Runs the load and prints the report; false when any upload failed.
pub fn run(args: LoadArgs) -> anyhow::Result<bool> {
    let files: Vec<(String, Vec<u8>)> = args
        .files
        .iter()
        .map(|path| {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Ok((display(path), bytes))
        })
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!files.is_empty(), "give at least one image file");
    let expected = args.expected.as_deref().map(Expected::load).transpose()?;
    if let Some(expected) = &expected {
        let known = files
            .iter()
            .filter(|(name, _)| expected.accepted(name).is_some());
        if known.count() == 0 || expected.is_empty() {
            eprintln!("load: warning: the expected labels name none of the files given");
        }
    }
    let plan = drive::Plan {
        url: args.url.clone(),
        clients: args.clients.max(1),
        requests: args.requests,
        timeout: Duration::from_secs(args.timeout_secs),
        rate: args.rate,
        files: Arc::new(files),
    };
    let progress = Arc::new(Progress::new(args.requests));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the load's runtime")?;
    let (outcomes, elapsed) = runtime.block_on(drive::run(plan, Arc::clone(&progress)))?;
    progress.finish();
    let shape = RunShape {
        mode: if args.rate.is_some() {
            Mode::Open
        } else {
            Mode::Closed
        },
        clients: args.clients.max(1),
        rate: args.rate,
    };
    let summary = report::summarise(&outcomes, elapsed, shape, expected.as_ref());
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", report::text(&summary));
    }
    Ok(summary.failed == 0)
}

fn display(path: &std::path::Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
