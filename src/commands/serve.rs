//! `imagefleet serve`: web tier, controller and local worker fleet in one
//! command. The fleet starts empty and follows the policy, or is held at
//! `--workers N`.

use std::time::Duration;

use clap::Args;

use super::args::{local_fleet, ControllerOptions, ModelArgs, RetentionArgs, WebArgs};
use super::aws::replica::{close_reply_queue, open_reply_queue};
use crate::fleet::default_max_local_workers;
use crate::paths::absolute;
use crate::shutdown::{on_signals, Shutdown};
use crate::web::{self, WebState};

/// Of the shutdown budget, what is kept for the workers to finish the job
/// in hand and exit once the web tier has drained.
const WORKER_STOP_RESERVE: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub web: WebArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub controller: ControllerOptions,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Run exactly this many workers (replacing any that die) instead of
    /// letting the policy size the fleet.
    #[arg(long, conflicts_with = "dry_run")]
    pub workers: Option<u32>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (trigger, shutdown) = Shutdown::new();
    on_signals(trigger);
    let data_dir = absolute(&args.web.data.data_dir);
    // Listening first: a port in use, or an exposed address without a
    // token, stops the service before any worker starts.
    let listener = args.web.bind().await?;
    let services = args.web.backend.services(&data_dir).await?;
    // AWS: this replica's own reply queue, deleted again when it stops. A
    // failure below leaves it for `--reap`, rather than workers unstopped.
    let reply = open_reply_queue(&args.web).await?;
    let fleet = local_fleet(&data_dir, &args.model, &args.web.backend, &args.retention)?;
    args.retention
        .spawn_janitor(&data_dir, &args.web.backend, shutdown.clone());

    // `--workers N` is the controller held at N by its limits: the same
    // loop replaces a worker that dies.
    let mut options = args.controller.clone();
    if let Some(workers) = args.workers {
        options.limits.min_instances = workers;
        options.limits.max_instances = Some(workers);
    }
    let controller = options.build(
        &data_dir,
        services.requests.clone(),
        fleet.clone(),
        default_max_local_workers(),
    )?;
    let mut state = WebState::new(services, args.web.settings(WORKER_STOP_RESERVE))
        .with_controller(controller.status())
        .with_arrivals(controller.arrivals());
    if let Some(reply) = &reply {
        state = state.with_reply_queue(reply.queue());
    }
    // The controller keeps the fleet going while the web tier drains (open
    // requests still need their jobs run); it stops after.
    let (fleet_trigger, fleet_shutdown) = Shutdown::new();
    let controller = tokio::spawn(controller.run(fleet_shutdown));

    tracing::info!(data_dir = %data_dir.display(), "serving");
    let served = web::serve(listener, state, shutdown).await;
    close_reply_queue(reply).await;
    fleet_trigger.trigger();
    let _ = controller.await;
    if !args.controller.dry_run {
        // SIGTERM: each worker finishes the job in hand, hands back the one
        // it fetched ahead and exits; stragglers are killed at the end of
        // the reserve, and their jobs return to the queue.
        fleet.shutdown(WORKER_STOP_RESERVE).await;
    }
    served
}
