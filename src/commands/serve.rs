//! `imagefleet serve`: web tier, controller and local worker fleet in one
//! command. The fleet starts empty and follows the policy.

use clap::Args;

use super::args::{local_fleet, ControllerOptions, ModelArgs, WebArgs};
use super::aws::replica::{close_reply_queue, open_reply_queue};
use crate::fleet::{default_max_local_workers, Fleet, STOP_GRACE};
use crate::paths::absolute;
use crate::shutdown::{on_signals, Shutdown};
use crate::web::{self, WebState};

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

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (trigger, shutdown) = Shutdown::new();
    on_signals(trigger);
    let data_dir = absolute(&args.web.data.data_dir);
    let services = args.web.backend.services(&data_dir).await?;
    // AWS: this replica's own reply queue, deleted again when it stops. A
    // failure below leaves it for `--reap`, rather than workers unstopped.
    let reply = open_reply_queue(&args.web).await?;
    let fleet = local_fleet(&data_dir, &args.model, &args.web.backend)?;
    let mut state = WebState::new(services.clone(), args.web.settings());
    if let Some(reply) = &reply {
        state = state.with_reply_queue(reply.queue());
    }

    let controller = match args.workers {
        Some(workers) => {
            fixed_fleet(fleet.as_ref(), workers).await?;
            None
        }
        None => {
            let controller = args.controller.build(
                services.requests.clone(),
                fleet.clone(),
                default_max_local_workers(),
            )?;
            state = state.with_controller(controller.status());
            Some(tokio::spawn(controller.run(shutdown.clone())))
        }
    };
    let listener = args.web.bind().await?;
    tracing::info!(data_dir = %data_dir.display(), "serving");
    let result = web::serve(listener, state, shutdown).await;
    close_reply_queue(reply).await;
    if let Some(controller) = controller {
        let _ = controller.await;
    }
    if !args.controller.dry_run {
        fleet.shutdown(STOP_GRACE).await;
    }
    result
}

/// `--workers N`: exactly N workers, no controller.
async fn fixed_fleet(fleet: &dyn Fleet, workers: usize) -> anyhow::Result<()> {
    let running = fleet.list().await?;
    if workers > running.len() {
        fleet.launch(workers - running.len()).await?;
    } else if workers < running.len() {
        let extra: Vec<String> = running[workers..].iter().map(|i| i.id.clone()).collect();
        fleet.terminate(&extra).await?;
    }
    tracing::info!(workers, "fixed fleet");
    Ok(())
}
