//! The command line: one binary, one subcommand per role.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::paths::DEFAULT_DATA_DIR;

#[derive(Debug, Parser)]
#[command(
    name = "imagefleet",
    version,
    about = "Autoscaling image recognition: upload images, get labels"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything on one machine: web tier and local worker fleet.
    Serve(ServeArgs),
    /// The web tier alone (needs workers on the same data dir).
    Web(WebArgs),
    /// One worker: take jobs from the queue, classify, store results.
    Worker(WorkerArgs),
    /// Classify image files directly, without any server.
    Classify(ClassifyArgs),
    /// Time the worker's stages, start-up and memory (optionally next to onnxruntime).
    Bench(BenchArgs),
}

#[derive(Debug, Args, Clone)]
pub struct DataArgs {
    /// Where the local queue and buckets live.
    #[arg(long, env = "IMAGEFLEET_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// Model manifest (default: models/model.toml).
    #[arg(long, env = "IMAGEFLEET_MODEL")]
    pub model: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct WebArgs {
    #[arg(long, env = "IMAGEFLEET_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub data: DataArgs,
    /// Largest accepted upload, in MiB.
    #[arg(long, default_value_t = 20)]
    pub max_upload_mib: usize,
    /// Seconds `POST /` waits for a label before answering 504.
    #[arg(long, default_value_t = 60)]
    pub result_timeout_secs: u64,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub web: WebArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Worker processes to run (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Set by the local fleet: the id this worker reports its state under.
    #[arg(long)]
    pub instance_id: Option<String>,
    /// Jobs taken per receive (1..=10).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(1..=10))]
    pub batch: u8,
}

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Image files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Passes over the images.
    #[arg(long, default_value_t = 20)]
    pub iterations: usize,
    /// Fresh processes started to time start-up.
    #[arg(long, default_value_t = 3)]
    pub startup_runs: usize,
    /// Also run worker/bench/ort_bench.py with this Python (which needs
    /// worker/bench/requirements.txt) and print the ratios.
    #[arg(long, value_name = "PYTHON")]
    pub compare_ort: Option<PathBuf>,
    /// The onnxruntime script (default: worker/bench/ort_bench.py in the tree).
    #[arg(long, requires = "compare_ort")]
    pub ort_script: Option<PathBuf>,
    /// Also time inference on tract's own operators (what the fast kernels
    /// replace), for a before/after in the same run.
    #[arg(long)]
    pub plain_tract: bool,
    /// Internal: load the model, print a ready line, exit.
    #[arg(long, hide = true)]
    pub probe_startup: bool,
    /// Images (default: tests/samples/*).
    pub files: Vec<PathBuf>,
}
