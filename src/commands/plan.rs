//! `imagefleet plan`: the policy's answer for one hypothetical state.

use crate::cli::PlanArgs;
use crate::commands::controller::DEFAULT_MAX_INSTANCES;
use crate::controller::plan::{observe, plan};
use crate::fleet::{Instance, InstanceState};
use crate::policy::PolicySource;
use crate::queue::QueueDepth;

pub fn run(args: PlanArgs) -> anyhow::Result<()> {
    let limits = args.limits.limits(DEFAULT_MAX_INSTANCES)?;
    let mut policy = PolicySource::open(&args.policy.path())?;
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
