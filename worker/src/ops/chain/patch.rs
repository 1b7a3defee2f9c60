//! Rewrites a model already on [`FastProjected`] so each pair of streamed
//! blocks without residuals, the second reading the first, runs as one
//! [`FastChain`].

use tract_onnx::prelude::*;

use super::op::FastChain;
use crate::ops::project::op::FastProjected;
use crate::ops::rewrite::fuse_with_reader;

/// Chains every [`FastProjected`] with the one reading its output, where
/// [`FastChain::new`] takes them. Returns how many pairs. Call it after
/// [`crate::ops::project::use_fast_projected`].
pub fn use_fast_chain(model: &mut TypedModel) -> TractResult<usize> {
    fuse_with_reader(model, |first: &FastProjected, second: &FastProjected| {
        FastChain::new(first, second).ok()
    })
}
