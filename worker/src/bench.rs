//! Stage timings over many runs, summarised as median, p90 and mean, plus the
//! process's memory: the library side of the developer benchmark
//! (`cargo run -p imagefleet-worker --bin worker-bench`), shared with the
//! benches so they all report the same figures the same way.

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::TypedNode;

use crate::classifier::{Classifier, StageTimings};
use crate::decode::{decode_rgb_at_least, DEFAULT_MAX_PIXELS};
use crate::error::ClassifyError;
use crate::preprocess::preprocess;

/// Median, 90th percentile and mean of a set of timings, in
/// milliseconds. The mean is what a busy worker's throughput follows: on
/// mixed uploads a few large images weigh more than the median shows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub median_ms: f64,
    pub p90_ms: f64,
    pub mean_ms: f64,
}

impl Summary {
    /// `None` for an empty set. Nearest-rank percentiles (no interpolation),
    /// the same rule as benches/ort/ort_bench.py so the two compare.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median_ms = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        let p90_ms = sorted[((n as f64 * 0.9) as usize).min(n - 1)];
        let mean_ms = sorted.iter().sum::<f64>() / n as f64;
        Some(Summary {
            median_ms,
            p90_ms,
            mean_ms,
        })
    }
}

/// Per-image figures for each stage of `Classifier::classify`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageSummary {
    pub decode: Summary,
    pub preprocess: Summary,
    pub inference: Summary,
    /// decode + preprocess + inference of the same image.
    pub total: Summary,
    /// How many classifications the figures summarise.
    pub runs: usize,
}

/// Classifies every image `iterations` times (images interleaved, so caches
/// see a realistic mix) on the calling thread and summarises the timings the
/// classifier itself reports.
pub fn measure_stages(
    classifier: &Classifier,
    images: &[Vec<u8>],
    iterations: usize,
) -> Result<Option<StageSummary>, ClassifyError> {
    let mut timings: Vec<StageTimings> = Vec::with_capacity(images.len() * iterations);
    for _ in 0..iterations {
        for image in images {
            timings.push(classifier.classify(image)?.timings);
        }
    }
    let stage = |f: fn(&StageTimings) -> f64| -> Vec<f64> { timings.iter().map(f).collect() };
    let summary = (|| {
        Some(StageSummary {
            decode: Summary::of(&stage(|t| t.decode_ms))?,
            preprocess: Summary::of(&stage(|t| t.preprocess_ms))?,
            inference: Summary::of(&stage(|t| t.inference_ms))?,
            total: Summary::of(&stage(|t| t.decode_ms + t.preprocess_ms + t.inference_ms))?,
            runs: timings.len(),
        })
    })();
    Ok(summary)
}

/// How [`profile_operators`] groups the nodes' times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileBy {
    /// One line per operator kind (`OptMatMul`, `FastDepthwise`, ...).
    Operator,
    /// One line per node: id, operator and output shape, for kernel work.
    Node,
}

impl ProfileBy {
    fn key(self, node: &TypedNode) -> String {
        match self {
            ProfileBy::Operator => node.op().name().to_string(),
            ProfileBy::Node => format!(
                "#{} {} {:?}",
                node.id,
                node.op().name(),
                node.outputs[0].fact.shape.as_concrete().unwrap_or(&[])
            ),
        }
    }
}

/// Where inference time goes, by operator kind or by node.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorCost {
    /// The operator kind or the node (see [`ProfileBy`]).
    pub operator: String,
    /// How many nodes of the plan run it.
    pub nodes: usize,
    /// Milliseconds per image, median over the iterations.
    pub median_ms: f64,
}

/// Runs inference on `tensor` `iterations` times, timing every node, and
/// sums the times by operator kind or node; most expensive first.
pub fn profile_operators(
    classifier: &Classifier,
    tensor: &[f32],
    iterations: usize,
    by: ProfileBy,
) -> Result<Vec<OperatorCost>, ClassifyError> {
    use std::collections::BTreeMap;
    // operator -> (nodes per run, per-run milliseconds)
    let mut costs: BTreeMap<String, (usize, Vec<f64>)> = BTreeMap::new();
    for _ in 0..iterations.max(1) {
        let mut run: BTreeMap<String, (usize, f64)> = BTreeMap::new();
        classifier.logits_observed(tensor.to_vec(), |node, elapsed| {
            let entry = run.entry(by.key(node)).or_default();
            entry.0 += 1;
            entry.1 += elapsed.as_secs_f64() * 1000.0;
        })?;
        for (operator, (nodes, ms)) in run {
            let entry = costs.entry(operator).or_default();
            entry.0 = nodes;
            entry.1.push(ms);
        }
    }
    let mut costs: Vec<OperatorCost> = costs
        .into_iter()
        .filter_map(|(operator, (nodes, samples))| {
            Some(OperatorCost {
                operator,
                nodes,
                median_ms: Summary::of(&samples)?.median_ms,
            })
        })
        .collect();
    costs.sort_by(|a, b| b.median_ms.total_cmp(&a.median_ms));
    Ok(costs)
}

/// [`profile_operators`] on one encoded image (decoded and preprocessed as
/// `classify` does), after one untimed warm-up run.
pub fn profile_image(
    classifier: &Classifier,
    image: &[u8],
    iterations: usize,
    by: ProfileBy,
) -> Result<Vec<OperatorCost>, ClassifyError> {
    let manifest = classifier.manifest();
    let decoded = decode_rgb_at_least(image, DEFAULT_MAX_PIXELS, Some(manifest.resize_shorter))?;
    let tensor = preprocess(&decoded, manifest);
    profile_operators(classifier, &tensor, 1, by)?;
    profile_operators(classifier, &tensor, iterations, by)
}

/// The table `worker-bench --profile` prints.
pub fn format_profile(costs: &[OperatorCost], iterations: usize, by: ProfileBy) -> String {
    let total: f64 = costs.iter().map(|c| c.median_ms).sum();
    let width = costs
        .iter()
        .map(|c| c.operator.len())
        .max()
        .unwrap_or(0)
        .max(24);
    let grouping = match by {
        ProfileBy::Operator => "operator",
        ProfileBy::Node => "node",
    };
    let mut text = format!(
        "  inference by {grouping} (median ms per image over {iterations} runs, each node timed)\n"
    );
    for cost in costs {
        text += &format!(
            "    {:<width$} {:>3} nodes {:8.2} ms  {:5.1}%\n",
            cost.operator,
            cost.nodes,
            cost.median_ms,
            100.0 * cost.median_ms / total
        );
    }
    text += &format!("    {:<width$}           {total:8.2} ms\n", "sum");
    text
}

/// Peak and current resident memory of this process, in MiB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Memory {
    pub peak_mib: f64,
    pub resident_mib: f64,
}

/// Reads VmHWM and VmRSS from /proc/self/status; `None` where there is no
/// procfs (not Linux).
pub fn memory() -> Option<Memory> {
    parse_status(&std::fs::read_to_string("/proc/self/status").ok()?)
}

fn parse_status(status: &str) -> Option<Memory> {
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line[name.len()..]
            .trim_start_matches(':')
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    };
    Some(Memory {
        peak_mib: field("VmHWM")?,
        resident_mib: field("VmRSS")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_uses_nearest_rank() {
        let samples: Vec<f64> = (1..=10).map(f64::from).rev().collect();
        let s = Summary::of(&samples).unwrap();
        assert_eq!(s.median_ms, 5.5);
        assert_eq!(s.p90_ms, 10.0);
        assert_eq!(s.mean_ms, 5.5);
        let odd = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((odd.median_ms, odd.p90_ms), (2.0, 3.0));
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn parses_proc_status() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   20480 kB\n";
        let m = parse_status(status).unwrap();
        assert_eq!((m.peak_mib, m.resident_mib), (40.0, 20.0));
        assert!(parse_status("Name:\tx\n").is_none());
    }
}
