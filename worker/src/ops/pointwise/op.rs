//! [`FastPointwise`]: a tract operator running [`super::kernel::pointwise`]
//! with its weights and bias baked in (constants in every model we patch),
//! optionally a fused clamp (ReLU6) and a fused residual `Add` whose other
//! operand becomes the op's second input.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::kernel::{pointwise, PackedWeights, Pointwise};
use crate::ops::eval::{eval_with_residual_into, f32_output_fact};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastPointwise {
    pub weights: Arc<PackedWeights>,
    /// Lower and upper bound applied after the bias, as bit patterns so the
    /// op stays `Eq` (tract compares ops to deduplicate nodes).
    pub clamp: Option<(u32, u32)>,
    /// Whether a second input, shaped like the output, is added last.
    pub residual: bool,
    /// H * W.
    pub pixels: usize,
    /// `[1, cout, h, w]` or `[cout, h, w]`.
    pub output_shape: TVec<usize>,
}

impl FastPointwise {
    pub fn clamp_bounds(&self) -> Option<(f32, f32)> {
        crate::ops::rewrite::clamp_from_bits(self.clamp)
    }

    fn input_count(&self) -> usize {
        1 + usize::from(self.residual)
    }
}

impl Op for FastPointwise {
    fn name(&self) -> StaticName {
        "FastPointwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "cin {} cout {} pixels {} clamp {:?} residual {}",
            self.weights.input_channels(),
            self.weights.output_channels(),
            self.pixels,
            self.clamp_bounds(),
            self.residual
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for FastPointwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        // SAFETY: the kernel writes every element of the output before
        // anything reads it (tract's own ops allocate their outputs
        // uninitialised too).
        unsafe {
            eval_with_residual_into(
                inputs,
                self.residual,
                &self.output_shape,
                |input, residual, output| {
                    let conv = Pointwise {
                        weights: &self.weights,
                        pixels: self.pixels,
                        input,
                        clamp: self.clamp_bounds(),
                        residual,
                    };
                    ensure!(
                        conv.input.len() == self.weights.input_channels() * self.pixels
                            && residual.is_none_or(|r| r.len() == conv.output_len()),
                        "FastPointwise: input shapes do not match the op"
                    );
                    pointwise(&conv, output);
                    Ok(())
                },
            )
        }
    }
}

impl TypedOp for FastPointwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        f32_output_fact(
            "FastPointwise",
            inputs,
            self.input_count(),
            &self.output_shape,
        )
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let fma = self.weights.output_channels() * self.weights.input_channels() * self.pixels;
        Ok(tvec!((Cost::FMA(f32::datum_type()), fma.into())))
    }

    as_op!();
}
