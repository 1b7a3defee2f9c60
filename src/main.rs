use std::process::ExitCode;

use clap::Parser;
use imagefleet::cli::{Cli, Command};
use imagefleet::commands;

fn main() -> ExitCode {
    let cli = Cli::parse();
    commands::logging::init(cli.log_format);
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(commands::serve::run(args)).map(|()| true),
        Command::Web(args) => runtime.block_on(commands::web::run(args)).map(|()| true),
        Command::Worker(args) => runtime.block_on(commands::worker::run(args)).map(|()| true),
        Command::Classify(args) => commands::classify::run(args),
        Command::Controller(args) => runtime
            .block_on(commands::controller::run(args))
            .map(|()| true),
        Command::Plan(args) => commands::plan::run(args).map(|()| true),
        Command::Policy { command } => commands::policy::run(command),
        Command::Simulate(args) => commands::simulate::run(args).map(|()| true),
        Command::Load(args) => commands::load::run(args),
        Command::Dlq(command) => runtime.block_on(commands::dlq::run(command)),
        Command::Aws(command) => runtime.block_on(commands::aws::run(command)),
    }
}
