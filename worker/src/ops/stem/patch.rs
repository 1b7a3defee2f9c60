//! Rewrites a decluttered tract model so its stem convolution runs on
//! [`FastStemConv`]; everything else is left to tract.
//!
//! Run it after [`crate::ops::depthwise`] and [`crate::ops::pointwise`]
//! have taken theirs (as [`crate::ops::PATCHES`] does): by then the only
//! `Conv` nodes left in a MobileNet-style model are regular convolutions,
//! and this takes those whose im2col matrix is small (few input channels,
//! like the RGB stem).

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::cnn::Conv;

use super::im2col::Geometry;
use super::op::FastStemConv;
use crate::ops::pointwise::kernel::PackedWeights;
use crate::ops::rewrite::{plain_conv_shapes, replace_convs};

/// Rows of the im2col matrix (`cin * kh * kw`) beyond which a convolution is
/// left to tract: the matrix is that many times the output plane, which is
/// cheap for an RGB stem (27 rows for 3x3, 147 for 7x7) but would dwarf the
/// activations of an inner layer.
pub const MAX_PATCH_LEN: usize = 160;

/// Replaces every ungrouped `Conv` with a small im2col matrix (f32, NCHW or
/// CHW, batch 1, no dilation, constant filter and bias, any padding and
/// stride), fusing a following clamp (ReLU6). Returns how many were
/// replaced. Call it on a decluttered model, before `into_optimized`, which
/// would otherwise lower them to tract's im2col and matmul (plus a `Pad`
/// node for asymmetric padding).
pub fn use_fast_stem(model: &mut TypedModel) -> TractResult<usize> {
    replace_convs(model, fast_op_for)
}

fn fast_op_for(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
) -> TractResult<Option<FastStemConv>> {
    let spec = &conv.pool_spec;
    if conv.group != 1 {
        return Ok(None);
    }
    let Some((input_shape, output_shape)) = plain_conv_shapes(model, node, conv)? else {
        return Ok(None);
    };
    let rank = input_shape.len();
    let (cin, cout) = (spec.input_channels, spec.output_channels);
    let (in_h, in_w) = (input_shape[rank - 2], input_shape[rank - 1]);
    let kernel = spec.kernel_shape.as_slice();
    let strides = spec.strides();
    let padding = spec.computed_padding(&[in_h, in_w]);
    let geometry = Geometry {
        input_channels: cin,
        kernel_h: kernel[0],
        kernel_w: kernel[1],
        stride_h: strides[0],
        stride_w: strides[1],
        in_h,
        in_w,
        pad_top: padding[0].pad_before,
        pad_left: padding[1].pad_before,
        out_h: padding[0].convoluted,
        out_w: padding[1].convoluted,
    };
    if !geometry.is_valid()
        || geometry.patch_len() > MAX_PATCH_LEN
        || input_shape[rank - 3] != cin
        || output_shape[output_shape.len() - 3..] != [cout, geometry.out_h, geometry.out_w]
    {
        return Ok(None);
    }
    let (Some(weights), Some(bias)) = (
        model.outlet_fact(node.inputs[1])?.konst.clone(),
        model.outlet_fact(node.inputs[2])?.konst.clone(),
    ) else {
        return Ok(None);
    };
    if weights.len() != cout * geometry.patch_len() || !(bias.len() == cout || bias.len() == 1) {
        return Ok(None);
    }
    // OIHW flattened is already `[cout][cin * kh * kw]` in im2col row order.
    let weights = weights.cast_to::<f32>()?;
    let bias = {
        let bias = bias.cast_to::<f32>()?;
        let values = bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        // A scalar bias applies to every channel.
        if values.len() == 1 {
            vec![values[0]; cout]
        } else {
            values
        }
    };
    let weights = PackedWeights::new(
        weights.try_as_plain_ram()?.as_slice::<f32>()?,
        &bias,
        cout,
        geometry.patch_len(),
        geometry.out_pixels(),
    );
    Ok(Some(FastStemConv {
        geometry,
        weights: Arc::new(weights),
        clamp: None,
        output_shape,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{assert_patch_keeps_logits, efficientnet};

    #[test]
    fn replaces_the_stem_of_efficientnet_lite0_and_nothing_else() {
        let mut model = efficientnet();
        crate::ops::depthwise::use_fast_depthwise(&mut model).unwrap();
        crate::ops::pointwise::use_fast_pointwise(&mut model).unwrap();
        assert_eq!(use_fast_stem(&mut model).unwrap(), 1);
        let ops: Vec<&FastStemConv> = model
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<FastStemConv>())
            .collect();
        assert_eq!(ops.len(), 1);
        let stem = ops[0];
        assert_eq!(stem.clamp_bounds(), Some((0.0, 6.0)));
        assert_eq!(
            stem.geometry,
            Geometry {
                input_channels: 3,
                kernel_h: 3,
                kernel_w: 3,
                stride_h: 2,
                stride_w: 2,
                in_h: 224,
                in_w: 224,
                pad_top: 0,
                pad_left: 0,
                out_h: 112,
                out_w: 112,
            }
        );
        // Every convolution of the model now runs on our kernels.
        assert!(!model.nodes().iter().any(|n| n.op_is::<Conv>()));
    }

    #[test]
    fn patched_model_matches_tract_on_a_ramp() {
        assert_patch_keeps_logits(use_fast_stem);
    }
}
