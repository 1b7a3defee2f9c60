//! The classifier: a tract plan loaded and optimised once per process, then
//! decode -> preprocess -> infer -> softmax -> top k for each image.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::*;

use crate::decode::{decode_rgb_within, DecodeLimits};
use crate::error::{ClassifyError, ModelError};
use crate::manifest::ModelManifest;
use crate::ops::chain::op::FastChain;
use crate::ops::depthwise::op::FastDepthwise;
use crate::ops::expand::op::FastExpandDepthwise;
use crate::ops::lanes_block::op::FastLanesBlock;
use crate::ops::project::op::{FastProjected, Streamed};
use crate::ops::stem::op::FastStemConv;
use crate::ops::stem_depthwise::op::FastStemDepthwise;
use crate::preprocess::preprocess;

/// How many classes a result lists.
pub const TOP_K: usize = 5;

type Plan = Arc<TypedRunnableModel>;

pub struct Classifier {
    manifest: ModelManifest,
    labels: Vec<String>,
    plan: Plan,
    limits: DecodeLimits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub label: String,
    pub class_index: usize,
    pub probability: f32,
}

/// Milliseconds spent in each stage of one classification.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTimings {
    pub decode_ms: f64,
    pub preprocess_ms: f64,
    pub inference_ms: f64,
}

#[derive(Debug, Clone)]
pub struct Classification {
    /// Best first; `TOP_K` entries.
    pub top: Vec<Prediction>,
    pub width: u32,
    pub height: u32,
    pub timings: StageTimings,
}

impl Classification {
    pub fn best(&self) -> &Prediction {
        &self.top[0]
    }
}

/// Which implementation runs the operators tract is slow at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// Depthwise, pointwise and stem convolutions on our own kernels
    /// (every patch of [`crate::ops::PATCHES`]).
    #[default]
    Fast,
    /// Everything on tract's own operators: the reference the fast path is
    /// tested and benchmarked against.
    Tract,
}

impl Classifier {
    /// Loads the manifest, the labels and the ONNX graph, fixes the input
    /// shape to batch 1 and optimises the graph. Expensive: do it once.
    pub fn load(manifest_path: &Path) -> Result<Classifier, ModelError> {
        Classifier::load_with_kernels(manifest_path, Kernels::default())
    }

    /// [`Classifier::load`] with a choice of operator implementations.
    pub fn load_with_kernels(
        manifest_path: &Path,
        kernels: Kernels,
    ) -> Result<Classifier, ModelError> {
        let manifest = ModelManifest::load(manifest_path)?;
        let labels = load_labels(&manifest.labels)?;
        let plan = load_plan(&manifest, kernels)?;
        let classifier = Classifier {
            manifest,
            labels,
            plan,
            limits: DecodeLimits::default(),
        };
        classifier.check_output_width()?;
        Ok(classifier)
    }

    /// Refuses images with more pixels than this (default 50 megapixels).
    pub fn with_max_pixels(mut self, max_pixels: u64) -> Classifier {
        self.limits.max_pixels = max_pixels;
        self
    }

    /// Refuses images whose decode would need more memory than this
    /// (default [`crate::decode::DEFAULT_MAX_DECODE_BYTES`], which keeps a
    /// worker under [`crate::decode::WORKER_MEMORY_BOUND`]).
    pub fn with_max_decode_bytes(mut self, max_bytes: u64) -> Classifier {
        self.limits.max_bytes = max_bytes;
        self
    }

    pub fn decode_limits(&self) -> DecodeLimits {
        self.limits
    }

    pub fn manifest(&self) -> &ModelManifest {
        &self.manifest
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Classifies one encoded image (any supported format).
    pub fn classify(&self, bytes: &[u8]) -> Result<Classification, ClassifyError> {
        let started = Instant::now();
        // Only the shorter side's target size matters downstream, so big JPEGs
        // can be decoded at reduced scale.
        let image = decode_rgb_within(bytes, self.limits, Some(self.manifest.resize_shorter))?;
        let decoded = Instant::now();
        let tensor = preprocess(&image, &self.manifest);
        let preprocessed = Instant::now();
        let mut scores = self.logits(tensor)?;
        let inferred = Instant::now();
        if self.manifest.output_is_logits {
            softmax(&mut scores);
        }
        let top = top_k(&scores, TOP_K)
            .into_iter()
            .map(|(class_index, probability)| Prediction {
                label: self.labels[class_index].clone(),
                class_index,
                probability,
            })
            .collect();
        Ok(Classification {
            top,
            width: image.width(),
            height: image.height(),
            timings: StageTimings {
                decode_ms: millis(decoded - started),
                preprocess_ms: millis(preprocessed - decoded),
                inference_ms: millis(inferred - preprocessed),
            },
        })
    }

    /// Runs the graph on a preprocessed `[3, size, size]` tensor and returns
    /// its raw output (logits for the default model).
    pub fn logits(&self, tensor: Vec<f32>) -> Result<Vec<f32>, ClassifyError> {
        let outputs = self
            .plan
            .run(tvec!(self.input(tensor)?))
            .map_err(|e| ClassifyError::Inference(e.to_string()))?;
        first_output(outputs)
    }

    fn input(&self, tensor: Vec<f32>) -> Result<TValue, ClassifyError> {
        let size = self.manifest.input_size as usize;
        Tensor::from_shape(&[1, 3, size, size], &tensor)
            .map(Tensor::into_tvalue)
            .map_err(|e| ClassifyError::Inference(e.to_string()))
    }

    /// [`Classifier::logits`], calling `observe(node, elapsed)` after each
    /// node of the plan: what `worker-bench --profile` adds up.
    pub fn logits_observed(
        &self,
        tensor: Vec<f32>,
        mut observe: impl FnMut(&TypedNode, std::time::Duration),
    ) -> Result<Vec<f32>, ClassifyError> {
        let input = self.input(tensor)?;
        let mut state = tract_onnx::tract_core::plan::SimpleState::new(&self.plan)
            .map_err(|e| ClassifyError::Inference(e.to_string()))?;
        let outputs = state
            .run_plan_with_eval(tvec!(input), |ctx, op_state, node, inputs| {
                let started = Instant::now();
                let outputs = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                observe(node, started.elapsed());
                outputs
            })
            .map_err(|e| ClassifyError::Inference(e.to_string()))?;
        first_output(outputs)
    }

    /// How many depthwise convolutions of the plan run on
    /// [`crate::ops::depthwise`]'s kernels, alone or fused with their
    /// expansion or the stem (and maybe their projection).
    pub fn fast_depthwise_nodes(&self) -> usize {
        self.count_ops(|op| {
            op.is::<FastDepthwise>()
                || op.is::<FastExpandDepthwise>()
                || op.is::<FastLanesBlock>()
                || op.is::<FastStemDepthwise>()
                || op.is::<FastProjected>()
        })
    }

    /// How many expansions run fused with their depthwise convolution
    /// ([`crate::ops::expand`], [`crate::ops::lanes_block`]), and maybe
    /// their projection.
    pub fn fused_expansion_nodes(&self) -> usize {
        self.count_ops(|op| {
            op.is::<FastExpandDepthwise>()
                || op.is::<FastLanesBlock>()
                || op
                    .downcast_ref::<FastProjected>()
                    .is_some_and(|op| matches!(op.source, Streamed::Expand(_)))
        })
    }

    /// How many stem convolutions of the plan run on our kernels
    /// ([`crate::ops::stem`]), alone or fused with their depthwise
    /// convolution ([`crate::ops::stem_depthwise`]) and maybe its
    /// projection.
    pub fn fast_stem_nodes(&self) -> usize {
        self.count_ops(|op| {
            op.is::<FastStemConv>()
                || op.is::<FastStemDepthwise>()
                || op
                    .downcast_ref::<FastProjected>()
                    .is_some_and(|op| matches!(op.source, Streamed::Stem(_)))
        })
    }

    /// How many projections take their depthwise convolution's rows as
    /// they are computed ([`crate::ops::project`]).
    pub fn fused_projection_nodes(&self) -> usize {
        self.count_ops(|op| op.is::<FastProjected>())
    }

    /// How many blocks on small planes run through the lanes layout
    /// ([`crate::ops::lanes_block`]).
    pub fn lanes_block_nodes(&self) -> usize {
        self.count_ops(|op| op.is::<FastLanesBlock>())
    }

    /// How many pairs of streamed blocks run chained row by row
    /// ([`crate::ops::chain`]).
    pub fn chained_nodes(&self) -> usize {
        self.count_ops(|op| op.is::<FastChain>())
    }

    /// How many ops of the plan are `wanted`, looking into chains: a
    /// [`FastChain`] counts as itself and as each of its two blocks.
    fn count_ops(&self, wanted: impl Fn(&dyn TypedOp) -> bool) -> usize {
        let nodes = self.plan.model().nodes();
        let ops = nodes.iter().flat_map(|node| {
            let chained = node
                .op_as::<FastChain>()
                .map(|chain| [&chain.first as &dyn TypedOp, &chain.second as &dyn TypedOp]);
            std::iter::once(node.op.as_ref()).chain(chained.into_iter().flatten())
        });
        ops.filter(|op| wanted(*op)).count()
    }

    fn check_output_width(&self) -> Result<(), ModelError> {
        let size = self.manifest.input_size as usize;
        let width = self
            .logits(vec![0.0; 3 * size * size])
            .map_err(|e| ModelError::Onnx {
                path: self.manifest.file.clone(),
                message: format!("test inference failed: {e}"),
            })?
            .len();
        if width != self.labels.len() {
            return Err(ModelError::Labels {
                path: self.manifest.labels.clone(),
                message: format!(
                    "{} labels but the model outputs {width} classes",
                    self.labels.len()
                ),
            });
        }
        Ok(())
    }
}

fn load_labels(path: &Path) -> Result<Vec<String>, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|reason| ModelError::Read {
        path: path.to_owned(),
        reason,
    })?;
    let labels: Vec<String> = text.lines().map(|l| l.trim().to_owned()).collect();
    if labels.len() < TOP_K || labels.iter().any(String::is_empty) {
        return Err(ModelError::Labels {
            path: path.to_owned(),
            message: format!(
                "expected one non-empty class name per line and at least {TOP_K} lines"
            ),
        });
    }
    Ok(labels)
}

fn load_plan(manifest: &ModelManifest, kernels: Kernels) -> Result<Plan, ModelError> {
    let onnx_error = |e: TractError| ModelError::Onnx {
        path: manifest.file.clone(),
        message: format!("{e:#}"),
    };
    let size = manifest.input_size as usize;
    let model = tract_onnx::onnx()
        .model_for_path(&manifest.file)
        .map_err(onnx_error)?;
    let input_names: Vec<String> = model
        .input_outlets()
        .map_err(onnx_error)?
        .iter()
        .map(|outlet| model.node(outlet.node).name.clone())
        .collect();
    let input_index = input_names
        .iter()
        .position(|name| *name == manifest.input_name)
        .ok_or_else(|| ModelError::Onnx {
            path: manifest.file.clone(),
            message: format!(
                "the manifest names input {:?} but the graph's inputs are {input_names:?}",
                manifest.input_name
            ),
        })?;
    let mut typed = model
        .with_input_fact(input_index, f32::fact([1, 3, size, size]).into())
        .and_then(|m| m.into_typed())
        .and_then(|m| m.into_decluttered())
        .map_err(onnx_error)?;
    if kernels == Kernels::Fast {
        crate::ops::apply_patches(&mut typed).map_err(onnx_error)?;
    }
    typed
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .map_err(onnx_error)
}

/// The graph's first output as a flat vector (logits for the default model).
fn first_output(outputs: TVec<TValue>) -> Result<Vec<f32>, ClassifyError> {
    let view = outputs[0]
        .to_plain_array_view::<f32>()
        .map_err(|e| ClassifyError::Inference(e.to_string()))?;
    Ok(view.iter().copied().collect())
}

/// In place, numerically stable.
pub fn softmax(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    for s in scores.iter_mut() {
        *s /= sum;
    }
}

/// The `k` highest scores as (index, score), best first; ties keep the lower
/// index first so results are deterministic.
pub fn top_k(scores: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut indexed: Vec<(usize, f32)> = scores.iter().copied().enumerate().collect();
    indexed.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    indexed.truncate(k);
    indexed
}

fn millis(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut s = vec![1.0, 3.0, 2.0];
        softmax(&mut s);
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(s[1] > s[2] && s[2] > s[0]);
        // Large logits must not overflow to NaN.
        let mut big = vec![1000.0, 0.0];
        softmax(&mut big);
        assert!((big[0] - 1.0).abs() < 1e-6 && big[1] >= 0.0);
    }

    #[test]
    fn top_k_orders_best_first_with_stable_ties() {
        let top = top_k(&[0.1, 0.5, 0.5, 0.2], 3);
        assert_eq!(top, vec![(1, 0.5), (2, 0.5), (3, 0.2)]);
    }
}
