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
    /// The autoscaling controller for the local fleet (no web tier).
    Controller(ControllerArgs),
    /// Evaluate the policy once for a given state and print the plan.
    Plan(PlanArgs),
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Replay a workload trace through a policy on a simulated clock.
    Simulate(SimulateArgs),
    /// Send concurrent uploads to a running service and report throughput.
    Load(LoadArgs),
    /// Time the worker's stages, start-up and memory (optionally next to onnxruntime).
    Bench(BenchArgs),
    /// AWS resources of a fleet: setup, status, teardown.
    #[command(subcommand)]
    Aws(AwsCommand),
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The upload endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8080/")]
    pub url: String,
    /// Client threads uploading at once.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Uploads in all, cycling through the files.
    #[arg(long, default_value_t = 100)]
    pub requests: usize,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// Print the summary as one JSON object (for scripts and benches).
    #[arg(long)]
    pub json: bool,
    /// Image files to upload.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct PolicyArgs {
    /// The scaling policy script (default: policies/scale.rhai).
    #[arg(long, env = "IMAGEFLEET_POLICY")]
    pub policy: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct LimitArgs {
    /// Fewest instances, whatever the policy says.
    #[arg(long, default_value_t = 0)]
    pub min_instances: u32,
    /// Hard cap on instances, whatever the policy says (default: 20 EC2
    /// instances; local worker processes: one per CPU core, which gave the
    /// best throughput in `cargo bench --bench pipeline`).
    #[arg(long)]
    pub max_instances: Option<u32>,
}

#[derive(Debug, Args, Clone)]
pub struct ControllerOptions {
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Milliseconds between controller ticks.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(50..))]
    pub interval_ms: u64,
    /// Print each planned action instead of starting or stopping instances.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ControllerArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub controller: ControllerOptions,
    /// `--backend aws` sizes the fleet's EC2 instances from its SQS queue.
    #[command(flatten)]
    pub backend: BackendArgs,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Messages waiting in the queue.
    #[arg(long, default_value_t = 0)]
    pub visible: u64,
    /// Messages being worked on.
    #[arg(long, default_value_t = 0)]
    pub in_flight: u64,
    /// Running instances.
    #[arg(long, default_value_t = 0)]
    pub running: u32,
    /// Instances still starting.
    #[arg(long, default_value_t = 0)]
    pub pending: u32,
    /// Of the running instances, how many are idle (default: all but one per
    /// in-flight message).
    #[arg(long)]
    pub idle: Option<u32>,
    /// Seconds since the last scaling action (default: never).
    #[arg(long)]
    pub since_last_scale: Option<f64>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Compile a policy and try it on sample states; prints `ok` or the
    /// errors with line and column (exit status 1).
    Check { file: PathBuf },
}

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

/// Where queues, buckets and instances live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Backend {
    /// SQLite queue and directory buckets under the data dir.
    #[default]
    Local,
    /// SQS, S3 and EC2 (credentials and region from the standard AWS chain).
    Aws,
}

#[derive(Debug, Args, Clone, Default)]
pub struct BackendArgs {
    #[arg(long, env = "IMAGEFLEET_BACKEND", value_enum, default_value_t = Backend::Local)]
    pub backend: Backend,
    #[command(flatten)]
    pub aws: AwsTarget,
}

/// Which AWS fleet, and where its configuration file is (optional).
#[derive(Debug, Args, Clone, Default)]
pub struct AwsTarget {
    /// The fleet's name; every AWS resource name derives from it.
    #[arg(long, env = "IMAGEFLEET_FLEET")]
    pub fleet: Option<String>,
    /// AWS config file (TOML, as `imagefleet aws setup` prints it).
    #[arg(long, env = "IMAGEFLEET_AWS_CONFIG")]
    pub aws_config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AwsCommand {
    /// Create the buckets, queues and dead-letter queue (idempotent) and
    /// print the resulting configuration.
    Setup(AwsTarget),
    /// Show the resources with queue depths, and the fleet's instances.
    Status(AwsStatusArgs),
    /// Terminate the fleet's instances, delete its queues and buckets.
    Teardown(AwsTeardownArgs),
}

#[derive(Debug, Args)]
pub struct AwsStatusArgs {
    #[command(flatten)]
    pub target: AwsTarget,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AwsTeardownArgs {
    #[command(flatten)]
    pub target: AwsTarget,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
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
    #[command(flatten)]
    pub backend: BackendArgs,
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
    #[command(flatten)]
    pub controller: ControllerOptions,
    /// Run exactly this many workers instead of letting the controller size
    /// the fleet.
    #[arg(long, conflicts_with = "dry_run")]
    pub workers: Option<usize>,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
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
    /// Also time every node of the plan and print where inference time
    /// goes, by operator kind (with --plain-tract, for both plans).
    #[arg(long)]
    pub profile: bool,
    /// Like --profile, one line per node of the plan (id, operator, output
    /// shape): for work on the kernels.
    #[arg(long)]
    pub profile_nodes: bool,
    /// Internal: load the model, print a ready line, exit.
    #[arg(long, hide = true)]
    pub probe_startup: bool,
    /// Images (default: tests/samples/*).
    pub files: Vec<PathBuf>,
}
