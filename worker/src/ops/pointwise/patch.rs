//! Rewrites a decluttered tract model so its pointwise convolutions run on
//! [`FastPointwise`]; everything else is left to tract.
//!
//! By the time a model is decluttered tract has already turned every 1x1,
//! stride 1, unpadded, ungrouped `Conv` into an `EinSum` `IHW,OI->OHW` (or
//! `NIHW,OI->OHW` with a batch of 1) followed by an `Add` of the bias shaped
//! `[cout, 1, 1]`, so that pair is what this looks for.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{AxesMapping, InOut};
use tract_onnx::tract_core::ops::einsum::EinSum;

use super::kernel::PackedWeights;
use super::op::FastPointwise;
use crate::ops::rewrite::{clamp_after, other_operand, patch_until_done, sole_consumer};

/// Replaces every pointwise convolution the fast kernel supports (f32, CHW
/// or NCHW with a batch of 1, constant weights and bias), fusing a following
/// clamp (ReLU6) and then a residual `Add` of a tensor shaped like the
/// output. Returns how many were replaced. Call it on a decluttered model,
/// before `into_optimized`, which would turn them into tract matmuls.
pub fn use_fast_pointwise(model: &mut TypedModel) -> TractResult<usize> {
    // Replaced nodes are no longer `EinSum`, so this ends.
    patch_until_done(model, replace_first)
}

/// Replaces the first supported pointwise `EinSum` in evaluation order;
/// false when there is none left.
fn replace_first(model: &mut TypedModel) -> TractResult<bool> {
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(einsum) = node.op_as::<EinSum>() else {
            continue;
        };
        let Some(mut fusion) = fast_op_for(model, node, einsum)? else {
            continue;
        };
        let shape = fusion.op.output_shape.clone();
        // ReLU6 follows every expansion convolution of MobileNet-style
        // models; it costs nothing while the values are in registers.
        if let Some(clamp) = clamp_after(model, fusion.last, &shape)? {
            fusion.op.clamp = Some(clamp.bits());
            fusion.last = clamp.min_node;
            fusion.nodes.extend([clamp.max_node, clamp.min_node]);
        }
        // Projection convolutions end residual blocks with `Add(conv, skip)`.
        let mut inputs = tvec!(node.inputs[0]);
        if let Some((add, skip)) = residual_after(model, fusion.last, &shape)? {
            fusion.op.residual = true;
            fusion.last = add;
            fusion.nodes.push(add);
            inputs.push(skip);
        }
        let mut patch = TypedModelPatch::default();
        let taps = patch.taps(model, &inputs)?;
        let wire = patch.wire_node(&node.name, fusion.op, &taps)?[0];
        patch.shunt_outside(model, OutletId::new(fusion.last, 0), wire)?;
        for id in fusion.nodes {
            patch.obliterate(id)?;
        }
        patch.apply(model)?;
        return Ok(true);
    }
    Ok(false)
}

/// An op under construction and the nodes it replaces.
struct Fusion {
    op: FastPointwise,
    /// Every node the op stands for, in graph order.
    nodes: TVec<usize>,
    /// The node whose output the op's output replaces.
    last: usize,
}

fn fast_op_for(
    model: &TypedModel,
    node: &TypedNode,
    einsum: &EinSum,
) -> TractResult<Option<Fusion>> {
    if einsum.q_params.is_some()
        || einsum.operating_dt != f32::datum_type()
        || node.inputs.len() != 2
    {
        return Ok(None);
    }
    let input_fact = model.outlet_fact(node.inputs[0])?;
    let weights_fact = model.outlet_fact(node.inputs[1])?;
    let output_fact = &node.outputs[0].fact;
    let (Some(input_shape), Some(output_shape), Some(weights)) = (
        input_fact.shape.as_concrete(),
        output_fact.shape.as_concrete(),
        weights_fact.konst.clone(),
    ) else {
        return Ok(None);
    };
    if input_fact.datum_type != f32::datum_type()
        || output_fact.datum_type != f32::datum_type()
        || !is_pointwise_conv(&einsum.axes, input_shape, output_shape)?
    {
        return Ok(None);
    }
    let [cout, cin] = *weights.shape() else {
        return Ok(None);
    };
    let pixels: usize = output_shape[output_shape.len() - 2..].iter().product();
    let weights = weights.cast_to::<f32>()?;
    let weights = weights.try_as_plain_ram()?;

    let mut nodes = tvec!(node.id);
    let mut last = node.id;
    let mut bias = vec![0f32; cout];
    if let Some((add, values)) = bias_after(model, node.id, output_shape, cout)? {
        bias = values;
        nodes.push(add);
        last = add;
    }
    let op = FastPointwise {
        weights: Arc::new(PackedWeights::new(
            weights.as_slice::<f32>()?,
            &bias,
            cout,
            cin,
            pixels,
        )),
        clamp: None,
        residual: false,
        pixels,
        output_shape: output_shape.into(),
    };
    Ok(Some(Fusion { op, nodes, last }))
}

/// Whether `axes` is `IHW,OI->OHW`, or `NIHW,OI->OHW` / `NIHW,OI->NOHW` with
/// N = 1: a pointwise convolution over contiguous `[cin, h * w]` planes
/// writing contiguous `[cout, h * w]` ones.
fn is_pointwise_conv(
    axes: &AxesMapping,
    input_shape: &[usize],
    output_shape: &[usize],
) -> TractResult<bool> {
    let (in_rank, out_rank) = (input_shape.len(), output_shape.len());
    if axes.input_count() != 2
        || axes.output_count() != 1
        || !matches!(in_rank, 3 | 4)
        || !matches!(out_rank, 3 | 4)
        || axes.rank(InOut::In(1)) != 2
        || (in_rank == 4 && input_shape[0] != 1)
        || (out_rank == 4 && output_shape[0] != 1)
    {
        return Ok(false);
    }
    // Where one axis occurs: (activation, weights, output) positions.
    let occurs =
        |slot: InOut, position: usize| -> TractResult<(Vec<usize>, Vec<usize>, Vec<usize>)> {
            let axis = axes.axis((slot, position))?;
            Ok((
                axis.inputs[0].to_vec(),
                axis.inputs[1].to_vec(),
                axis.outputs[0].to_vec(),
            ))
        };
    let (c_in, c_out) = (in_rank - 3, out_rank - 3);
    let mut expected = vec![
        // Input channels: summed over.
        (occurs(InOut::In(0), c_in)?, (vec![c_in], vec![1], vec![])),
        // Output channels: from the weights only.
        (occurs(InOut::In(1), 0)?, (vec![], vec![0], vec![c_out])),
        // Height and width, in place.
        (
            occurs(InOut::In(0), c_in + 1)?,
            (vec![c_in + 1], vec![], vec![c_out + 1]),
        ),
        (
            occurs(InOut::In(0), c_in + 2)?,
            (vec![c_in + 2], vec![], vec![c_out + 2]),
        ),
    ];
    let batch = match (in_rank, out_rank) {
        (4, 4) => Some((vec![0], vec![], vec![0])),
        (4, 3) => Some((vec![0], vec![], vec![])),
        (3, 4) => Some((vec![], vec![], vec![0])),
        _ => None,
    };
    if let Some(batch) = batch {
        let slot = if in_rank == 4 {
            InOut::In(0)
        } else {
            InOut::Out(0)
        };
        expected.push((occurs(slot, 0)?, batch));
    }
    Ok(axes.iter_all_axes().count() == expected.len()
        && expected.iter().all(|(found, wanted)| found == wanted))
}

/// The `Add` of a constant per-channel bias (`[cout, 1, 1]`, `[1, cout, 1,
/// 1]`, a scalar...) that tract leaves after the `EinSum`: its node and the
/// bias for every channel.
fn bias_after(
    model: &TypedModel,
    id: usize,
    shape: &[usize],
    cout: usize,
) -> TractResult<Option<(usize, Vec<f32>)>> {
    let Some(add) = sole_consumer(model, id)? else {
        return Ok(None);
    };
    let Some(other) = other_operand(add, "Add", OutletId::new(id, 0), shape)? else {
        return Ok(None);
    };
    let Some(bias) = model.outlet_fact(other)?.konst.clone() else {
        return Ok(None);
    };
    // Right-aligned against the output, every axis but channels must be 1.
    let channel_axis = shape.len() - 3;
    let rank = bias.rank();
    let per_channel = rank <= shape.len()
        && bias.shape().iter().enumerate().all(|(i, &d)| {
            let axis = shape.len() - rank + i;
            d == 1 || (axis == channel_axis && d == cout)
        });
    if !per_channel {
        return Ok(None);
    }
    let bias = bias.cast_to::<f32>()?;
    let values = bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    let values = if values.len() == 1 {
        vec![values[0]; cout]
    } else {
        values
    };
    Ok(Some((add.id, values)))
}

/// `Add(x, skip)` after node `id` with `skip` computed elsewhere and shaped
/// like `x` (no broadcasting): the `Add` node and `skip`.
fn residual_after(
    model: &TypedModel,
    id: usize,
    shape: &[usize],
) -> TractResult<Option<(usize, OutletId)>> {
    let Some(add) = sole_consumer(model, id)? else {
        return Ok(None);
    };
    let Some(skip) = other_operand(add, "Add", OutletId::new(id, 0), shape)? else {
        return Ok(None);
    };
    let fact = model.outlet_fact(skip)?;
    let same_shape = fact.shape.as_concrete() == Some(shape);
    Ok((same_shape && fact.datum_type == f32::datum_type()).then_some((add.id, skip)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{assert_patch_keeps_logits, efficientnet};

    fn ops(model: &TypedModel) -> Vec<&FastPointwise> {
        model
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<FastPointwise>())
            .collect()
    }

    #[test]
    fn replaces_every_pointwise_conv_of_efficientnet_lite0() {
        let mut model = efficientnet();
        assert_eq!(use_fast_pointwise(&mut model).unwrap(), 32);
        let ops = ops(&model);
        // 16 expansions (and the head) end in ReLU6, 9 projections in a
        // residual Add; the classifier's own EinSum is no convolution.
        assert_eq!(ops.iter().filter(|op| op.clamp.is_some()).count(), 16);
        assert_eq!(ops.iter().filter(|op| op.residual).count(), 9);
        assert_eq!(
            model.nodes().iter().filter(|n| n.op_is::<EinSum>()).count(),
            1
        );
    }

    #[test]
    fn patched_model_matches_tract_on_a_ramp() {
        assert_patch_keeps_logits(use_fast_pointwise);
    }
}
