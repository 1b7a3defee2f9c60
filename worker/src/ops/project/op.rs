//! [`FastProjected`]: a streamed [`FastExpandDepthwise`] or
//! [`FastStemDepthwise`] whose rows go straight into its projection
//! ([`FastPointwise`], with its residual) (AVX-512F only; the patch fuses
//! nothing elsewhere).

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use crate::ops::depthwise::op::FastDepthwise;
use crate::ops::eval::{eval_with_residual_into, fma_cost};
use crate::ops::expand::op::FastExpandDepthwise;
use crate::ops::pointwise::kernel::ChannelPanels;
use crate::ops::pointwise::op::FastPointwise;
use crate::ops::stem_depthwise::op::FastStemDepthwise;

/// What produces the rows the projection takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Streamed {
    Expand(FastExpandDepthwise),
    Stem(FastStemDepthwise),
}

impl Streamed {
    pub fn depthwise(&self) -> &FastDepthwise {
        match self {
            Streamed::Expand(op) => &op.depthwise,
            Streamed::Stem(op) => &op.depthwise,
        }
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        match self {
            Streamed::Expand(op) => op.cost(inputs),
            Streamed::Stem(op) => op.cost(inputs),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastProjected {
    pub source: Streamed,
    pub projection: FastPointwise,
    /// The projection's weights with output channels in the lanes.
    pub lanes: Arc<ChannelPanels>,
}

impl FastProjected {
    /// Fuses `source` with `projection`, which must read exactly its
    /// output.
    pub fn new(source: Streamed, projection: &FastPointwise) -> TractResult<Self> {
        let g = &source.depthwise().geometry;
        ensure!(
            projection.weights.input_channels() == g.channels
                && projection.pixels == g.out_h * g.out_w,
            "depthwise convolution and projection do not fit together"
        );
        Ok(FastProjected {
            source,
            lanes: Arc::new(projection.weights.to_channel_panels()),
            projection: projection.clone(),
        })
    }

    fn input_count(&self) -> usize {
        1 + usize::from(self.projection.residual)
    }

    /// Computes the op's output from `input` (the source's input) and the
    /// projection's `residual`.
    #[cfg(target_arch = "x86_64")]
    pub fn run(
        &self,
        input: &[f32],
        residual: Option<&[f32]>,
        output: &mut [f32],
    ) -> TractResult<()> {
        use crate::ops::depthwise::kernel::row_stream::{available, depthwise_rows_into};
        use crate::ops::project_rows::ProjectRows;

        ensure!(available(), "FastProjected needs AVX-512F");
        let dw = self.source.depthwise();
        let projection = &self.projection;
        let output_len = projection.weights.output_channels() * projection.pixels;
        ensure!(
            output.len() == output_len
                && residual.is_none_or(|r| r.len() == output_len)
                && residual.is_some() == projection.residual,
            "FastProjected: output or residual shape does not match the op"
        );
        let rows = match &self.source {
            Streamed::Expand(op) => op.rows(input)?,
            Streamed::Stem(op) => op.rows(input)?,
        };
        let mut sink = ProjectRows {
            panels: &self.lanes,
            input_channels: dw.geometry.channels,
            output_channels: projection.weights.output_channels(),
            clamp: projection
                .clamp_bounds()
                .unwrap_or((f32::NEG_INFINITY, f32::INFINITY)),
            residual,
            output,
            plane: projection.pixels,
            projected: Vec::new(),
        };
        dw.with_filters(|filters| depthwise_rows_into(&dw.geometry, &rows, filters, &mut sink))
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub fn run(&self, _: &[f32], _: Option<&[f32]>, _: &mut [f32]) -> TractResult<()> {
        bail!("FastProjected needs x86-64")
    }
}

impl Op for FastProjected {
    fn name(&self) -> StaticName {
        "FastProjected".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{:?} into {} channels, residual {}",
            self.source.depthwise().geometry,
            self.projection.weights.output_channels(),
            self.projection.residual
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for FastProjected {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        // SAFETY: every output row is taken once (`depthwise_rows_into`)
        // and `ProjectRows` writes all of its pixels in every channel.
        unsafe {
            eval_with_residual_into(
                inputs,
                self.projection.residual,
                &self.projection.output_shape,
                |input, residual, output| self.run(input, residual, output),
            )
        }
    }
}

impl TypedOp for FastProjected {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == self.input_count(),
            "FastProjected takes {} inputs",
            self.input_count()
        );
        ensure!(
            inputs.iter().all(|i| i.datum_type == f32::datum_type()),
            "FastProjected is f32 only"
        );
        Ok(tvec!(f32::fact(&*self.projection.output_shape)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(fma_cost(
            self.source
                .cost(inputs)?
                .into_iter()
                .chain(self.projection.cost(inputs)?),
        ))
    }

    as_op!();
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::ops::expand::op::testing::{fused, projection};
    use crate::ops::expand::op::Route;
    use crate::ops::pointwise::kernel::{pointwise, Pointwise};
    use crate::test_support::values;

    /// `source` projected to `cout` channels, with a residual or not.
    fn projected(source: FastExpandDepthwise, cout: usize, residual: bool) -> FastProjected {
        let g = source.depthwise.geometry;
        let projection = projection((g.channels, cout), (g.out_h, g.out_w), residual);
        FastProjected::new(Streamed::Expand(source), &projection).unwrap()
    }

    /// The streamed block, then the pointwise kernel, through memory.
    fn unfused(op: &FastProjected, input: &[f32], residual: Option<&[f32]>) -> Vec<f32> {
        let Streamed::Expand(source) = &op.source else {
            unreachable!("tests project expansions")
        };
        let mut between = vec![0f32; source.depthwise.geometry.output_len()];
        source.run(Route::Streamed, input, &mut between).unwrap();
        let conv = Pointwise {
            weights: &op.projection.weights,
            pixels: op.projection.pixels,
            input: &between,
            clamp: None,
            residual,
        };
        let mut out = vec![0f32; conv.output_len()];
        pointwise(&conv, &mut out);
        out
    }

    /// Same sums in the same order as the unfused ops, so the same bits.
    /// The shapes cover EfficientNet's 56x56 block with its residual, input
    /// and output channel counts that leave partial registers and panels,
    /// rows that end in single pixels, and VALID crops.
    #[test]
    fn projected_rows_match_the_unfused_ops_bit_for_bit() {
        if !Route::Streamed.is_available() {
            eprintln!("skipping: needs AVX-512F");
            return;
        }
        for (op, with_residual) in [
            (
                projected(fused((24, 144), (56, 56), (3, 1), (1, 1, 1, 1)), 24, true),
                true,
            ),
            (
                projected(fused((5, 40), (9, 13), (3, 1), (1, 1, 1, 1)), 5, true),
                true,
            ),
            (
                projected(fused((7, 50), (11, 10), (5, 2), (1, 2, 2, 1)), 53, false),
                false,
            ),
            (
                projected(fused((3, 17), (12, 9), (3, 2), (0, 0, 0, 0)), 100, false),
                false,
            ),
        ] {
            let Streamed::Expand(source) = &op.source else {
                unreachable!()
            };
            let input = values(source.input_channels() * source.pixels, 5);
            let output_len = op.projection.weights.output_channels() * op.projection.pixels;
            let residual = with_residual.then(|| values(output_len, 8));
            let want = unfused(&op, &input, residual.as_deref());
            let mut got = vec![f32::NAN; want.len()];
            op.run(&input, residual.as_deref(), &mut got).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{:?}", source.depthwise.geometry);
        }
    }
}
