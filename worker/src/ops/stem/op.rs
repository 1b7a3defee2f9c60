//! [`FastStemConv`]: a tract operator running [`super::kernel::conv`] with
//! its filter and bias baked in (constants in every model we patch) and
//! optionally a fused clamp (ReLU6).

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use crate::ops::eval::{eval_into, f32_output_fact};

use super::im2col::Geometry;
use super::kernel::conv;
use crate::ops::pointwise::kernel::PackedWeights;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastStemConv {
    pub geometry: Geometry,
    /// The OIHW filter as `[cout][cin * kh * kw]`, with the bias.
    pub weights: Arc<PackedWeights>,
    /// Lower and upper bound applied after the bias, as bit patterns so the
    /// op stays `Eq` (tract compares ops to deduplicate nodes).
    pub clamp: Option<(u32, u32)>,
    /// `[1, cout, out_h, out_w]` or `[cout, out_h, out_w]`.
    pub output_shape: TVec<usize>,
}

impl FastStemConv {
    pub fn clamp_bounds(&self) -> Option<(f32, f32)> {
        crate::ops::rewrite::clamp_from_bits(self.clamp)
    }
}

impl Op for FastStemConv {
    fn name(&self) -> StaticName {
        "FastStemConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{:?} cout {} clamp {:?}",
            self.geometry,
            self.weights.output_channels(),
            self.clamp_bounds()
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for FastStemConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        // SAFETY: `conv` hands the whole output to the pointwise kernel,
        // which writes every element before anything reads it (as in
        // `FastPointwise`).
        unsafe {
            eval_into(inputs, &self.output_shape, |input, output| {
                ensure!(
                    input.len() == self.geometry.input_len(),
                    "FastStemConv: input shape does not match the op"
                );
                conv(
                    &self.geometry,
                    &self.weights,
                    input,
                    self.clamp_bounds(),
                    output,
                );
                Ok(())
            })
        }
    }
}

impl TypedOp for FastStemConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        f32_output_fact("FastStemConv", inputs, 1, &self.output_shape)
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let g = &self.geometry;
        let fma = self.weights.output_channels() * g.patch_len() * g.out_pixels();
        Ok(tvec!((Cost::FMA(f32::datum_type()), fma.into())))
    }

    as_op!();
}

impl crate::ops::rewrite::ConvReplacement for FastStemConv {
    fn output_shape(&self) -> &[usize] {
        &self.output_shape
    }

    fn fuse_clamp(&mut self, bits: (u32, u32)) {
        self.clamp = Some(bits);
    }
}
