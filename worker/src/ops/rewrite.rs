//! Graph matching shared by the patches that swap tract operators for our
//! kernels (`depthwise`, `pointwise`, `stem`, `expand` beside this file):
//! the replacement loop, and recognising the element-wise nodes that follow a
//! convolution so the kernel can apply them while the values are still in
//! registers.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// One of our ops standing in for a tract `Conv`, able to apply the clamp
/// (ReLU6) that follows it.
pub trait ConvReplacement: TypedOp + Clone {
    fn output_shape(&self) -> &[usize];
    /// Bounds as [`FusedClamp::bits`].
    fn fuse_clamp(&mut self, bits: (u32, u32));
}

/// The input and output shapes of `node` (a `Conv`) when our kernels can
/// take it at all: f32, 2-D, NCHW with a batch of 1 (or CHW once tract has
/// dropped that axis), OIHW filter, no dilation, not quantised, with filter
/// and bias inputs. Each patch then checks grouping and sizes its own way.
pub fn plain_conv_shapes(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
) -> TractResult<Option<(TVec<usize>, TVec<usize>)>> {
    let spec = &conv.pool_spec;
    let plain = conv.q_params.is_none()
        && matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW)
        && conv.kernel_fmt == KernelFormat::OIHW
        && spec.kernel_shape.len() == 2
        && spec.dilations().iter().all(|d| *d == 1)
        && node.inputs.len() == 3;
    if !plain {
        return Ok(None);
    }
    let input_fact = model.outlet_fact(node.inputs[0])?;
    let output_fact = &node.outputs[0].fact;
    let (Some(input_shape), Some(output_shape)) = (
        input_fact.shape.as_concrete(),
        output_fact.shape.as_concrete(),
    ) else {
        return Ok(None);
    };
    let batch_of_one = |shape: &[usize]| match shape.len() {
        4 => shape[0] == 1,
        3 => true,
        _ => false,
    };
    let supported = input_fact.datum_type == f32::datum_type()
        && output_fact.datum_type == f32::datum_type()
        && batch_of_one(input_shape)
        && batch_of_one(output_shape);
    Ok(supported.then(|| (input_shape.into(), output_shape.into())))
}

/// Replaces every `Conv` for which `replacement` gives an op, fusing a
/// following clamp; returns how many. Call it on a decluttered model,
/// before `into_optimized` lowers the convolutions to tract's own ops.
pub fn replace_convs<O: ConvReplacement>(
    model: &mut TypedModel,
    replacement: impl Fn(&TypedModel, &TypedNode, &Conv) -> TractResult<Option<O>>,
) -> TractResult<usize> {
    // Replaced nodes are no longer `Conv`, so this ends.
    patch_until_done(model, |model| replace_first_conv(model, &replacement))
}

/// Calls `patch_first` until it reports that it found nothing left to
/// rewrite; returns how many rewrites it made. Applying a patch may
/// renumber nodes, so each call looks at the model afresh; `patch_first`
/// must rewrite what it matched into something it no longer matches.
pub fn patch_until_done(
    model: &mut TypedModel,
    mut patch_first: impl FnMut(&mut TypedModel) -> TractResult<bool>,
) -> TractResult<usize> {
    let mut patched = 0;
    while patch_first(model)? {
        patched += 1;
    }
    Ok(patched)
}

/// Replaces the first matching `Conv` in evaluation order; false when there
/// is none left.
fn replace_first_conv<O: ConvReplacement>(
    model: &mut TypedModel,
    replacement: &impl Fn(&TypedModel, &TypedNode, &Conv) -> TractResult<Option<O>>,
) -> TractResult<bool> {
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else {
            continue;
        };
        let Some(mut op) = replacement(model, node, conv)? else {
            continue;
        };
        let mut last = id;
        let mut fused = tvec!(id);
        if let Some(clamp) = clamp_after(model, id, op.output_shape())? {
            op.fuse_clamp(clamp.bits());
            last = clamp.min_node;
            fused.extend([clamp.max_node, clamp.min_node]);
        }
        let mut patch = TypedModelPatch::default();
        let tap = patch.tap_model(model, node.inputs[0])?;
        let wire = patch.wire_node(&node.name, op, &[tap])?[0];
        patch.shunt_outside(model, OutletId::new(last, 0), wire)?;
        for id in fused {
            patch.obliterate(id)?;
        }
        patch.apply(model)?;
        return Ok(true);
    }
    Ok(false)
}

/// A `Clip(x, lo, hi)` found after a node, ready to be fused into it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedClamp {
    pub lo: f32,
    pub hi: f32,
    /// The `Max(x, lo)` node.
    pub max_node: usize,
    /// The `Min(.., hi)` node, whose output the fused op replaces.
    pub min_node: usize,
}

impl FusedClamp {
    /// The bounds as bit patterns, the form the ops keep them in so they
    /// stay `Eq` (tract compares ops to deduplicate nodes).
    pub fn bits(&self) -> (u32, u32) {
        (self.lo.to_bits(), self.hi.to_bits())
    }
}

/// Bounds kept as [`FusedClamp::bits`], back as floats.
pub fn clamp_from_bits(bits: Option<(u32, u32)>) -> Option<(f32, f32)> {
    bits.map(|(lo, hi)| (f32::from_bits(lo), f32::from_bits(hi)))
}

/// The only node reading node `id`'s single output, unless that output is
/// also a model output (fusing would then hide a value the caller wants).
pub fn sole_consumer(model: &TypedModel, id: usize) -> TractResult<Option<&TypedNode>> {
    if model.outputs.contains(&OutletId::new(id, 0)) {
        return Ok(None);
    }
    model.single_succ(id)
}

/// Fuses, until none is left, every node running an `A` whose only reader
/// runs a `B` taking it as its first input, when `fuse` makes one op of the
/// pair: the fused node takes the first node's inputs, then the reader's
/// others (a residual), and stands for the reader's output. Returns how
/// many pairs were fused.
pub fn fuse_with_reader<A: Op, B: Op, O: TypedOp>(
    model: &mut TypedModel,
    fuse: impl Fn(&A, &B) -> Option<O>,
) -> TractResult<usize> {
    // Fused nodes no longer run an `A`, so this ends.
    patch_until_done(model, |model| {
        for id in model.eval_order()? {
            let node = model.node(id);
            let Some(first) = node.op_as::<A>() else {
                continue;
            };
            let Some(reader) = sole_consumer(model, id)? else {
                continue;
            };
            let output = OutletId::new(id, 0);
            if reader.inputs.first() != Some(&output) || reader.inputs[1..].contains(&output) {
                continue;
            }
            let Some(op) = reader.op_as::<B>().and_then(|second| fuse(first, second)) else {
                continue;
            };
            let mut patch = TypedModelPatch::default();
            let inputs: TVec<OutletId> = node
                .inputs
                .iter()
                .chain(&reader.inputs[1..])
                .copied()
                .collect();
            let taps = patch.taps(model, &inputs)?;
            let wire = patch.wire_node(&reader.name, op, &taps)?[0];
            patch.shunt_outside(model, OutletId::new(reader.id, 0), wire)?;
            patch.obliterate(id)?;
            patch.obliterate(reader.id)?;
            patch.apply(model)?;
            return Ok(true);
        }
        Ok(false)
    })
}

/// tract-onnx wires `Clip(x, lo, hi)` as `Min(Max(x, lo), hi)` with constant
/// bounds. Returns them when exactly that follows node `id` (whose output
/// has `shape`) and nothing else reads the intermediate values.
pub fn clamp_after(
    model: &TypedModel,
    id: usize,
    shape: &[usize],
) -> TractResult<Option<FusedClamp>> {
    let Some(max) = sole_consumer(model, id)? else {
        return Ok(None);
    };
    let Some(lo) = constant_bound(model, max, "Max", OutletId::new(id, 0), shape)? else {
        return Ok(None);
    };
    let Some(min) = sole_consumer(model, max.id)? else {
        return Ok(None);
    };
    let Some(hi) = constant_bound(model, min, "Min", OutletId::new(max.id, 0), shape)? else {
        return Ok(None);
    };
    Ok((lo <= hi).then_some(FusedClamp {
        lo,
        hi,
        max_node: max.id,
        min_node: min.id,
    }))
}

/// When `node` is the binary `op` (tract's name: "Add", "Max", ...) applied
/// to `data` and one other operand, and its result keeps `data`'s `shape`:
/// that other operand.
pub fn other_operand(
    node: &TypedNode,
    op: &str,
    data: OutletId,
    shape: &[usize],
) -> TractResult<Option<OutletId>> {
    let Some(bin) = node.op_as::<TypedBinOp>() else {
        return Ok(None);
    };
    if bin.0.name() != op || node.inputs.len() != 2 {
        return Ok(None);
    }
    let other = match (node.inputs[0] == data, node.inputs[1] == data) {
        (true, false) => node.inputs[1],
        (false, true) => node.inputs[0],
        _ => return Ok(None),
    };
    if node.outputs[0].fact.shape.as_concrete() != Some(shape) {
        return Ok(None);
    }
    Ok(Some(other))
}

/// The uniform constant `node` (a binary `op`) combines `data` with, if the
/// result keeps `data`'s shape.
fn constant_bound(
    model: &TypedModel,
    node: &TypedNode,
    op: &str,
    data: OutletId,
    shape: &[usize],
) -> TractResult<Option<f32>> {
    let Some(other) = other_operand(node, op, data, shape)? else {
        return Ok(None);
    };
    let Some(bound) = model.outlet_fact(other)?.konst.clone() else {
        return Ok(None);
    };
    let Some(uniform) = bound.as_uniform() else {
        return Ok(None);
    };
    let value = uniform.cast_to_scalar::<f32>()?;
    Ok((!value.is_nan()).then_some(value))
}
