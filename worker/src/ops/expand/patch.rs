//! Rewrites a model already on [`FastPointwise`] and [`FastDepthwise`] so
//! each expansion worth fusing and the depthwise convolution reading it run
//! as one [`FastExpandDepthwise`].

use tract_onnx::prelude::*;

use super::op::{FastExpandDepthwise, Route};
use crate::ops::depthwise::op::FastDepthwise;
use crate::ops::pointwise::op::FastPointwise;
use crate::ops::rewrite::fuse_with_reader;

/// Expansions whose output is at least this large are fused on any CPU:
/// from here on it no longer fits a core's L2 cache next to everything
/// else (the 112x112 and 56x56 blocks of EfficientNet-Lite0, 4.8 and
/// 1.8 MB; in chunks, its 28x28 expansions, 0.75 MB, gain nothing
/// measurable).
const FUSE_FROM_BYTES: usize = 1024 * 1024;

/// Where the streamed route runs, expansions on planes at least this large
/// are fused too: it saves the depthwise convolution's transpose into
/// lanes and is as fast or faster on every 28x28 and 14x14 block
/// (`worker-bench --profile-nodes`, docs/performance.md). On 7x7 planes
/// it was slower: every row streams all the weights (up to 0.9 MB) again.
const STREAM_FROM_PIXELS: usize = 14 * 14;

/// Fuses every [`FastPointwise`] without a residual whose only reader is a
/// [`FastDepthwise`] over the same channels, when it pays (above).
/// Returns how many pairs were fused. Call it after
/// [`crate::ops::pointwise::use_fast_pointwise`] and
/// [`crate::ops::depthwise::use_fast_depthwise`].
pub fn use_fast_expand_depthwise(model: &mut TypedModel) -> TractResult<usize> {
    fuse_with_reader(
        model,
        |expand: &FastPointwise, depthwise: &FastDepthwise| {
            let bytes =
                expand.weights.output_channels() * expand.pixels * std::mem::size_of::<f32>();
            let worth_it = bytes >= FUSE_FROM_BYTES
                || (Route::Streamed.is_available() && expand.pixels >= STREAM_FROM_PIXELS);
            if expand.residual || !worth_it {
                return None;
            }
            FastExpandDepthwise::new(expand, depthwise).ok()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::depthwise::use_fast_depthwise;
    use crate::ops::pointwise::use_fast_pointwise;
    use crate::test_support::{assert_patch_keeps_logits, bits, efficientnet, patched_logits};

    fn fast_ops(model: &mut TypedModel) -> TractResult<usize> {
        use_fast_depthwise(model)?;
        use_fast_pointwise(model)
    }

    fn fast_ops_fused(model: &mut TypedModel) -> TractResult<usize> {
        fast_ops(model)?;
        use_fast_expand_depthwise(model)
    }

    #[test]
    fn fuses_the_expansions_of_efficientnet_that_pay() {
        let mut model = efficientnet();
        fast_ops(&mut model).unwrap();
        // Everywhere: 16x112x112 -> 96 and twice 24x56x56 -> 144. Streamed,
        // also the eight on 28x28 and 14x14 planes, not the four on 7x7.
        let want = if Route::Streamed.is_available() {
            11
        } else {
            3
        };
        assert_eq!(use_fast_expand_depthwise(&mut model).unwrap(), want);
        assert_eq!(use_fast_expand_depthwise(&mut model).unwrap(), 0);
    }

    /// Same kernels, same order of operations per value: fusing changes
    /// where intermediate values live, not a single bit of the answer.
    #[test]
    fn fused_logits_are_bit_identical_to_unfused() {
        let unfused = patched_logits(efficientnet(), fast_ops);
        let fused = patched_logits(efficientnet(), fast_ops_fused);
        assert_eq!(bits(&fused), bits(&unfused));
    }

    #[test]
    fn fused_model_matches_plain_tract() {
        assert_patch_keeps_logits(fast_ops_fused);
    }
}
