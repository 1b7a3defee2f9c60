//! What the web tier knows about the service, for people and monitors: the
//! Prometheus metrics, and the dashboard's live feed and short history.
//!
//! Three sources feed it: the uploads this tier answers (a middleware),
//! the results it routes back (a tap on the result queue), and a sampler
//! that looks at the queues and the in-process controller every second.

mod history;
mod metrics;
mod sampler;
mod tap;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{FromRef, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::watch;

pub use history::{InstanceCounts, Sample};
pub use sampler::sample_until;
pub use tap::ResultTap;

use crate::controller::ControllerStatus;
use crate::job::JobResult;
use history::{Recent, Ring};
use metrics::Metrics;

/// One sample a second: five minutes of chart.
pub const HISTORY_SAMPLES: usize = 300;

/// The service now, as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Live {
    pub sample: Sample,
    /// Why the queue could not be read, if it could not.
    pub queue_error: Option<String>,
    /// The controller's view, when one runs in this process.
    pub controller: Option<ControllerStatus>,
}

/// Shared by the handlers, the result tap and the sampler.
#[derive(Clone)]
pub struct Telemetry(Arc<Inner>);

struct Inner {
    metrics: Metrics,
    recent: Mutex<Recent>,
    ring: Mutex<Ring>,
    live: watch::Sender<Option<Arc<Live>>>,
    /// Set when the sampler stops (the web tier is stopping): live feeds
    /// end then, so open dashboards do not hold the shutdown up.
    ended: watch::Sender<bool>,
}

/// What a dashboard connection follows.
pub struct Feed {
    pub history: Vec<Sample>,
    pub live: watch::Receiver<Option<Arc<Live>>>,
    pub ended: watch::Receiver<bool>,
}

impl Telemetry {
    pub fn new() -> anyhow::Result<Telemetry> {
        Ok(Telemetry(Arc::new(Inner {
            metrics: Metrics::new()?,
            recent: Mutex::default(),
            ring: Mutex::new(Ring::new(HISTORY_SAMPLES)),
            live: watch::channel(None).0,
            ended: watch::channel(false).0,
        })))
    }

    pub fn observe_result(&self, result: &JobResult) {
        self.0.metrics.observe_result(result);
        lock(&self.0.recent).observe(result, Instant::now());
    }

    /// The history so far and the live updates after it.
    pub fn feed(&self) -> Feed {
        // Subscribe first: a sample pushed in between is then seen twice
        // rather than missed.
        let live = self.0.live.subscribe();
        let ended = self.0.ended.subscribe();
        Feed {
            history: lock(&self.0.ring).to_vec(),
            live,
            ended,
        }
    }

    fn publish(&self, live: Live) {
        lock(&self.0.ring).push(live.sample.clone());
        self.0.live.send_replace(Some(Arc::new(live)));
    }

    fn end(&self) {
        self.0.ended.send_replace(true);
    }
}

impl FromRef<super::WebState> for Telemetry {
    fn from_ref(state: &super::WebState) -> Telemetry {
        state.telemetry.clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The routes that take uploads, as the metrics label them.
const UPLOAD_ROUTES: [&str; 3] = ["/", "/upload", "/jobs"];

/// Middleware: counts every answered upload and times it to its answer.
pub async fn track_uploads(
    State(telemetry): State<Telemetry>,
    request: Request,
    next: Next,
) -> Response {
    let route = (request.method() == Method::POST)
        .then(|| {
            UPLOAD_ROUTES
                .into_iter()
                .find(|route| *route == request.uri().path())
        })
        .flatten();
    let started = Instant::now();
    let response = next.run(request).await;
    if let Some(route) = route {
        telemetry.0.metrics.observe_upload(
            route,
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
    }
    response
}

/// `GET /metrics`: the Prometheus text format.
pub async fn metrics(State(telemetry): State<Telemetry>) -> Response {
    match telemetry.0.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "cannot encode the metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response()
        }
    }
}
