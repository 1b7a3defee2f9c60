//! Every second: read the queues and the in-process controller, set the
//! gauges, add a sample to the history and hand it to open dashboards.

use std::time::{Duration, Instant};

use super::{InstanceCounts, Live, Sample};
use crate::fleet::InstanceState;
use crate::job::unix_millis;
use crate::queue::QueueDepth;
use crate::shutdown::Shutdown;
use crate::web::WebState;

/// How often the service is looked at.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Samples until `shutdown`, then ends the live feeds.
pub async fn sample_until(state: WebState, mut shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut logged_error = false;
    loop {
        tokio::select! {
            _ = shutdown.requested() => break,
            _ = ticker.tick() => {}
        }
        let live = look(&state).await;
        // Once per outage, not once a second.
        match (&live.queue_error, logged_error) {
            (Some(error), false) => {
                tracing::warn!(%error, "the dashboard and metrics cannot read the queue");
                logged_error = true;
            }
            (None, true) => logged_error = false,
            _ => {}
        }
        state.telemetry.publish(live);
    }
    state.telemetry.end();
}

async fn look(state: &WebState) -> Live {
    let telemetry = &state.telemetry;
    let (requests, dead_letters) = tokio::join!(
        state.services.requests.depth(),
        state.services.dead_letters.depth()
    );
    let queue_error = match (&requests, &dead_letters) {
        (Err(e), _) | (_, Err(e)) => Some(e.to_string()),
        _ => None,
    };
    let requests = requests.unwrap_or_default();
    let dead_letters = dead_letters.unwrap_or_default();
    let waiting = state.router.waiting();
    telemetry.0.metrics.set_queue(requests, dead_letters);
    telemetry.0.metrics.set_waiting_requests(waiting);
    let controller = state.controller.as_ref().map(|c| c.snapshot());
    if let Some(status) = &controller {
        telemetry.0.metrics.set_controller(status);
    }
    let mut sample = Sample {
        at_ms: unix_millis(),
        visible: requests.visible,
        in_flight: requests.in_flight,
        dead_letters: QueueDepth::backlog(&dead_letters),
        waiting,
        instances: controller.as_ref().map(|status| {
            let count = |state| status.instances.iter().filter(|i| i.state == state).count() as u32;
            InstanceCounts {
                pending: count(InstanceState::Pending),
                running: count(InstanceState::Running),
                draining: count(InstanceState::Draining),
            }
        }),
        desired: controller
            .as_ref()
            .and_then(|status| status.last_plan.as_ref())
            .map(|plan| plan.desired),
        ..Sample::default()
    };
    super::lock(&telemetry.0.recent).summarise(Instant::now(), &mut sample);
    Live {
        sample,
        queue_error,
        controller,
    }
}
