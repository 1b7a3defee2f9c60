//! Graph matching shared by the patches that swap tract operators for our
//! kernels (`crate::depthwise`, `crate::pointwise`): recognising the
//! element-wise nodes that follow a convolution so the kernel can apply
//! them while the values are still in registers.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;

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

/// The only node reading node `id`'s single output, unless that output is
/// also a model output (fusing would then hide a value the caller wants).
pub fn sole_consumer(model: &TypedModel, id: usize) -> TractResult<Option<&TypedNode>> {
    if model.outputs.contains(&OutletId::new(id, 0)) {
        return Ok(None);
    }
    model.single_succ(id)
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
