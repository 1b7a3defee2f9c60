//! `imagefleet aws setup|status|teardown`: the fleet's AWS resources.

use std::io::{BufRead, Write};

use anyhow::Context;

use crate::aws::resources::{self, Outcome};
use crate::aws::{AwsClients, AwsConfig};
use crate::cli::{AwsCommand, AwsTarget};

pub async fn run(command: AwsCommand) -> anyhow::Result<bool> {
    match command {
        AwsCommand::Setup(target) => setup(&target).await,
        AwsCommand::Status(args) => status(&args.target, args.json).await,
        AwsCommand::Teardown(args) => teardown(&args.target, args.yes).await,
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

async fn setup(target: &AwsTarget) -> anyhow::Result<bool> {
    let (config, clients) = connect(target).await?;
    let steps = resources::setup(&clients, &config)
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

async fn status(target: &AwsTarget, json: bool) -> anyhow::Result<bool> {
    let (config, clients) = connect(target).await?;
    let status = resources::status(&clients, &config).await?;
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

async fn teardown(target: &AwsTarget, yes: bool) -> anyhow::Result<bool> {
    let (config, clients) = connect(target).await?;
    if !yes && !confirm(&config)? {
        eprintln!("nothing removed");
        return Ok(false);
    }
    let removed = resources::teardown(&clients, &config)
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
