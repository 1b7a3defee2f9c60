//! [`FastProjected`]: a streamed [`FastExpandDepthwise`] or
//! [`FastStemDepthwise`] whose rows go straight into its projection
//! ([`FastPointwise`], with its residual) (AVX-512F only; the patch fuses
//! nothing elsewhere).

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use crate::ops::depthwise::op::FastDepthwise;
use crate::ops::eval::{
    eval_with_residual_into, f32_output_fact, fma_cost, sole_input_and_residual,
};
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
        use crate::ops::project_rows::Residual;

        let output_len = self.projection.weights.output_channels() * self.projection.pixels;
        ensure!(
            output.len() == output_len
                && residual.is_none_or(|r| r.len() == output_len)
                && residual.is_some() == self.projection.residual,
            "FastProjected: output or residual shape does not match the op"
        );
        let residual = residual.map_or(Residual::None, Residual::Planes);
        self.stream(input.into(), residual, output.into())
    }

    /// Whether the op can write its output over its input
    /// ([`FastProjected::run_in_place`]): a block with a residual, whose
    /// output is shaped like its input, and whose depthwise convolution
    /// (stride 1, at most `k - 1` rows of padding on top) has read each
    /// input row's expansion before it writes the output row in its place.
    pub fn runs_in_place(&self) -> bool {
        let g = &self.source.depthwise().geometry;
        self.projection.residual
            && matches!(self.source, Streamed::Expand(_))
            && g.stride == 1
            && g.pad_top < g.kernel
            && (g.out_h, g.out_w) == (g.in_h, g.in_w)
    }

    /// [`FastProjected::run`] with `planes` as the input, the residual and
    /// the output: output row `y` replaces input row `y` (its residual)
    /// once the expansion has read that row, so every value is the one
    /// `run` computes.
    #[cfg(target_arch = "x86_64")]
    pub fn run_in_place(&self, planes: &mut [f32]) -> TractResult<()> {
        use crate::ops::project_rows::Residual;

        let output_len = self.projection.weights.output_channels() * self.projection.pixels;
        ensure!(
            self.runs_in_place() && planes.len() == output_len,
            "FastProjected: cannot run this op in place on these planes"
        );
        // SAFETY: the expansion reads a line inside `ConvRows::fill` only,
        // the projection writes inside `ProjectRows::take` only, and the
        // depthwise kernel calls them one after the other, never nested.
        // It asks for input row `y` (once) before it hands over output row
        // `y` (`runs_in_place`), and later rows' lines are past what has
        // been written.
        let (input, output) = unsafe { crate::ops::planes::in_place(planes) };
        self.stream(input, Residual::InPlace, output)
    }

    /// The source's rows through the depthwise convolution into the
    /// projection.
    #[cfg(target_arch = "x86_64")]
    fn stream(
        &self,
        input: crate::ops::planes::PlanesIn,
        residual: crate::ops::project_rows::Residual,
        output: crate::ops::planes::PlanesOut,
    ) -> TractResult<()> {
        use crate::ops::depthwise::kernel::row_stream::{available, depthwise_rows_into};

        ensure!(available(), "FastProjected needs AVX-512F");
        let dw = self.source.depthwise();
        let projection = &self.projection;
        let rows = match &self.source {
            Streamed::Expand(op) => op.rows(input)?,
            Streamed::Stem(op) => op.rows(input)?,
        };
        let mut sink = self.projection_rows(residual, output, projection.pixels);
        dw.with_filters(|filters| depthwise_rows_into(&dw.geometry, &rows, filters, &mut sink))
    }

    /// The projection as a sink for the depthwise convolution's rows, into
    /// `output` planes of `plane` pixels (one row's, for a row that goes
    /// on into another block: `ops::chain`).
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn projection_rows<'a>(
        &'a self,
        residual: crate::ops::project_rows::Residual<'a>,
        output: crate::ops::planes::PlanesOut<'a>,
        plane: usize,
    ) -> crate::ops::project_rows::ProjectRows<'a> {
        crate::ops::project_rows::ProjectRows {
            panels: &self.lanes,
            input_channels: self.source.depthwise().geometry.channels,
            output_channels: self.projection.weights.output_channels(),
            clamp: self
                .projection
                .clamp_bounds()
                .unwrap_or((f32::NEG_INFINITY, f32::INFINITY)),
            residual,
            output,
            plane,
            projected: Vec::new(),
            live: Default::default(),
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub fn run(&self, _: &[f32], _: Option<&[f32]>, _: &mut [f32]) -> TractResult<()> {
        bail!("FastProjected needs x86-64")
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub fn run_in_place(&self, _: &mut [f32]) -> TractResult<()> {
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
        // On its input's last use a residual block writes its output over
        // it: those lines are in cache, a fresh tensor's are not (1.8% of
        // an inference).
        let inputs = if self.runs_in_place() {
            match sole_input_and_residual(inputs) {
                Ok(mut planes) => {
                    self.run_in_place(planes.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?)?;
                    return Ok(tvec!(planes.into_tvalue()));
                }
                Err(inputs) => inputs,
            }
        } else {
            inputs
        };
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
        f32_output_fact(
            "FastProjected",
            inputs,
            self.input_count(),
            &self.projection.output_shape,
        )
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

/// Blocks for the tests of this op and of the ops built on it.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::ops::expand::op::testing::projection;

    /// `source` projected to `cout` channels, with a residual or not.
    pub fn projected(source: FastExpandDepthwise, cout: usize, residual: bool) -> FastProjected {
        let g = source.depthwise.geometry;
        let projection = projection((g.channels, cout), (g.out_h, g.out_w), residual);
        FastProjected::new(Streamed::Expand(source), &projection).unwrap()
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::testing::projected;
    use super::*;
    use crate::ops::expand::op::testing::fused;
    use crate::ops::expand::op::Route;
    use crate::ops::pointwise::kernel::{pointwise, Pointwise};
    use crate::test_support::{bits, values};

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
            assert_eq!(bits(&got), bits(&want), "{:?}", source.depthwise.geometry);
        }
    }

    /// A residual block (its input is its residual) written over its input
    /// gives the same bits as into a fresh tensor: on 56x56 with 3x3
    /// filters, on 14x14 with 5x5 ones (two rows of padding), and on odd
    /// sizes with partial registers.
    #[test]
    fn in_place_matches_a_fresh_output_bit_for_bit() {
        if !Route::Streamed.is_available() {
            eprintln!("skipping: needs AVX-512F");
            return;
        }
        for op in [
            projected(fused((24, 144), (56, 56), (3, 1), (1, 1, 1, 1)), 24, true),
            projected(fused((112, 672), (14, 14), (5, 1), (2, 2, 2, 2)), 112, true),
            projected(fused((5, 40), (9, 13), (3, 1), (1, 1, 1, 1)), 5, true),
        ] {
            assert!(op.runs_in_place());
            let input = values(
                op.projection.weights.output_channels() * op.projection.pixels,
                5,
            );
            let mut want = vec![f32::NAN; input.len()];
            op.run(&input, Some(&input), &mut want).unwrap();
            let mut planes = input.clone();
            op.run_in_place(&mut planes).unwrap();
            assert_eq!(
                bits(&planes),
                bits(&want),
                "{:?}",
                op.source.depthwise().geometry
            );
        }
        // Blocks without a residual, or whose output is not shaped like
        // their input, never run in place.
        assert!(
            !projected(fused((24, 144), (56, 56), (3, 1), (1, 1, 1, 1)), 24, false).runs_in_place()
        );
        assert!(
            !projected(fused((7, 50), (11, 10), (5, 2), (1, 2, 2, 1)), 53, false).runs_in_place()
        );
    }

    /// Through tract's eval: the output is the same whether the input is
    /// the op's alone (written over) or also held elsewhere, and a tensor
    /// held elsewhere is never written.
    #[test]
    fn eval_writes_over_its_input_only_when_nothing_else_holds_it() {
        if !Route::Streamed.is_available() {
            eprintln!("skipping: needs AVX-512F");
            return;
        }
        let op = projected(fused((24, 144), (56, 56), (3, 1), (1, 1, 1, 1)), 24, true);
        let shape = [24, 56, 56];
        let input = Tensor::from_shape(&shape, &values(24 * 56 * 56, 5)).unwrap();
        let held = input.clone().into_tvalue();
        let shared = op
            .eval(
                &EvalContext::out_of_plan(),
                tvec![held.clone(), held.clone()],
            )
            .unwrap();
        assert_eq!(*held, input, "a tensor held elsewhere was written");
        let sole = input.clone().into_tvalue();
        let address = sole.as_ptr::<f32>().unwrap() as usize;
        let alone = op
            .eval(&EvalContext::out_of_plan(), tvec![sole.clone(), sole])
            .unwrap();
        assert_eq!(
            alone[0].as_ptr::<f32>().unwrap() as usize,
            address,
            "not in place"
        );
        assert_eq!(alone[0], shared[0]);
    }
}
