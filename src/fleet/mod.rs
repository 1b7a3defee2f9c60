//! The `Fleet` seam: the instances that run workers. Locally they are child
//! processes; on AWS, tagged EC2 instances or an Auto Scaling group.

mod asg;
mod aws_activity;
mod backoff;
mod controller_lease;
mod ec2;
mod launches;
mod local;
mod lock;
mod registry;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use asg::AsgFleet;
pub use aws_activity::{AwsActivity, Reporting, IDLE_GRACE};
pub use controller_lease::{ControllerLease, Holder, LeaseError, LEASE_KEY, LEASE_TTL};
pub use ec2::{Ec2Fleet, FLEET_TAG};
pub use local::{default_max_local_workers, LocalFleet, WorkerCommand, STOP_GRACE};
pub use lock::{FleetLock, LockError};
pub use registry::{InstanceRegistry, RegistryActivity};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Launched, not ready for jobs yet (booting, loading the model).
    Pending,
    /// Taking jobs.
    Running,
    /// Told to stop; finishing its current job.
    Draining,
}

impl InstanceState {
    pub fn as_str(&self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::Draining => "draining",
        }
    }

    pub fn parse(text: &str) -> Option<InstanceState> {
        match text {
            "pending" => Some(InstanceState::Pending),
            "running" => Some(InstanceState::Running),
            "draining" => Some(InstanceState::Draining),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub state: InstanceState,
    /// Whether it is working on a job right now; `None` when the backend
    /// cannot tell (then it counts as busy, so it is not stopped first).
    pub busy: Option<bool>,
    pub launched_at_ms: u64,
}

impl Instance {
    pub fn is_idle(&self) -> bool {
        self.state == InstanceState::Running && self.busy == Some(false)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot launch instances: {0}")]
    Launch(String),
    #[error("cannot terminate instances: {0}")]
    Terminate(String),
    #[error("cannot list instances: {0}")]
    List(String),
    #[error("cannot report worker activity: {0}")]
    Activity(String),
}

/// What a worker process tells its fleet: when it starts and finishes
/// work, so the fleet can tell idle workers from busy ones (and stop idle
/// ones first).
pub trait ActivityReporter: Send + Sync {
    fn busy(&self, busy: bool);
}

#[async_trait]
pub trait Fleet: Send + Sync {
    /// Live instances (gone ones are not listed).
    async fn list(&self) -> Result<Vec<Instance>, FleetError>;
    /// Starts `count` instances; returns their ids.
    async fn launch(&self, count: usize) -> Result<Vec<String>, FleetError>;
    /// Asks these instances to finish their current job and stop.
    async fn terminate(&self, ids: &[String]) -> Result<(), FleetError>;
}
