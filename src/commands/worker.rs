//! `imagefleet worker`: the app tier process.

use std::sync::Arc;

use clap::Args;

use super::args::{Backend, BackendArgs, DataArgs, ModelArgs};
use crate::fleet::RegistryActivity;
use crate::services::LocalLayout;
use crate::shutdown::{on_signals, Shutdown};
use crate::worker::{Worker, WorkerSettings};

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

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let (trigger, shutdown) = Shutdown::new();
    on_signals(trigger);
    let classifier = args.model.load()?;
    let services = args.backend.services(&args.data.data_dir).await?;
    let worker_id = args
        .instance_id
        .clone()
        .unwrap_or_else(|| format!("worker-{}", std::process::id()));
    let mut settings = WorkerSettings::new(worker_id.clone());
    settings.batch = usize::from(args.batch);
    let mut worker = Worker::new(services, classifier, settings);
    if let (Some(id), Backend::Local) = (args.instance_id.clone(), args.backend.backend) {
        // Started by the local fleet: tell it we are ready, and when busy.
        let layout = LocalLayout::new(&args.data.data_dir);
        let activity = RegistryActivity::new(layout.fleet_file(), id)?;
        worker = worker.with_activity(Arc::new(activity));
    }
    if args.backend.backend == Backend::Aws {
        // On an EC2 instance: tell the fleet we are ready, and when busy.
        if let Some(activity) = super::aws::activity::start(&args.backend, args.instance_id).await {
            worker = worker.with_activity(activity);
        }
    }
    worker.run(shutdown).await?;
    Ok(())
}
