//! The evaluation our ops with one f32 input share: view the input, give
//! the kernel a fresh output tensor to fill, hand the tensor back.

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
    ensure!(inputs.len() == 1, "the op takes one input");
    let input_view = inputs[0].try_as_plain_ram()?;
    // SAFETY: `fill` writes every element (the caller's promise).
    let mut output = unsafe { Tensor::uninitialized::<f32>(shape)? };
    {
        let mut output_view = output.try_as_plain_ram_mut()?;
        fill(
            input_view.as_slice::<f32>()?,
            output_view.as_slice_mut::<f32>()?,
        )?;
    }
    Ok(tvec!(output.into_tvalue()))
}
