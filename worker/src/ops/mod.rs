//! Our own operators for what tract is slow at, and the graph rewrites that
//! put them into a model: one folder per operator (its kernel, its tract op,
//! its patch), the matching they share (`rewrite.rs`) and the list of patches
//! in the order a model gets them ([`PATCHES`]).

pub mod chain;
#[cfg(target_arch = "x86_64")]
mod conv_rows;
pub mod depthwise;
mod eval;
pub mod expand;
pub mod kernel_probes;
mod lanes;
pub mod lanes_block;
#[cfg(target_arch = "x86_64")]
mod live_channels;
#[cfg(target_arch = "x86_64")]
mod planes;
pub mod pointwise;
pub mod project;
#[cfg(target_arch = "x86_64")]
mod project_rows;
mod rewrite;
mod scratch;
pub mod stem;
pub mod stem_depthwise;

use tract_onnx::prelude::{TractResult, TypedModel};

/// One graph rewrite: it replaces (or fuses) the nodes it supports in a
/// decluttered model and returns how many.
#[derive(Debug, Clone, Copy)]
pub struct Patch {
    /// A short name (the operator folder it comes from).
    pub name: &'static str,
    /// What the count it returns counts, for the log.
    pub counts: &'static str,
    pub apply: fn(&mut TypedModel) -> TractResult<usize>,
}

/// Every patch, in the order [`apply_patches`] runs them. The order
/// matters: the expansion fusion works on the ops the depthwise and
/// pointwise patches leave, the stem goes after them so the only
/// convolutions left to it are the regular ones, and the stem's fusion with
/// its depthwise convolution comes after them; then the projections, as
/// they fuse with what those two made, the small planes' blocks, from what
/// is left of the pointwise and depthwise ops, and last the chains of the
/// projected blocks.
pub const PATCHES: &[Patch] = &[
    Patch {
        name: "depthwise",
        counts: "depthwise convolutions on the fast kernel",
        apply: depthwise::use_fast_depthwise,
    },
    Patch {
        name: "pointwise",
        counts: "pointwise convolutions on the fast kernel",
        apply: pointwise::use_fast_pointwise,
    },
    Patch {
        name: "expand",
        counts: "expansions fused with their depthwise convolution",
        apply: expand::use_fast_expand_depthwise,
    },
    Patch {
        name: "stem",
        counts: "stem convolutions on the fast kernel",
        apply: stem::use_fast_stem,
    },
    Patch {
        name: "stem_depthwise",
        counts: "stems streamed into their depthwise convolution",
        apply: stem_depthwise::use_fast_stem_depthwise,
    },
    Patch {
        name: "project",
        counts: "projections fused with the streamed block before them",
        apply: project::use_fast_projected,
    },
    Patch {
        name: "lanes_block",
        counts: "blocks on small planes fused in lanes",
        apply: lanes_block::use_fast_lanes_block,
    },
    Patch {
        name: "chain",
        counts: "pairs of streamed blocks chained row by row",
        apply: chain::use_fast_chain,
    },
];

/// Applies every patch of [`PATCHES`] in order to a decluttered model (before
/// `into_optimized`, which would lower the operators they look for), logging
/// how many nodes each one rewrote.
pub fn apply_patches(model: &mut TypedModel) -> TractResult<()> {
    for patch in PATCHES {
        let replaced = (patch.apply)(model)?;
        tracing::debug!(patch = patch.name, replaced, "{}", patch.counts);
    }
    Ok(())
}

/// [`apply_patches`] as a patch of its own (its count is the number of
/// patches), for tests comparing the fully patched model.
#[cfg(test)]
pub(crate) fn every_patch(model: &mut TypedModel) -> TractResult<usize> {
    apply_patches(model)?;
    Ok(PATCHES.len())
}

/// Every patch but the one called `name`, in order: the "before" of a
/// fusion's bit-identity test.
#[cfg(test)]
pub(crate) fn every_patch_but(model: &mut TypedModel, name: &str) -> TractResult<usize> {
    let others = PATCHES.iter().filter(|patch| patch.name != name);
    for patch in others.clone() {
        (patch.apply)(model)?;
    }
    Ok(others.count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{assert_patch_keeps_logits, bits, efficientnet, patched_logits};

    /// All the rewrites together, every fusion included, still give plain
    /// tract's logits.
    #[test]
    fn every_patch_together_matches_plain_tract() {
        assert_patch_keeps_logits(every_patch);
    }

    /// The fusions that keep the unfused kernels' sums in the same order
    /// change where values live, not a bit of the answer.
    #[test]
    fn bit_identical_fusions_keep_every_bit_of_the_logits() {
        let fused = bits(&patched_logits(efficientnet(), every_patch));
        for name in ["project", "lanes_block", "chain"] {
            let unfused = patched_logits(efficientnet(), |model| every_patch_but(model, name));
            assert_eq!(bits(&unfused), fused, "{name}");
        }
    }

    #[test]
    fn every_patch_finds_its_nodes_of_efficientnet_lite0_in_order() {
        // Where the streamed route runs (AVX-512F), more expansions are
        // fused and the stem is too, and then all but one of those (the
        // one whose projection is on 7x7) with their projections; the
        // 7x7 blocks run in lanes, and four pairs of projected blocks
        // (each second one without a residual) run chained.
        let streams = expand::op::Route::Streamed.is_available();
        let (expansions, stems, projections) = if streams { (11, 1, 11) } else { (3, 0, 0) };
        // The four 7x7 blocks, where the same AVX-512F runs.
        let lanes_blocks = if streams { 4 } else { 0 };
        let mut model = efficientnet();
        let counts: Vec<(&str, usize)> = PATCHES
            .iter()
            .map(|patch| (patch.name, (patch.apply)(&mut model).unwrap()))
            .collect();
        assert_eq!(
            counts,
            [
                ("depthwise", 16),
                ("pointwise", 32),
                ("expand", expansions),
                ("stem", 1),
                ("stem_depthwise", stems),
                ("project", projections),
                ("lanes_block", lanes_blocks),
                ("chain", if streams { 4 } else { 0 }),
            ]
        );
    }
}
