//! The command line: one binary, one subcommand per role. Each command's
//! flags live beside its `run` in `commands/`.

use clap::{Parser, Subcommand};

use crate::commands::args::WebArgs;
use crate::commands::logging::{LogFormat, LOG_FORMAT_ENV};
use crate::commands::{
    aws::AwsCommand, classify::ClassifyArgs, controller::ControllerArgs, dlq::DlqCommand,
    load::LoadArgs, plan::PlanArgs, policy::PolicyCommand, serve::ServeArgs,
    simulate::SimulateArgs, worker::WorkerArgs,
};

#[derive(Debug, Parser)]
#[command(
    name = "imagefleet",
    version,
    about = "Autoscaling image recognition: upload images, get labels"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as readable text or as JSON objects (one per line).
    #[arg(long, global = true, value_enum, env = LOG_FORMAT_ENV, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything on one machine: web tier and local worker fleet.
    Serve(ServeArgs),
    /// The web tier alone (needs workers on the same data dir).
    Web(WebArgs),
    /// One worker: take jobs from the queue, classify, store results.
    Worker(WorkerArgs),
    /// Classify image files directly, without any server.
    Classify(ClassifyArgs),
    /// The autoscaling controller for the local fleet (no web tier).
    Controller(ControllerArgs),
    /// Evaluate the policy once for a given state and print the plan.
    Plan(PlanArgs),
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Replay a workload trace through a policy on a simulated clock.
    Simulate(SimulateArgs),
    /// Send concurrent uploads to a running service and report throughput.
    Load(LoadArgs),
    /// Jobs set aside in the dead-letter queue: list them, send them again.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// AWS resources of a fleet: setup, status, teardown.
    #[command(subcommand)]
    Aws(AwsCommand),
}
