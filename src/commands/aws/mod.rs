//! `imagefleet aws setup|status|teardown`: provisioning the fleet's AWS
//! resources. This sits above the AWS plumbing (`crate::aws`) and the
//! backends, which never call back up here.

mod resources;
pub mod setup;
pub mod status;
pub mod teardown;

use std::io::{BufRead, Write};

use anyhow::Context;
use clap::{Args, Subcommand};

pub use resources::ResourceError;
pub use setup::{setup, Outcome, SetupStep};
pub use status::{status, Status};
pub use teardown::teardown;

use super::args::AwsTarget;
use crate::aws::{AwsClients, AwsConfig};

#[derive(Debug, Subcommand)]
pub enum AwsCommand {
    /// Create the buckets, queues and dead-letter queue (idempotent) and
    /// print the resulting configuration.
    Setup(AwsTarget),
    /// Show the resources with queue depths, and the fleet's instances.
    Status(AwsStatusArgs),
    /// Terminate the fleet's instances, delete its queues and buckets.
    Teardown(AwsTeardownArgs),
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
        AwsCommand::Setup(target) => run_setup(&target).await,
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

async fn run_setup(target: &AwsTarget) -> anyhow::Result<bool> {
    let (config, clients) = connect(target).await?;
    let steps = setup(&clients, &config)
        .await
        .with_context(|| format!("setting up fleet {}", config.fleet))?;
    for step in &steps {
        let verb = match step.outcome {
            Outcome::Created => "created",
            Outcome::Existed => "exists ",
        };
        eprintln!("{verb} {} {}", step.kind, step.name);
    }
    // stdout is the configuration alone, ready for `> imagefleet-aws.toml`.
    print!("{}", config.to_toml());
    Ok(true)
}

async fn run_status(target: &AwsTarget, json: bool) -> anyhow::Result<bool> {
    let (config, clients) = connect(target).await?;
    let status = status(&clients, &config).await?;
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
        match queue.depth {
            Some(d) => println!(
                "queue  {:<48} visible {:>6}  in flight {:>6}",
                queue.name, d.visible, d.in_flight
            ),
            None => println!("queue  {:<48} MISSING", queue.name),
        }
    }
    for bucket in &status.buckets {
        let state = if bucket.exists { "ok" } else { "MISSING" };
        println!("bucket {:<48} {state}", bucket.name);
    }
    println!("instances: {}", status.instances.len());
    for instance in &status.instances {
        println!("  {} {}", instance.id, instance.state.as_str());
    }
    if !status.complete() {
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
    let removed = teardown(&clients, &config)
        .await
        .with_context(|| format!("tearing down fleet {}", config.fleet))?;
    if removed.is_empty() {
        eprintln!("nothing to remove for fleet {}", config.fleet);
    }
    for item in removed {
        println!("removed {item}");
    }
    Ok(true)
}

fn confirm(config: &AwsConfig) -> anyhow::Result<bool> {
    eprint!(
        "This terminates every instance of fleet {}, deletes queues {}, {}, {} and buckets {}, {} with all their objects.\nType the fleet name to confirm: ",
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
