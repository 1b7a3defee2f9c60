//! Rewrites a model already on [`FastPointwise`] and [`FastDepthwise`] so
//! each block on a small plane runs as one [`FastLanesBlock`].

use tract_onnx::prelude::*;

use super::op::FastLanesBlock;
use crate::ops::depthwise::op::FastDepthwise;
use crate::ops::pointwise::op::FastPointwise;
use crate::ops::rewrite::fuse_with_reader;

/// Fuses every expansion on a small plane (one the pointwise kernel runs
/// with channels in lanes) with the depthwise convolution reading it, then
/// each of those with the projection reading it. Returns how many blocks.
/// Call it after [`crate::ops::pointwise::use_fast_pointwise`] and
/// [`crate::ops::depthwise::use_fast_depthwise`].
pub fn use_fast_lanes_block(model: &mut TypedModel) -> TractResult<usize> {
    if !FastLanesBlock::is_available() {
        return Ok(0);
    }
    let blocks = fuse_with_reader(
        model,
        |expansion: &FastPointwise, depthwise: &FastDepthwise| {
            FastLanesBlock::new(expansion, depthwise).ok()
        },
    )?;
    fuse_with_reader(
        model,
        |block: &FastLanesBlock, projection: &FastPointwise| block.with_projection(projection).ok(),
    )?;
    Ok(blocks)
}
