//! `GET /metrics`: the Prometheus series of the web tier and, when it runs
//! in this process, the controller. One registry per web tier (no global
//! default registry), encoded by the `prometheus` crate's text encoder.
//!
//! The names, labels and meanings are listed in docs/metrics.md; a test
//! parses the output and looks for each series.

use std::sync::Mutex;

use anyhow::Context;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::controller::ControllerStatus;
use crate::fleet::InstanceState;
use crate::job::{JobResult, Outcome};
use crate::queue::QueueDepth;

/// Latencies a person waits through: from a few milliseconds (a warm
/// worker) to the 60 s result timeout.
const WAIT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// One model run: about 13 ms on the reference machine, more when a
/// worker shares its core.
const INFERENCE_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
];

pub struct Metrics {
    registry: Registry,
    uploads: IntCounterVec,
    upload_seconds: HistogramVec,
    results: IntCounterVec,
    job_seconds: Histogram,
    queue_wait_seconds: Histogram,
    inference_seconds: Histogram,
    queue_messages: IntGaugeVec,
    dead_letters: IntGauge,
    waiting_requests: IntGauge,
    instances: IntGaugeVec,
    instances_desired: IntGauge,
    scaling_actions: IntCounterVec,
    scaled_instances: IntCounterVec,
    policy_reloads: IntCounter,
    policy_errors: IntCounter,
    policy_error: IntGauge,
    tick_errors: IntCounter,
    /// The controller's own counts as last mirrored: its counters grow by
    /// the difference, so they stay counters however often they are read.
    mirrored: Mutex<Mirrored>,
}

#[derive(Default)]
struct Mirrored {
    launches: u64,
    terminations: u64,
    launched: u64,
    terminated: u64,
    reloads: u64,
    policy_errors: u64,
    tick_errors: u64,
}

impl Metrics {
    pub fn new() -> anyhow::Result<Metrics> {
        let registry = Registry::new_custom(Some("imagefleet".into()), None)?;
        let uploads = IntCounterVec::new(
            Opts::new(
                "uploads_total",
                "Uploads answered, by route and HTTP status.",
            ),
            &["route", "status"],
        )?;
        let upload_seconds = HistogramVec::new(
            HistogramOpts::new(
                "upload_duration_seconds",
                "From the upload's arrival to its answer, as the web tier saw it (end to end for POST / and /upload; queueing only for POST /jobs).",
            )
            .buckets(WAIT_BUCKETS.to_vec()),
            &["route"],
        )?;
        let results = IntCounterVec::new(
            Opts::new(
                "results_total",
                "Job results routed back by this web tier, by outcome (done, or the failure kind).",
            ),
            &["outcome"],
        )?;
        let job_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "job_duration_seconds",
                "From a job's submission to its result, per the result's timestamps.",
            )
            .buckets(WAIT_BUCKETS.to_vec()),
        )?;
        let queue_wait_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "queue_wait_seconds",
                "Time a job waited in the request queue before a worker took it (from the result's timings).",
            )
            .buckets(WAIT_BUCKETS.to_vec()),
        )?;
        let inference_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "inference_seconds",
                "Model run time per image (from the result's timings).",
            )
            .buckets(INFERENCE_BUCKETS.to_vec()),
        )?;
        let queue_messages = IntGaugeVec::new(
            Opts::new(
                "queue_messages",
                "Messages in the request queue: visible (waiting) or in flight (held by a worker).",
            ),
            &["state"],
        )?;
        let dead_letters = IntGauge::new(
            "dead_letter_messages",
            "Requests set aside in the dead-letter queue.",
        )?;
        let waiting_requests = IntGauge::new(
            "waiting_requests",
            "Uploads this web tier holds open, waiting for their labels.",
        )?;
        let instances = IntGaugeVec::new(
            Opts::new(
                "instances",
                "Worker instances by state, as the controller last listed them.",
            ),
            &["state"],
        )?;
        let instances_desired = IntGauge::new(
            "instances_desired",
            "The policy's desired instance count after clamping to the limits.",
        )?;
        let scaling_actions = IntCounterVec::new(
            Opts::new(
                "scaling_actions_total",
                "Scaling actions the controller applied, by action (launch, terminate).",
            ),
            &["action"],
        )?;
        let scaled_instances = IntCounterVec::new(
            Opts::new(
                "scaled_instances_total",
                "Instances launched or terminated by those actions.",
            ),
            &["action"],
        )?;
        let policy_reloads = IntCounter::new(
            "policy_reloads_total",
            "Edits of the policy file the controller picked up.",
        )?;
        let policy_errors = IntCounter::new(
            "policy_errors_total",
            "Policy versions refused (compile error, exception, operation limit, nonsense result).",
        )?;
        let policy_error = IntGauge::new(
            "policy_error",
            "1 while the policy file's current text is not in charge (the last good version decides).",
        )?;
        let tick_errors = IntCounter::new(
            "controller_tick_errors_total",
            "Controller ticks that failed (queue or fleet unreachable).",
        )?;
        for action in ["launch", "terminate"] {
            scaling_actions.with_label_values(&[action]);
            scaled_instances.with_label_values(&[action]);
        }
        for state in ["visible", "in_flight"] {
            queue_messages.with_label_values(&[state]);
        }
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(uploads.clone()),
            Box::new(upload_seconds.clone()),
            Box::new(results.clone()),
            Box::new(job_seconds.clone()),
            Box::new(queue_wait_seconds.clone()),
            Box::new(inference_seconds.clone()),
            Box::new(queue_messages.clone()),
            Box::new(dead_letters.clone()),
            Box::new(waiting_requests.clone()),
            Box::new(instances.clone()),
            Box::new(instances_desired.clone()),
            Box::new(scaling_actions.clone()),
            Box::new(scaled_instances.clone()),
            Box::new(policy_reloads.clone()),
            Box::new(policy_errors.clone()),
            Box::new(policy_error.clone()),
            Box::new(tick_errors.clone()),
        ];
        for collector in collectors {
            registry.register(collector)?;
        }
        Ok(Metrics {
            registry,
            uploads,
            upload_seconds,
            results,
            job_seconds,
            queue_wait_seconds,
            inference_seconds,
            queue_messages,
            dead_letters,
            waiting_requests,
            instances,
            instances_desired,
            scaling_actions,
            scaled_instances,
            policy_reloads,
            policy_errors,
            policy_error,
            tick_errors,
            mirrored: Mutex::default(),
        })
    }

    /// An upload answered on `route` with `status` after `seconds`.
    pub fn observe_upload(&self, route: &str, status: u16, seconds: f64) {
        self.uploads
            .with_label_values(&[route, &status.to_string()])
            .inc();
        self.upload_seconds
            .with_label_values(&[route])
            .observe(seconds);
    }

    /// A result on its way back through the result queue: whichever
    /// process ran the job, its timings arrive here.
    pub fn observe_result(&self, result: &JobResult) {
        let job = result
            .completed_at_ms
            .saturating_sub(result.submitted_at_ms) as f64
            / 1e3;
        self.job_seconds.observe(job);
        match &result.outcome {
            Outcome::Done { timings, .. } => {
                self.results.with_label_values(&["done"]).inc();
                self.queue_wait_seconds.observe(timings.queue_wait_ms / 1e3);
                self.inference_seconds
                    .observe(timings.stages.inference_ms / 1e3);
            }
            Outcome::Failed { kind, .. } => {
                self.results.with_label_values(&[kind.as_str()]).inc();
            }
        }
    }

    pub fn set_queue(&self, requests: QueueDepth, dead_letters: QueueDepth) {
        let gauge = |state: &str, value: u64| {
            self.queue_messages
                .with_label_values(&[state])
                .set(value as i64);
        };
        gauge("visible", requests.visible);
        gauge("in_flight", requests.in_flight);
        self.dead_letters.set(dead_letters.backlog() as i64);
    }

    pub fn set_waiting_requests(&self, waiting: usize) {
        self.waiting_requests.set(waiting as i64);
    }

    /// Mirrors the controller's view: gauges set, counters grown by what
    /// the controller counted since the last call.
    pub fn set_controller(&self, status: &ControllerStatus) {
        for state in [
            InstanceState::Pending,
            InstanceState::Running,
            InstanceState::Draining,
        ] {
            let count = status.instances.iter().filter(|i| i.state == state).count();
            self.instances
                .with_label_values(&[state.as_str()])
                .set(count as i64);
        }
        if let Some(plan) = &status.last_plan {
            self.instances_desired.set(i64::from(plan.desired));
        }
        self.policy_error
            .set(i64::from(status.policy.error_text.is_some()));
        let activity = &status.activity;
        let mut last = self.mirrored.lock().unwrap_or_else(|p| p.into_inner());
        let grow = |counter: &IntCounter, last: &mut u64, now: u64| {
            counter.inc_by(now.saturating_sub(*last));
            *last = now.max(*last);
        };
        grow(
            &self.scaling_actions.with_label_values(&["launch"]),
            &mut last.launches,
            activity.launches,
        );
        grow(
            &self.scaling_actions.with_label_values(&["terminate"]),
            &mut last.terminations,
            activity.terminations,
        );
        grow(
            &self.scaled_instances.with_label_values(&["launch"]),
            &mut last.launched,
            activity.launched,
        );
        grow(
            &self.scaled_instances.with_label_values(&["terminate"]),
            &mut last.terminated,
            activity.terminated,
        );
        grow(
            &self.policy_reloads,
            &mut last.reloads,
            status.policy.reloads,
        );
        grow(
            &self.policy_errors,
            &mut last.policy_errors,
            activity.policy_errors,
        );
        grow(
            &self.tick_errors,
            &mut last.tick_errors,
            activity.tick_errors,
        );
    }

    /// The text exposition format.
    pub fn encode(&self) -> anyhow::Result<String> {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .context("encoding the metrics")?;
        String::from_utf8(buffer).context("the metrics are not UTF-8")
    }
}

/// The content type of the text format, version included, as scrapers
/// expect it.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;
