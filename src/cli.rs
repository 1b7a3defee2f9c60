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
    /// AWS resources of a fleet: setup, status, teardown.
    #[command(subcommand)]
    Aws(AwsCommand),
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
    /// Worker processes to run (default: one per core).
    #[arg(long)]
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
