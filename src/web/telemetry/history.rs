//! The last minutes of the service, for the dashboard: one sample a second
//! in a ring buffer (its chart), and a window of recent results (its
//! throughput and latency figures).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::job::{JobResult, Outcome};

/// One look at the service.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sample {
    pub at_ms: u64,
    /// Request queue: waiting, and held by workers.
    pub visible: u64,
    pub in_flight: u64,
    pub dead_letters: u64,
    /// Uploads held open here, waiting for their labels.
    pub waiting: usize,
    /// Instances by state; `None` without a controller in this process.
    pub instances: Option<InstanceCounts>,
    /// The policy's count after clamping, once the controller has ticked.
    pub desired: Option<u32>,
    /// Results per second over the last [`THROUGHPUT_WINDOW`].
    pub results_per_s: f64,
    /// Submission to result, over the results of the last [`LATENCY_WINDOW`].
    pub latency_ms: Option<Percentiles>,
    /// Results routed since the start: labels, failures.
    pub done: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InstanceCounts {
    pub pending: u32,
    pub running: u32,
    pub draining: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
}

pub const THROUGHPUT_WINDOW: Duration = Duration::from_secs(10);
pub const LATENCY_WINDOW: Duration = Duration::from_secs(60);

/// Samples, oldest first, at most `capacity`.
#[derive(Debug)]
pub struct Ring {
    samples: VecDeque<Sample>,
    capacity: usize,
}

impl Ring {
    pub fn new(capacity: usize) -> Ring {
        Ring {
            samples: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
        }
    }

    pub fn push(&mut self, sample: Sample) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    pub fn to_vec(&self) -> Vec<Sample> {
        self.samples.iter().cloned().collect()
    }
}

/// Results of the last minute, as they were routed.
#[derive(Debug, Default)]
pub struct Recent {
    /// (when routed, submission to completion in ms), oldest first.
    results: VecDeque<(Instant, f64)>,
    done: u64,
    failed: u64,
}

impl Recent {
    pub fn observe(&mut self, result: &JobResult, now: Instant) {
        match result.outcome {
            Outcome::Done { .. } => self.done += 1,
            Outcome::Failed { .. } => self.failed += 1,
        }
        let ms = result
            .completed_at_ms
            .saturating_sub(result.submitted_at_ms) as f64;
        self.results.push_back((now, ms));
        self.forget_before(now);
    }

    fn forget_before(&mut self, now: Instant) {
        while self
            .results
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > LATENCY_WINDOW)
        {
            self.results.pop_front();
        }
    }

    /// Fills the sample's throughput, latency and totals.
    pub fn summarise(&mut self, now: Instant, sample: &mut Sample) {
        self.forget_before(now);
        let recent = self
            .results
            .iter()
            .filter(|(at, _)| now.duration_since(*at) <= THROUGHPUT_WINDOW)
            .count();
        sample.results_per_s = recent as f64 / THROUGHPUT_WINDOW.as_secs_f64();
        let mut latencies: Vec<f64> = self.results.iter().map(|(_, ms)| *ms).collect();
        latencies.sort_by(f64::total_cmp);
        sample.latency_ms = (!latencies.is_empty()).then(|| Percentiles {
            p50: quantile(&latencies, 0.5),
            p95: quantile(&latencies, 0.95),
        });
        sample.done = self.done;
        sample.failed = self.failed;
    }
}

/// The nearest-rank quantile of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{FailureKind, JobId};

    fn result(ms: u64, ok: bool) -> JobResult {
        let outcome = if ok {
            Outcome::Done {
                label: "cat".into(),
                probability: 1.0,
                top5: Vec::new(),
                width: 1,
                height: 1,
                timings: Default::default(),
            }
        } else {
            Outcome::Failed {
                kind: FailureKind::Undecodable,
                message: "no".into(),
            }
        };
        JobResult {
            id: JobId::new(),
            file_name: "a".into(),
            outcome,
            model: "m".into(),
            worker_id: "w".into(),
            attempt: 1,
            submitted_at_ms: 1000,
            completed_at_ms: 1000 + ms,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_samples() {
        let mut ring = Ring::new(3);
        for at_ms in 0..5 {
            ring.push(Sample {
                at_ms,
                ..Sample::default()
            });
        }
        let kept: Vec<u64> = ring.to_vec().iter().map(|s| s.at_ms).collect();
        assert_eq!(kept, [2, 3, 4]);
    }

    #[test]
    fn throughput_and_latency_cover_their_windows() {
        let start = Instant::now();
        let mut recent = Recent::default();
        // Old results: in the latency window, not the throughput one.
        for ms in [100, 200] {
            recent.observe(&result(ms, true), start);
        }
        let later = start + Duration::from_secs(30);
        for ms in [300, 400, 500] {
            recent.observe(&result(ms, true), later);
        }
        recent.observe(&result(50, false), later);
        let mut sample = Sample::default();
        recent.summarise(later, &mut sample);
        assert_eq!(sample.results_per_s, 0.4);
        assert_eq!(sample.latency_ms.unwrap().p50, 200.0);
        assert_eq!(sample.latency_ms.unwrap().p95, 500.0);
        assert_eq!((sample.done, sample.failed), (5, 1));

        // A minute on, the window is empty; the totals stay.
        let mut sample = Sample::default();
        recent.summarise(later + Duration::from_secs(61), &mut sample);
        assert_eq!(sample.results_per_s, 0.0);
        assert_eq!(sample.latency_ms, None);
        assert_eq!(sample.done, 5);
    }
}
