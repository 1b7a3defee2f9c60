//! Argument groups that several commands share, and what each turns into:
//! the data dir, the model, the backend (local or AWS), the web tier's and
//! the controller's options. A command's own flags live beside its `run`.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use imagefleet_worker::{Classifier, ModelManifest};

use crate::aws::{AwsClients, AwsConfig};
use crate::controller::{Controller, ControllerSettings, Limits};
use crate::fleet::{Fleet, LocalFleet, WorkerCommand};
use crate::paths::{absolute, default_model_manifest, default_policy, DEFAULT_DATA_DIR};
use crate::policy::PolicySource;
use crate::queue::Queue;
use crate::services::{LocalLayout, Services};
use crate::web::WebSettings;

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

impl ModelArgs {
    pub fn manifest_path(&self) -> PathBuf {
        self.model.clone().unwrap_or_else(default_model_manifest)
    }

    pub fn load(&self) -> anyhow::Result<Arc<Classifier>> {
        let path = self.manifest_path();
        let classifier = Classifier::load(&path)
            .with_context(|| format!("loading the model (manifest {})", path.display()))?;
        Ok(Arc::new(classifier))
    }

    /// Fails unless the manifest loads and names files that exist. Each
    /// worker process loads the model itself; without this a service started
    /// in the wrong folder took uploads that its workers, exiting at
    /// start-up, never answered (504 after a minute).
    pub fn check(&self) -> anyhow::Result<PathBuf> {
        let manifest = absolute(&self.manifest_path());
        let model = ModelManifest::load(&manifest).with_context(|| {
            "the workers could not load the model (set --model or IMAGEFLEET_MODEL)"
        })?;
        for file in [&model.file, &model.labels] {
            std::fs::metadata(file).with_context(|| {
                format!(
                    "the workers could not load the model: {} names {}",
                    manifest.display(),
                    file.display()
                )
            })?;
        }
        Ok(manifest)
    }
}

#[derive(Debug, Args, Clone)]
pub struct PolicyArgs {
    /// The scaling policy script (default: policies/scale.rhai).
    #[arg(long, env = "IMAGEFLEET_POLICY")]
    pub policy: Option<PathBuf>,
}

impl PolicyArgs {
    pub fn path(&self) -> PathBuf {
        self.policy.clone().unwrap_or_else(default_policy)
    }
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

impl LimitArgs {
    /// The limits, with `default_max` where no cap was given.
    pub fn limits(&self, default_max: u32) -> anyhow::Result<Limits> {
        let max = self.max_instances.unwrap_or(default_max);
        anyhow::ensure!(
            self.min_instances <= max,
            "--min-instances {} is above --max-instances {max}",
            self.min_instances,
        );
        Ok(Limits {
            min: self.min_instances,
            max,
        })
    }
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

impl ControllerOptions {
    /// The controller; `default_max` caps the fleet unless
    /// `--max-instances` was given.
    pub fn build(
        &self,
        queue: Arc<dyn Queue>,
        fleet: Arc<dyn Fleet>,
        default_max: u32,
    ) -> anyhow::Result<Controller> {
        let policy = PolicySource::open(&self.policy.path())?;
        let settings = ControllerSettings {
            interval: Duration::from_millis(self.interval_ms),
            limits: self.limits.limits(default_max)?,
            dry_run: self.dry_run,
        };
        tracing::info!(policy = %policy.path().display(), dry_run = self.dry_run,
            min = settings.limits.min, max = settings.limits.max, "controller starting");
        Ok(Controller::new(queue, fleet, policy, settings))
    }
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

impl AwsTarget {
    /// The validated configuration: file, then `IMAGEFLEET_*` env, then flags.
    pub fn load(&self) -> anyhow::Result<AwsConfig> {
        AwsConfig::load(self.fleet.as_deref(), self.aws_config.as_deref(), |name| {
            std::env::var(name).ok()
        })
        .context("loading the AWS configuration")
    }
}

impl BackendArgs {
    pub async fn services(&self, data_dir: &Path) -> anyhow::Result<Services> {
        match self.backend {
            Backend::Local => Services::local(data_dir),
            Backend::Aws => {
                let config = self.aws.load()?;
                let clients = AwsClients::new(&config).await;
                tracing::info!(fleet = %config.fleet, region = ?clients.region, "using AWS");
                Services::aws(&clients, &config)
                    .await
                    .with_context(|| format!("opening the AWS resources of fleet {}", config.fleet))
            }
        }
    }

    /// The same choice as flags, for child processes (local workers).
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args = Vec::new();
        if self.backend == Backend::Aws {
            args.push("--backend".into());
            args.push("aws".into());
            if let Some(fleet) = &self.aws.fleet {
                args.push("--fleet".into());
                args.push(fleet.into());
            }
            if let Some(file) = &self.aws.aws_config {
                args.push("--aws-config".into());
                args.push(absolute(file).into());
            }
        }
        args
    }
}

/// The web tier's flags (`web`, and `serve` which adds the rest).
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
    /// AWS: this replica's id, which names its reply queue (default: a
    /// random one). Every replica needs its own.
    #[arg(long, env = "IMAGEFLEET_REPLICA")]
    pub replica: Option<String>,
    /// AWS: first delete the reply queues of replicas that stopped without
    /// deleting theirs (no heartbeat for 10 minutes).
    #[arg(long)]
    pub reap: bool,
}

impl WebArgs {
    pub fn settings(&self) -> WebSettings {
        WebSettings {
            max_upload_bytes: self.max_upload_mib * 1024 * 1024,
            result_timeout: Duration::from_secs(self.result_timeout_secs),
        }
    }

    pub async fn bind(&self) -> anyhow::Result<tokio::net::TcpListener> {
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .with_context(|| format!("cannot listen on {}", self.listen))?;
        tracing::info!(address = %listener.local_addr()?, "web tier listening");
        Ok(listener)
    }
}

/// The local fleet: `imagefleet worker` processes of this same executable on
/// this data dir, using `backend`'s queues and buckets. Adopts workers left
/// by an earlier run. Fails at once when the workers could not load the
/// model.
pub fn local_fleet(
    data_dir: &Path,
    model: &ModelArgs,
    backend: &BackendArgs,
) -> anyhow::Result<Arc<LocalFleet>> {
    let manifest = model.check()?;
    let mut args: Vec<OsString> = vec![
        "worker".into(),
        "--data-dir".into(),
        data_dir.into(),
        "--model".into(),
        manifest.into(),
    ];
    args.extend(backend.to_args());
    let command = WorkerCommand {
        program: std::env::current_exe()?,
        args,
    };
    let layout = LocalLayout::new(data_dir);
    Ok(Arc::new(LocalFleet::open(&layout.fleet_file(), command)?))
}
