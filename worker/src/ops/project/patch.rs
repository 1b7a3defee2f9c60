//! Rewrites a model whose expansions and stem already stream into their
//! depthwise convolutions
//! ([`FastExpandDepthwise`](crate::ops::expand::op::FastExpandDepthwise),
//! [`FastStemDepthwise`](crate::ops::stem_depthwise::op::FastStemDepthwise))
//! so each also streams into the projection reading it, as one
//! [`FastProjected`].

use tract_onnx::prelude::*;

use super::op::{FastProjected, Streamed};
use crate::ops::expand::op::Route;
use crate::ops::pointwise::op::FastPointwise;
use crate::ops::rewrite::fuse_with_reader;

/// Projections of planes at least this large are fused. The one on 7x7
/// planes gained nothing fused (docs/performance.md): there every row
/// streams all of its weights (up to 0.9 MB) again.
const PROJECT_FROM_PIXELS: usize = 14 * 14;

/// Fuses every [`FastPointwise`] reading (as its first input) the only
/// output of a streamed expansion or stem (module docs), where the
/// streamed route runs and the plane is large enough (above). Returns how
/// many. Call it after [`crate::ops::expand::use_fast_expand_depthwise`]
/// and [`crate::ops::stem_depthwise::use_fast_stem_depthwise`].
pub fn use_fast_projected(model: &mut TypedModel) -> TractResult<usize> {
    if !Route::Streamed.is_available() {
        return Ok(0);
    }
    Ok(fuse_into_projections(model, Streamed::Expand)?
        + fuse_into_projections(model, Streamed::Stem)?)
}

/// Fuses every `A` with the projection reading it, as `streamed` wraps it.
fn fuse_into_projections<A: Op + Clone>(
    model: &mut TypedModel,
    streamed: fn(A) -> Streamed,
) -> TractResult<usize> {
    fuse_with_reader(model, |source: &A, projection: &FastPointwise| {
        (projection.pixels >= PROJECT_FROM_PIXELS)
            .then(|| FastProjected::new(streamed(source.clone()), projection).ok())
            .flatten()
    })
}
