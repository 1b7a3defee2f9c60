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
use crate::policy::{OnOutage, PolicyLimits, PolicySource, ReloadGate, Tuning, DEFAULT_HISTORY};
use crate::queue::Queue;
use crate::services::{LocalLayout, Services};
use crate::simulate::policy_tests::PolicyTests;
use crate::web::{ConnectionLimits, WebSettings};

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
    /// Wall-clock milliseconds one policy decision may take; a slower one
    /// is a policy error and the last good policy decides.
    #[arg(long, env = "IMAGEFLEET_POLICY_DEADLINE_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub policy_deadline_ms: u64,
}

impl PolicyArgs {
    pub fn path(&self) -> PathBuf {
        self.policy.clone().unwrap_or_else(default_policy)
    }

    pub fn limits(&self) -> PolicyLimits {
        PolicyLimits {
            deadline: Duration::from_millis(self.policy_deadline_ms),
            ..PolicyLimits::default()
        }
    }

    pub fn open(&self) -> anyhow::Result<PolicySource> {
        PolicySource::open_with(&self.path(), self.limits())
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

/// How the controller follows the policy's answers (`serve`, `controller`,
/// and the simulator, which runs the same rules).
#[derive(Debug, Args, Clone)]
pub struct TuningArgs {
    /// Scale in only to the highest count the policy wanted within this
    /// long (30s, 500ms, 2m; 0 follows at once). Scaling out is never
    /// delayed. A script may override it per answer (`scale_in_delay`).
    #[arg(long, env = "IMAGEFLEET_SCALE_IN_DELAY", default_value = "30s",
          value_parser = parse_seconds)]
    pub scale_in_delay: f64,
    /// Stop at most this many instances per tick interval (`scale_in_step`
    /// in a script's answer overrides it).
    #[arg(long, env = "IMAGEFLEET_SCALE_IN_STEP",
          default_value_t = crate::policy::state::DEFAULT_SCALE_IN_STEP,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub scale_in_step: u32,
    /// When the queue or the fleet cannot be observed: `hold` keeps the
    /// fleet as it is, `floor` goes to --min-instances, `last-plan` keeps
    /// the count last planned on fresh counts, `policy` applies the
    /// script's answer on the last good counts (it sees `stale_secs`).
    #[arg(long, env = "IMAGEFLEET_ON_OUTAGE", default_value = "hold",
          value_parser = parse_on_outage)]
    pub on_outage: OnOutage,
    /// Past observations a script sees in `history`.
    #[arg(long, default_value_t = DEFAULT_HISTORY,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=1000))]
    pub policy_history: usize,
}

impl TuningArgs {
    pub fn tuning(&self, interval: Duration) -> Tuning {
        Tuning {
            scale_in_delay_s: self.scale_in_delay,
            scale_in_step: self.scale_in_step,
            on_outage: self.on_outage,
            interval_s: interval.as_secs_f64(),
        }
    }
}

/// Seconds from `30s`, `500ms`, `2m`, `1h`, `1.5s` or a bare `0`.
pub fn parse_seconds(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 500ms or 2m"))?;
    let scale = match unit {
        "" if number == 0.0 => 0.0,
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{text:?}: the unit must be ms, s, m or h")),
    };
    let seconds = number * scale;
    if !(0.0..=crate::policy::state::MAX_SCALE_IN_DELAY_S).contains(&seconds) {
        return Err(format!("{text:?} is longer than a day"));
    }
    Ok(seconds)
}

fn parse_on_outage(text: &str) -> Result<OnOutage, String> {
    OnOutage::parse(text)
        .ok_or_else(|| format!("{text:?}: expected hold, floor, last-plan or policy"))
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
    #[command(flatten)]
    pub tuning: TuningArgs,
    /// A candidate policy evaluated on every tick beside the live one
    /// (repeatable): its would-be plans are logged, shown in /status and
    /// counted against the live policy's, never applied.
    #[arg(long = "shadow-policy", value_name = "FILE")]
    pub shadow_policies: Vec<PathBuf>,
    /// Files of the decision log in DATA/decisions (8 MiB each, the oldest
    /// deleted); 0 keeps no log.
    #[arg(long, default_value_t = crate::controller::decisions::DEFAULT_FILES)]
    pub decision_log_files: usize,
}

impl ControllerOptions {
    /// The controller, keeping its records in `data_dir`; `default_max`
    /// caps the fleet unless `--max-instances` was given. The policy and
    /// the shadows must pass their tests (`NAME.test.toml`) now and on
    /// every reload.
    pub fn build(
        &self,
        data_dir: &Path,
        queue: Arc<dyn Queue>,
        fleet: Arc<dyn Fleet>,
        default_max: u32,
    ) -> anyhow::Result<Controller> {
        let gate: Arc<dyn ReloadGate> = Arc::new(PolicyTests);
        let policy = PolicySource::open_gated(
            &self.policy.path(),
            self.policy.limits(),
            Some(gate.clone()),
        )?;
        let shadows = self
            .shadow_policies
            .iter()
            .map(|path| {
                PolicySource::open_gated(path, self.policy.limits(), Some(gate.clone()))
                    .with_context(|| format!("shadow policy {}", path.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let interval = Duration::from_millis(self.interval_ms);
        let settings = ControllerSettings {
            interval,
            limits: self.limits.limits(default_max)?,
            dry_run: self.dry_run,
            tuning: self.tuning.tuning(interval),
            history_len: self.tuning.policy_history,
        };
        tracing::info!(policy = %policy.path().display(), tests = policy.status().tests.as_deref().unwrap_or("none"),
            dry_run = self.dry_run, min = settings.limits.min, max = settings.limits.max,
            scale_in_delay_s = settings.tuning.scale_in_delay_s, scale_in_step = settings.tuning.scale_in_step,
            on_outage = %settings.tuning.on_outage, shadows = shadows.len(), "controller starting");
        Controller::new(queue, fleet, policy, settings)
            .with_shadows(shadows)
            .with_data_dir(data_dir, self.decision_log_files)
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

/// How long finished jobs are kept (the process that manages the local
/// fleet also keeps its data dir tidy).
#[derive(Debug, Args, Clone)]
pub struct RetentionArgs {
    /// Results, kept inputs and dead letters older than this are deleted
    /// (embedded backend; on AWS, `aws setup`'s lifecycle rules do it).
    #[arg(long, default_value = "24h", value_parser = crate::retention::parse_duration)]
    pub retention: Duration,
    /// Keep each job's input after its result is stored, until the
    /// retention (by default inputs go as soon as their result is stored).
    #[arg(long)]
    pub keep_inputs: bool,
}

impl RetentionArgs {
    /// Starts the janitor for an embedded backend's data dir.
    pub fn spawn_janitor(
        &self,
        data_dir: &Path,
        backend: &BackendArgs,
        shutdown: crate::shutdown::Shutdown,
    ) {
        if backend.backend == Backend::Local {
            let layout = LocalLayout::new(data_dir);
            tokio::spawn(crate::retention::run(layout, self.retention, shutdown));
        }
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
    /// On SIGTERM or Ctrl-C: seconds to finish open requests (and, for
    /// `serve`, to stop the workers) before exiting.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub shutdown_timeout_secs: u64,
    /// Connections open at once; past it, the oldest connection that has not
    /// sent a request yet is dropped for the newcomer, or the newcomer gets
    /// 503 when all are busy.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_connections: u64,
    /// Uploads streaming in at once; one past it waits up to 5 s for a
    /// turn, then gets 503 with Retry-After.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_uploads: u64,
    /// Seconds a connection gets to send a request's headers, counted from
    /// its start or its previous response (so idle keep-alive connections
    /// close after this too).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_secs: u64,
    /// Seconds an upload may pause mid-body before it is dropped (408).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_stall_secs: u64,
    /// Require `Authorization: Bearer TOKEN` on every route but /healthz.
    #[arg(long, env = "IMAGEFLEET_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Listen on a non-loopback address without a token (anyone who can
    /// reach it may upload and read results).
    #[arg(long)]
    pub allow_anonymous: bool,
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
    /// The web tier's settings; `reserved` is kept out of the drain for
    /// what must happen after it (stopping the workers).
    pub fn settings(&self, reserved: Duration) -> WebSettings {
        let budget = Duration::from_secs(self.shutdown_timeout_secs);
        WebSettings {
            max_upload_bytes: self.max_upload_mib * 1024 * 1024,
            result_timeout: Duration::from_secs(self.result_timeout_secs),
            drain_timeout: budget
                .saturating_sub(reserved)
                .max(budget / 2)
                .max(Duration::from_secs(1)),
            max_uploads: self.max_uploads as usize,
            body_stall_timeout: Duration::from_secs(self.body_stall_secs),
            connections: ConnectionLimits {
                max_connections: self.max_connections as usize,
                header_timeout: Duration::from_secs(self.header_timeout_secs),
                ..ConnectionLimits::default()
            },
            auth_token: self.auth_token.clone().filter(|t| !t.is_empty()),
        }
    }

    /// Refuses to expose the service beyond this machine without a token,
    /// unless the operator says so.
    pub fn check_exposure(&self) -> anyhow::Result<()> {
        let has_token = self.auth_token.as_ref().is_some_and(|t| !t.is_empty());
        if let Some(token) = self.auth_token.as_ref().filter(|t| !t.is_empty()) {
            anyhow::ensure!(
                token.len() >= 16,
                "--auth-token is too short to guess hard: use at least 16 characters"
            );
        }
        anyhow::ensure!(
            self.listen.ip().is_loopback() || has_token || self.allow_anonymous,
            "refusing to listen on {} without --auth-token (or IMAGEFLEET_AUTH_TOKEN): anyone \
             who can reach it could upload and read results; pass --allow-anonymous to do it anyway",
            self.listen
        );
        Ok(())
    }

    pub async fn bind(&self) -> anyhow::Result<tokio::net::TcpListener> {
        self.check_exposure()?;
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
    retention: &RetentionArgs,
) -> anyhow::Result<Arc<LocalFleet>> {
    let manifest = model.check()?;
    let mut args: Vec<OsString> = vec![
        "worker".into(),
        "--data-dir".into(),
        data_dir.into(),
        "--model".into(),
        manifest.into(),
    ];
    if retention.keep_inputs {
        args.push("--keep-inputs".into());
    }
    args.extend(backend.to_args());
    let command = WorkerCommand {
        program: std::env::current_exe()?,
        args,
    };
    let layout = LocalLayout::new(data_dir);
    Ok(Arc::new(LocalFleet::open(&layout.fleet_file(), command)?))
}
