//! `imagefleet plan`: the policy's answer for one hypothetical state.

use clap::Args;

use super::args::{LimitArgs, PolicyArgs};
use crate::controller::plan::{observe, plan};
use crate::controller::DEFAULT_MAX_INSTANCES;
use crate::fleet::{Instance, InstanceState};
use crate::queue::QueueDepth;

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Messages waiting in the queue.
    #[arg(long, default_value_t = 0)]
    pub visible: u64,
    /// Messages being worked on.
    #[arg(long, default_value_t = 0)]
    pub in_flight: u64,
    /// Running instances.
    #[arg(long, default_value_t = 0)]
    pub running: u32,
    /// Instances still starting.
    #[arg(long, default_value_t = 0)]
    pub pending: u32,
    /// Of the running instances, how many are idle (default: all but one per
    /// in-flight message).
    #[arg(long)]
    pub idle: Option<u32>,
    /// Seconds since the last scaling action (default: never).
    #[arg(long)]
    pub since_last_scale: Option<f64>,
}

pub fn run(args: PlanArgs) -> anyhow::Result<()> {
    let limits = args.limits.limits(DEFAULT_MAX_INSTANCES)?;
    let mut policy = args.policy.open()?;
    let busy = args.in_flight.min(u64::from(args.running)) as u32;
    let idle = args.idle.unwrap_or(args.running - busy).min(args.running);
    // Hypothetical instances: named by state, idle ones first.
    let instances: Vec<Instance> = (0..args.running)
        .map(|i| Instance {
            id: format!("running-{}", i + 1),
            state: InstanceState::Running,
            busy: Some(i >= idle),
            launched_at_ms: u64::from(i),
        })
        .chain((0..args.pending).map(|i| Instance {
            id: format!("pending-{}", i + 1),
            state: InstanceState::Pending,
            busy: None,
            launched_at_ms: u64::from(args.running + i),
        }))
        .collect();
    let depth = QueueDepth {
        visible: args.visible,
        in_flight: args.in_flight,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let observation = observe(depth, &instances, limits, args.since_last_scale, now);
    let decision = policy.decide(&observation);
    if let Some(error) = policy.status().error {
        eprintln!(
            "warning: {}: {error}; used the built-in default",
            args.policy.path().display()
        );
    }
    println!("{}", plan(decision, observation, &instances, limits));
    Ok(())
}
