//! `imagefleet worker`: the app tier process.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::args::{Backend, BackendArgs, DataArgs, ModelArgs};
use crate::fleet::RegistryActivity;
use crate::services::LocalLayout;
use crate::shutdown::{on_signals, Shutdown, ShutdownTrigger};
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
    /// Seconds a job stays hidden from other workers unless renewed: the
    /// worker renews it every third of this while it holds the job, so this
    /// is what a crashed worker costs its jobs.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(3..=3600))]
    pub lease_secs: u64,
    /// Set by the local fleet: stop when this process (the one that started
    /// the worker) is gone, so no worker outlives its service.
    #[arg(long, hide = true)]
    pub parent_pid: Option<u32>,
    /// Keep each job's input after its result is stored (by default it is
    /// deleted then; retention removes what is kept).
    #[arg(long)]
    pub keep_inputs: bool,
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let (trigger, shutdown) = Shutdown::new();
    if let Some(parent) = args.parent_pid {
        watch_parent(parent, trigger.clone());
    }
    on_signals(trigger);
    let classifier = args.model.load()?;
    let services = args.backend.services(&args.data.data_dir).await?;
    let worker_id = args
        .instance_id
        .clone()
        .unwrap_or_else(|| format!("worker-{}", std::process::id()));
    let mut settings = WorkerSettings::new(worker_id.clone());
    settings.visibility = Duration::from_secs(args.lease_secs);
    settings.keep_inputs = args.keep_inputs;
    if args.backend.backend == Backend::Aws {
        settings.wait = Duration::from_secs(5);
    }
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

/// Stops the worker when its parent is gone. The local fleet also asks the
/// kernel for SIGTERM on the parent's death (PR_SET_PDEATHSIG), but that
/// signal follows the parent *thread* and misses a parent that died before
/// the worker set it; the parent pid check covers both.
fn watch_parent(parent: u32, trigger: ShutdownTrigger) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_millis(250));
        loop {
            ticker.tick().await;
            // SAFETY: getppid(2) cannot fail and touches no memory.
            let current = unsafe { libc::getppid() } as u32;
            if current != parent {
                tracing::warn!(
                    parent,
                    "the process that started this worker is gone; stopping"
                );
                trigger.trigger();
                return;
            }
        }
    });
}
