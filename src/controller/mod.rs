//! The controller: a reconcile loop. Each tick observes the queue and the
//! fleet, asks the policy for a count, plans the difference within the
//! limits, and applies it (or, in dry run, prints it).

mod activity;
pub mod plan;
mod status;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tracing::Instrument;

pub use activity::{Activity, ScaleEvent};
pub use plan::{Action, Limits, Plan};
pub use status::{ControllerStatus, SharedStatus};

use crate::fleet::Fleet;
use crate::policy::PolicySource;
use crate::queue::Queue;
use crate::shutdown::Shutdown;

/// The cap on EC2 instances unless `--max-instances` says otherwise.
pub const DEFAULT_MAX_INSTANCES: u32 = 20;

#[derive(Debug, Clone)]
pub struct ControllerSettings {
    pub interval: Duration,
    pub limits: Limits,
    /// Print each plan instead of applying it.
    pub dry_run: bool,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        ControllerSettings {
            interval: Duration::from_secs(2),
            limits: Limits::default(),
            dry_run: false,
        }
    }
}

pub struct Controller {
    queue: Arc<dyn Queue>,
    fleet: Arc<dyn Fleet>,
    /// Shared with the blocking thread that evaluates it.
    policy: Arc<Mutex<PolicySource>>,
    settings: ControllerSettings,
    status: SharedStatus,
    last_scale: Option<Instant>,
}

impl Controller {
    pub fn new(
        queue: Arc<dyn Queue>,
        fleet: Arc<dyn Fleet>,
        policy: PolicySource,
        settings: ControllerSettings,
    ) -> Controller {
        let status = SharedStatus::new(&settings, policy.status());
        Controller {
            queue,
            fleet,
            policy: Arc::new(Mutex::new(policy)),
            settings,
            status,
            last_scale: None,
        }
    }

    /// What `GET /status` shows.
    pub fn status(&self) -> SharedStatus {
        self.status.clone()
    }

    /// One reconcile step: observe, decide, plan, then apply or print.
    pub async fn tick(&mut self) -> anyhow::Result<Plan> {
        let depth = self.queue.depth().await.context("observing the queue")?;
        let instances = self.fleet.list().await.context("observing the fleet")?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let since_last_scale = self.last_scale.map(|t| t.elapsed().as_secs_f64());
        let observation = plan::observe(
            depth,
            &instances,
            self.settings.limits,
            since_last_scale,
            now,
        );
        // Reading the file and running the script block for up to the
        // policy's deadline (a few times over when versions fail): on the
        // async runtime that stalled every task on this worker thread,
        // `/healthz` included.
        let policy = Arc::clone(&self.policy);
        let observed = observation.clone();
        let (decision, policy_status) = tokio::task::spawn_blocking(move || {
            let mut policy = policy.lock().unwrap_or_else(PoisonError::into_inner);
            policy.refresh();
            let decision = policy.decide(&observed);
            (decision, policy.status())
        })
        .await
        .context("evaluating the policy")?;
        let plan = plan::plan(decision, observation, &instances, self.settings.limits);

        if self.settings.dry_run {
            // The product of a dry run: one line per tick on stdout.
            println!("{plan}");
        } else {
            self.apply(&plan).await?;
        }
        self.status.record(&plan, instances, policy_status);
        Ok(plan)
    }

    async fn apply(&mut self, plan: &Plan) -> anyhow::Result<()> {
        match &plan.action {
            Action::Hold => {
                tracing::debug!("{plan}");
                return Ok(());
            }
            Action::Launch(count) => {
                tracing::info!("{plan}");
                self.fleet.launch(*count as usize).await?;
            }
            Action::Terminate(ids) => {
                tracing::info!("{plan}");
                self.fleet.terminate(ids).await?;
            }
        }
        self.last_scale = Some(Instant::now());
        Ok(())
    }

    /// Ticks every `interval` until shutdown. A failing tick (queue or fleet
    /// unreachable) is logged and retried on the next one.
    pub async fn run(mut self, mut shutdown: Shutdown) {
        let mut ticker = tokio::time::interval(self.settings.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u64;
        loop {
            tokio::select! {
                _ = shutdown.requested() => break,
                _ = ticker.tick() => {}
            }
            // The controller serves no request, so its lines carry the tick
            // instead: the lines of one decision read together.
            ticks += 1;
            let span = tracing::info_span!("tick", n = ticks);
            if let Err(e) = self.tick().instrument(span.clone()).await {
                let _in_tick = span.enter();
                tracing::error!(error = format!("{e:#}"), "controller tick failed");
                self.status.record_error(format!("{e:#}"));
            }
        }
    }
}
