//! `imagefleet controller`: the reconcile loop alone, for the local fleet
//! or the fleet's EC2 instances.

use std::net::SocketAddr;

use clap::Args;

use super::args::{
    local_fleet, Backend, BackendArgs, ControllerOptions, DataArgs, ModelArgs, RetentionArgs,
};
use super::aws::fleet::controller_fleet;
use super::aws::status_http::serve_status;
use crate::controller::DEFAULT_MAX_INSTANCES;
use crate::fleet::{default_max_local_workers, ControllerLease, Holder, LEASE_TTL, STOP_GRACE};
use crate::paths::absolute;
use crate::shutdown::{on_signals, Shutdown};

#[derive(Debug, Args)]
pub struct ControllerArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub controller: ControllerOptions,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// `--backend aws` sizes the fleet's EC2 instances from its SQS queue.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Serve the controller's status (plan, instances, policy, last error)
    /// as JSON on GET /status at this address.
    #[arg(long, env = "IMAGEFLEET_STATUS_LISTEN")]
    pub status_listen: Option<SocketAddr>,
}

pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    let (trigger, shutdown) = Shutdown::new();
    on_signals(trigger.clone());
    let data_dir = absolute(&args.data.data_dir);
    match args.backend.backend {
        Backend::Local => {
            let services = args.backend.services(&data_dir).await?;
            let fleet = local_fleet(&data_dir, &args.model, &args.backend, &args.retention)?;
            args.retention
                .spawn_janitor(&data_dir, &args.backend, shutdown.clone());
            let controller = args.controller.build(
                &data_dir,
                services.requests,
                fleet.clone(),
                default_max_local_workers(),
            )?;
            if let Some(addr) = args.status_listen {
                serve_status(addr, controller.status(), shutdown.clone()).await?;
            }
            controller.run(shutdown).await;
            if !args.controller.dry_run {
                fleet.shutdown(STOP_GRACE).await;
            }
        }
        Backend::Aws => {
            // EC2 instances outlive the controller: a restarted controller
            // finds them by their fleet tag (or in the Auto Scaling group),
            // so nothing is stopped on exit. It opens the request queue
            // and its lease in the output bucket only: its IAM policy
            // grants nothing else.
            let config = args.backend.aws.load()?;
            let (requests, fleet, clients) = controller_fleet(&config, &data_dir).await?;
            // One controller per fleet: a dry run changes nothing, so it
            // needs no lease and may watch beside the one in charge.
            let lease = if args.controller.dry_run {
                None
            } else {
                let lease = ControllerLease::acquire(
                    clients.s3.clone(),
                    &config.output_bucket,
                    Holder::this_process(),
                    LEASE_TTL,
                )
                .await?;
                let renewal = lease.spawn_renewal(trigger.clone());
                Some((lease, renewal))
            };
            let controller =
                args.controller
                    .build(&data_dir, requests, fleet, DEFAULT_MAX_INSTANCES)?;
            if let Some(addr) = args.status_listen {
                serve_status(addr, controller.status(), shutdown.clone()).await?;
            }
            controller.run(shutdown).await;
            if let Some((lease, renewal)) = lease {
                drop(renewal);
                lease.release().await;
            }
        }
    }
    Ok(())
}
