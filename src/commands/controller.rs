//! `imagefleet controller`: the reconcile loop for the local fleet, and the
//! wiring it shares with `serve`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::cli::{Backend, ControllerArgs, ControllerOptions, LimitArgs, ModelArgs, PolicyArgs};
use crate::controller::{Controller, ControllerSettings, Limits};
use crate::fleet::{Ec2Fleet, Fleet, LocalFleet, WorkerCommand};
use crate::paths::{absolute, default_policy};
use crate::policy::PolicySource;
use crate::queue::Queue;
use crate::services::LocalLayout;
use crate::shutdown::{on_signals, Shutdown};

/// How long workers get to finish their jobs when the service stops.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

impl PolicyArgs {
    pub fn path(&self) -> std::path::PathBuf {
        self.policy.clone().unwrap_or_else(default_policy)
    }
}

/// The cap on EC2 instances unless `--max-instances` says otherwise.
pub const DEFAULT_MAX_INSTANCES: u32 = 20;

/// The cap on local worker processes unless `--max-instances` says
/// otherwise: one per core. `cargo bench --bench pipeline` on 2 cores gave
/// 47.6, 83.4, 83.5 and 76.3 images/s for 1, 2, 3 and 4 workers, since
/// each worker's inference runs on one thread.
pub fn local_max_instances() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
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

/// The local fleet: `imagefleet worker` processes of this same executable on
/// this data dir. Adopts workers left by an earlier run.
/// `backend_args` tell the workers which queues and buckets to use.
pub fn local_fleet(
    data_dir: &Path,
    model: &ModelArgs,
    backend_args: Vec<std::ffi::OsString>,
) -> anyhow::Result<Arc<LocalFleet>> {
    let manifest = absolute(&model.manifest_path());
    check_model(&manifest)?;
    let mut args: Vec<std::ffi::OsString> = vec![
        "worker".into(),
        "--data-dir".into(),
        data_dir.into(),
        "--model".into(),
        manifest.into(),
    ];
    args.extend(backend_args);
    let command = WorkerCommand {
        program: std::env::current_exe()?,
        args,
    };
    let layout = LocalLayout::new(data_dir);
    Ok(Arc::new(LocalFleet::open(&layout.fleet_file(), command)?))
}

/// Fails unless the manifest loads and names files that exist. Each worker
/// process loads the model itself; without this a service started in the
/// wrong folder took uploads that its workers, exiting at start-up, never
/// answered (504 after a minute).
fn check_model(manifest: &Path) -> anyhow::Result<()> {
    let model = imagefleet_worker::ModelManifest::load(manifest).with_context(|| {
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
    Ok(())
}

pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    let (trigger, shutdown) = Shutdown::new();
    on_signals(trigger);
    let data_dir = absolute(&args.data.data_dir);
    let services = args.backend.services(&data_dir).await?;
    match args.backend.backend {
        Backend::Local => {
            let fleet = local_fleet(&data_dir, &args.model, Vec::new())?;
            let controller =
                args.controller
                    .build(services.requests, fleet.clone(), local_max_instances())?;
            controller.run(shutdown).await;
            if !args.controller.dry_run {
                fleet.shutdown(STOP_GRACE).await;
            }
        }
        Backend::Aws => {
            // EC2 instances outlive the controller: a restarted controller
            // finds them by their fleet tag, so nothing is stopped on exit.
            let config = args.backend.aws.load()?;
            let fleet = Arc::new(Ec2Fleet::connect(&config).await);
            let controller =
                args.controller
                    .build(services.requests, fleet, DEFAULT_MAX_INSTANCES)?;
            controller.run(shutdown).await;
        }
    }
    Ok(())
}
