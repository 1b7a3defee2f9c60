//! The evaluation our ops with one f32 input (and maybe a residual) share:
//! view the inputs, give the kernel a fresh output tensor to fill, hand the
//! tensor back; and the cost of a fused op.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

/// The op's one output, of `shape`, computed by `fill` from its one f32
/// input (`fill` gets the input and the output as flat slices).
///
/// # Safety
/// `fill` must write every element of the output, or return an error: the
/// output is not zeroed first (that saves a pass over up to 5 MB per
/// node), so an element left unwritten would hold whatever the allocator
/// had there.
pub unsafe fn eval_into(
    inputs: TVec<TValue>,
    shape: &[usize],
    fill: impl FnOnce(&[f32], &mut [f32]) -> TractResult<()>,
) -> TractResult<TVec<TValue>> {
    // SAFETY: the caller's promise, passed on.
    unsafe { eval_with_residual_into(inputs, false, shape, |input, _, output| fill(input, output)) }
}

/// [`eval_into`] for an op that may take a second input, its residual,
/// shaped like the output: `fill` gets it when `residual`.
///
/// # Safety
/// As for [`eval_into`].
pub unsafe fn eval_with_residual_into(
    inputs: TVec<TValue>,
    residual: bool,
    shape: &[usize],
    fill: impl FnOnce(&[f32], Option<&[f32]>, &mut [f32]) -> TractResult<()>,
) -> TractResult<TVec<TValue>> {
    let count = 1 + usize::from(residual);
    ensure!(inputs.len() == count, "the op takes {count} inputs");
    let input_view = inputs[0].try_as_plain_ram()?;
    let residual_view = match inputs.get(1) {
        Some(residual) => Some(residual.try_as_plain_ram()?),
        None => None,
    };
    let residual = match &residual_view {
        Some(view) => Some(view.as_slice::<f32>()?),
        None => None,
    };
    // SAFETY: `fill` writes every element (the caller's promise).
    let mut output = unsafe { Tensor::uninitialized::<f32>(shape)? };
    {
        let mut output_view = output.try_as_plain_ram_mut()?;
        fill(
            input_view.as_slice::<f32>()?,
            residual,
            output_view.as_slice_mut::<f32>()?,
        )?;
    }
    Ok(tvec!(output.into_tvalue()))
}

/// The tensor a block reads as both its inputs (its input and its
/// residual) when nothing else holds it, which tract ensures on the last
/// use of a value: the block may then write its output over it. Otherwise
/// the inputs, untouched.
pub fn sole_input_and_residual(mut inputs: TVec<TValue>) -> Result<Tensor, TVec<TValue>> {
    let one_tensor = match &inputs[..] {
        [input, residual] => match (input.as_arc_tensor(), residual.as_arc_tensor()) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        },
        _ => false,
    };
    if !one_tensor {
        return Err(inputs);
    }
    let residual = inputs.pop().expect("two inputs");
    drop(inputs);
    Arc::try_unwrap(residual.into_arc_tensor()).map_err(|shared| {
        let value = shared.into_tvalue();
        tvec![value.clone(), value]
    })
}

/// The output fact of one of our ops, `name`: it takes `count` f32
/// inputs (its input, then maybe a residual) and gives one f32 tensor of
/// `shape`.
pub fn f32_output_fact(
    name: &str,
    inputs: &[&TypedFact],
    count: usize,
    shape: &[usize],
) -> TractResult<TVec<TypedFact>> {
    ensure!(inputs.len() == count, "{name} takes {count} input(s)");
    ensure!(
        inputs.iter().all(|i| i.datum_type == f32::datum_type()),
        "{name} is f32 only"
    );
    Ok(tvec!(f32::fact(shape)))
}

/// The FMAs of a fused op: the sum of its parts' `costs`.
pub fn fma_cost(costs: impl IntoIterator<Item = (Cost, TDim)>) -> TVec<(Cost, TDim)> {
    let mut fma: TDim = 0.into();
    for (_, n) in costs {
        fma += n;
    }
    tvec!((Cost::FMA(f32::datum_type()), fma))
}
