//! `imagefleet aws setup|status|teardown`: provisioning the fleet's AWS
//! resources. This sits above the AWS plumbing (`crate::aws`) and the
//! backends, which never call back up here.

pub mod activity;
pub mod fleet;
pub mod group;
pub mod replica;
mod resources;
pub mod setup;
pub mod status;
pub mod status_http;
pub mod teardown;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};

pub use group::{setup_group, teardown_group};
pub use resources::ResourceError;
pub use setup::{setup, Outcome, SetupStep};
pub use status::{status, Status};
pub use teardown::{teardown, Teardown};

use super::args::AwsTarget;
use crate::aws::{AwsClients, AwsConfig};

#[derive(Debug, Subcommand)]
pub enum AwsCommand {
    /// Create the buckets, queues and dead-letter queue, and with --asg the
    /// launch template and Auto Scaling group (idempotent); write or print
    /// the resulting configuration.
    Setup(AwsSetupArgs),
    /// Show the resources with queue depths, and the fleet's instances.
    Status(AwsStatusArgs),
    /// Terminate the fleet's instances, delete its queues and buckets.
    Teardown(AwsTeardownArgs),
}

#[derive(Debug, Args)]
pub struct AwsSetupArgs {
    #[command(flatten)]
    pub target: AwsTarget,
    /// Also create the launch template and the Auto Scaling group
    /// `imagefleet-FLEET-workers` (needs the worker AMI), which the
    /// controller then sizes instead of launching instances itself.
    #[arg(long)]
    pub asg: bool,
    /// With --asg: run the group's instances on spot capacity (above
    /// `workers.on_demand_base` on-demand ones), with capacity rebalancing.
    #[arg(long, requires = "asg")]
    pub spot: bool,
    /// The instance types to use, best first (the first is also the type of
    /// raw launches), e.g. c7i.large,c6i.large,m7i.large.
    #[arg(long, value_delimiter = ',')]
    pub instance_types: Vec<String>,
    /// Write the configuration to FILE (atomically, and only if setup
    /// succeeded) instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub write_config: Option<PathBuf>,
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

pub async fn run(command: AwsCommand) -> anyhow::Result<bool> {
    match command {
        AwsCommand::Setup(args) => run_setup(&args).await,
        AwsCommand::Status(args) => run_status(&args.target, args.json).await,
        AwsCommand::Teardown(args) => run_teardown(&args.target, args.yes).await,
    }
}

async fn connect(target: &AwsTarget) -> anyhow::Result<(AwsConfig, AwsClients)> {
    let mut config = target.load()?;
    let clients = AwsClients::new(&config).await;
    // Pin the region the chain chose, so the printed config (and the
    // workers' user data) say where the resources are.
    if config.region.is_none() {
        config.region = clients.region.clone();
    }
    Ok((config, clients))
}

async fn run_setup(args: &AwsSetupArgs) -> anyhow::Result<bool> {
    let (mut config, clients) = connect(&args.target).await?;
    if let Some((first, _)) = args.instance_types.split_first() {
        config.workers.instance_type = first.clone();
        config.workers.instance_types = args.instance_types.clone();
    }
    if args.spot {
        config.workers.spot = true;
    }
    config.validate()?;
    let mut steps = setup(&clients, &config)
        .await
        .with_context(|| format!("setting up fleet {}", config.fleet))?;
    if args.asg {
        steps.extend(setup_group(&clients, &config).await.with_context(|| {
            format!(
                "setting up the Auto Scaling group of fleet {}",
                config.fleet
            )
        })?);
    }
    for step in &steps {
        let verb = match step.outcome {
            Outcome::Created => "created",
            Outcome::Existed => "exists ",
            Outcome::Updated => "updated",
        };
        eprintln!("{verb} {} {}", step.kind, step.name);
    }
    match &args.write_config {
        Some(path) => {
            write_atomically(path, &config.to_toml())
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        // stdout is the configuration alone.
        None => print!("{}", config.to_toml()),
    }
    Ok(true)
}

/// A temporary file beside `path`, renamed over it: readers (and a setup
/// that fails half way) never see a truncated configuration.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(text.as_bytes())?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

async fn run_status(target: &AwsTarget, json: bool) -> anyhow::Result<bool> {
    let (config, clients) = connect(target).await?;
    let status = status(&clients, &config).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(status.complete());
    }
    println!(
        "fleet {} (region {})",
        status.fleet,
        config.region.as_deref().unwrap_or("?")
    );
    for queue in &status.queues {
        match (&queue.depth, &queue.error) {
            (Some(d), _) => println!(
                "queue  {:<48} visible {:>6}  in flight {:>6}",
                queue.name, d.visible, d.in_flight
            ),
            (None, Some(e)) => println!("queue  {:<48} ERROR {e}", queue.name),
            (None, None) => println!("queue  {:<48} MISSING", queue.name),
        }
    }
    for name in &status.reply_queues {
        println!("queue  {name:<48} (a web tier replica's replies)");
    }
    for bucket in &status.buckets {
        match (&bucket.error, bucket.exists) {
            (Some(e), _) => println!("bucket {:<48} ERROR {e}", bucket.name),
            (None, true) => println!("bucket {:<48} ok", bucket.name),
            (None, false) => println!("bucket {:<48} MISSING", bucket.name),
        }
    }
    if let Some(group) = &status.group {
        println!(
            "group  {:<48} desired {} (min {}, max {})",
            group.name, group.desired, group.min, group.max
        );
    }
    println!("instances: {}", status.instances.len());
    for instance in &status.instances {
        let busy = match instance.busy {
            Some(true) => " busy",
            Some(false) => " idle",
            None => "",
        };
        println!("  {} {}{busy}", instance.id, instance.state.as_str());
    }
    for error in &status.errors {
        println!("ERROR {error}");
    }
    if status.has_errors() {
        eprintln!("some resources could not be read (see ERROR above): check the credentials' permissions");
    } else if !status.complete() {
        eprintln!(
            "some resources are missing: run `imagefleet aws setup --fleet {}`",
            status.fleet
        );
    }
    Ok(status.complete())
}

async fn run_teardown(target: &AwsTarget, yes: bool) -> anyhow::Result<bool> {
    let (config, clients) = connect(target).await?;
    if !yes && !confirm(&config)? {
        eprintln!("nothing removed");
        return Ok(false);
    }
    let report = teardown(&clients, &config)
        .await
        .with_context(|| format!("tearing down fleet {}", config.fleet))?;
    if report.removed.is_empty() && report.refused.is_empty() {
        eprintln!("nothing to remove for fleet {}", config.fleet);
    }
    for item in &report.removed {
        println!("removed {item}");
    }
    for item in &report.refused {
        eprintln!("refused {item}");
    }
    Ok(report.refused.is_empty())
}

fn confirm(config: &AwsConfig) -> anyhow::Result<bool> {
    eprint!(
        "This deletes Auto Scaling group {} if there is one, terminates every instance of fleet {}, deletes queues {}, {}, {} and the reply queues, and buckets {}, {} with all their objects.\nType the fleet name to confirm: ",
        config.autoscaling_group,
        config.fleet,
        config.requests_queue,
        config.results_queue,
        config.dead_letter_queue,
        config.input_bucket,
        config.output_bucket
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == config.fleet)
}
