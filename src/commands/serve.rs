//! `imagefleet serve`: web tier and a local worker fleet in one command.

use std::time::Duration;

use crate::cli::ServeArgs;
use crate::fleet::{Fleet, LocalFleet, WorkerCommand};
use crate::paths::absolute;
use crate::services::LocalLayout;
use crate::shutdown::{on_signals, Shutdown};
use crate::web::{self, WebState};

/// How long workers get to finish their jobs when the service stops.
const STOP_GRACE: Duration = Duration::from_secs(30);

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (trigger, shutdown) = Shutdown::new();
    on_signals(trigger);
    let data_dir = absolute(&args.web.data.data_dir);
    let services = args.web.backend.services(&data_dir).await?;
    let layout = LocalLayout::new(&data_dir);
    let fleet = LocalFleet::open(&layout.fleet_file(), worker_command(&data_dir, &args)?)?;
    let listener = args.web.bind().await?;

    let workers = args.workers.unwrap_or_else(default_workers);
    let running = fleet.list().await?.len();
    if workers > running {
        fleet.launch(workers - running).await?;
    }
    tracing::info!(workers, data_dir = %data_dir.display(), "serving");

    let result = web::serve(
        listener,
        WebState::new(services, args.web.settings()),
        shutdown,
    )
    .await;
    fleet.shutdown(STOP_GRACE).await;
    result
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn worker_command(data_dir: &std::path::Path, args: &ServeArgs) -> anyhow::Result<WorkerCommand> {
    Ok(WorkerCommand {
        program: std::env::current_exe()?,
        args: vec![
            "worker".into(),
            "--data-dir".into(),
            data_dir.into(),
            "--model".into(),
            absolute(&args.model.manifest_path()).into(),
        ]
        .into_iter()
        .chain(args.web.backend.to_args())
        .collect(),
    })
}
