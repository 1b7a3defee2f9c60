//! Rewrites a decluttered tract model so its depthwise convolutions run on
//! [`FastDepthwise`]; everything else is left to tract.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::cnn::Conv;

use super::kernel::Geometry;
use super::op::FastDepthwise;
use crate::ops::rewrite::{plain_conv_shapes, replace_convs};

/// Replaces every depthwise `Conv` the fast kernel supports (f32, NCHW or CHW,
/// batch 1, square 3x3 or 5x5 filter, stride 1 or 2, no dilation, constant
/// filter and bias). Returns how many nodes were replaced. Call it on a
/// decluttered model, before `into_optimized`, which would otherwise turn
/// the convolutions into tract's own DepthWise ops.
pub fn use_fast_depthwise(model: &mut TypedModel) -> TractResult<usize> {
    replace_convs(model, fast_op_for)
}

fn fast_op_for(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
) -> TractResult<Option<FastDepthwise>> {
    let spec = &conv.pool_spec;
    let channels = spec.input_channels;
    let depthwise = conv.group > 1 && conv.group == channels && spec.output_channels == channels;
    if !depthwise {
        return Ok(None);
    }
    let Some((input_shape, output_shape)) = plain_conv_shapes(model, node, conv)? else {
        return Ok(None);
    };
    let rank = input_shape.len();
    let kernel = spec.kernel_shape.as_slice();
    let strides = spec.strides();
    if kernel.len() != 2 || kernel[0] != kernel[1] || strides.len() != 2 || strides[0] != strides[1]
    {
        return Ok(None);
    }
    let (in_h, in_w) = (input_shape[rank - 2], input_shape[rank - 1]);
    let padding = spec.computed_padding(&[in_h, in_w]);
    let geometry = Geometry {
        channels,
        kernel: kernel[0],
        stride: strides[0],
        in_h,
        in_w,
        pad_top: padding[0].pad_before,
        pad_left: padding[1].pad_before,
        out_h: padding[0].convoluted,
        out_w: padding[1].convoluted,
    };
    if !geometry.is_supported()
        || output_shape[output_shape.len() - 3..] != [channels, geometry.out_h, geometry.out_w]
    {
        return Ok(None);
    }
    let (Some(weights), Some(bias)) = (
        model.outlet_fact(node.inputs[1])?.konst.clone(),
        model.outlet_fact(node.inputs[2])?.konst.clone(),
    ) else {
        return Ok(None);
    };
    let k = geometry.kernel;
    if weights.len() != channels * k * k || !(bias.len() == channels || bias.len() == 1) {
        return Ok(None);
    }
    // OIHW with one input channel per group is already [channels, k, k].
    let weights = weights
        .cast_to::<f32>()?
        .into_owned()
        .into_shape(&[channels, k, k])?;
    let bias: Vec<f32> = {
        let bias = bias.cast_to::<f32>()?;
        let values = bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        // A scalar bias applies to every channel.
        if values.len() == 1 {
            vec![values[0]; channels]
        } else {
            values
        }
    };
    let bias = Tensor::from_shape(&[channels], &bias)?;
    Ok(Some(FastDepthwise::new(
        geometry,
        weights,
        bias,
        output_shape,
    )?))
}
