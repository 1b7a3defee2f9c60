//! Rewrites a model whose stem runs on [`FastStemConv`] so the stem and the
//! depthwise convolution reading it run as one [`FastStemDepthwise`], on
//! CPUs that run it.

use tract_onnx::prelude::*;

use super::op::FastStemDepthwise;
use crate::ops::depthwise::op::FastDepthwise;
use crate::ops::rewrite::fuse_with_reader;
use crate::ops::stem::op::FastStemConv;

/// Whether this CPU streams a stem of this geometry into a depthwise
/// convolution.
fn streams(stem: &FastStemConv) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let g = &stem.geometry;
        crate::ops::depthwise::kernel::row_stream::available()
            && g.kernel_h == g.kernel_w
            && g.stride_h == g.stride_w
            && crate::ops::conv_rows::ConvRows::supports(g.kernel_h, g.stride_h)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = stem;
        false
    }
}

/// Fuses every [`FastStemConv`] whose only reader is a [`FastDepthwise`]
/// over its channels, when this CPU streams it. Returns how many. Call it
/// after [`crate::ops::stem::use_fast_stem`].
pub fn use_fast_stem_depthwise(model: &mut TypedModel) -> TractResult<usize> {
    fuse_with_reader(model, |stem: &FastStemConv, depthwise: &FastDepthwise| {
        streams(stem)
            .then(|| FastStemDepthwise::new(stem, depthwise).ok())
            .flatten()
    })
}
