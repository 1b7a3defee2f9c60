//! Instant activation: a job that arrives while the fleet is at zero, or a
//! backlog that jumps, wakes the controller at once instead of at its next
//! tick (up to 2 s later, then a worker start). Two signals:
//!
//! - in one process (`serve`), the web tier counts each job it queues and
//!   notifies the controller ([`Arrivals`]);
//! - across processes, while the fleet is at zero the controller polls the
//!   queue's cheap change signal (`Queue::sent_count`: a counter row the
//!   SQLite queue bumps in each send's transaction, read every 50 ms), or on
//!   a backend without one (SQS) its depth once a second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Woken ticks come at most this often, so a burst of uploads does not
/// turn into a tick per upload.
pub const MIN_WAKE_GAP: Duration = Duration::from_millis(200);
/// Arrivals since the last tick, per active instance, that count as a
/// jumping backlog (the default policy's one instance per 10 messages).
pub const WAKE_ARRIVALS_PER_INSTANCE: u64 = 10;
/// How often a controller at zero reads the queue's change counter.
pub const COUNTER_POLL: Duration = Duration::from_millis(50);
/// How often a controller at zero reads the depth of a queue without a
/// counter (SQS: one request a second, about $1.30 a month, only at zero).
pub const DEPTH_POLL: Duration = Duration::from_secs(1);

/// Jobs queued by this process's web tier, and a bell for the controller.
#[derive(Debug, Default)]
pub struct Arrivals {
    count: AtomicU64,
    bell: Notify,
}

impl Arrivals {
    /// One job queued: count it and ring.
    pub fn arrived(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.bell.notify_one();
    }

    /// Jobs queued since the start.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits for the next ring (one stored if it rang while nobody waited).
    pub async fn rung(&self) {
        self.bell.notified().await
    }
}

/// Whether `arrived` jobs since the last tick warrant a tick now, for a
/// fleet of `active` instances: any job when there are none, else a jump
/// of [`WAKE_ARRIVALS_PER_INSTANCE`] per instance.
pub fn worth_waking(arrived: u64, active: u32) -> bool {
    arrived > 0
        && (active == 0 || arrived >= WAKE_ARRIVALS_PER_INSTANCE.saturating_mul(u64::from(active)))
}

/// What started a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The regular interval.
    Interval,
    /// Jobs queued by this process's web tier.
    Arrival,
    /// The queue's change signal, while the fleet was at zero.
    Queue,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_job_wakes_an_empty_fleet_and_a_jump_wakes_a_running_one() {
        assert!(!worth_waking(0, 0));
        assert!(worth_waking(1, 0));
        assert!(!worth_waking(9, 1));
        assert!(worth_waking(10, 1));
        assert!(!worth_waking(39, 4));
        assert!(worth_waking(40, 4));
    }
}
