//! [`FastChain`]: one streamed block's rows through the next streamed
//! block (`ops::chain`).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use crate::ops::eval::{eval_with_residual_into, f32_output_fact, fma_cost};
use crate::ops::project::op::{FastProjected, Streamed};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastChain {
    /// With a residual or not (then the op's second input).
    pub first: FastProjected,
    /// An expansion's block reading exactly `first`'s output, without a
    /// residual.
    pub second: FastProjected,
}

impl FastChain {
    /// Chains `first` with `second`, which must read exactly its output.
    pub fn new(first: &FastProjected, second: &FastProjected) -> TractResult<Self> {
        let Streamed::Expand(expansion) = &second.source else {
            bail!("only an expansion takes another block's rows");
        };
        let from = &first.source.depthwise().geometry;
        let to = &expansion.depthwise.geometry;
        ensure!(
            !second.projection.residual
                && expansion.input_channels() == first.projection.weights.output_channels()
                && (to.in_h, to.in_w) == (from.out_h, from.out_w),
            "these blocks do not chain"
        );
        Ok(FastChain {
            first: first.clone(),
            second: second.clone(),
        })
    }

    fn input_count(&self) -> usize {
        1 + usize::from(self.first.projection.residual)
    }

    /// Computes the second block's output from `input`, the first's, and
    /// the first's `residual`.
    #[cfg(target_arch = "x86_64")]
    pub fn run(
        &self,
        input: &[f32],
        residual: Option<&[f32]>,
        output: &mut [f32],
    ) -> TractResult<()> {
        use crate::ops::depthwise::kernel::row_stream::depthwise_rows_chained;
        use crate::ops::project_rows::Residual;

        let (first, second) = (&self.first, &self.second);
        let Streamed::Expand(expansion) = &second.source else {
            bail!("FastChain: the second block is not an expansion's");
        };
        let between = first.projection.weights.output_channels() * first.projection.pixels;
        ensure!(
            output.len() == second.projection.weights.output_channels() * second.projection.pixels
                && residual.is_none_or(|r| r.len() == between)
                && residual.is_some() == first.projection.residual,
            "FastChain: output or residual shape does not match the op"
        );
        let source = match &first.source {
            Streamed::Expand(op) => op.rows(input.into())?,
            Streamed::Stem(op) => op.rows(input.into())?,
        };
        let (from, to) = (first.source.depthwise(), second.source.depthwise());
        // One row of the first block's output, every channel.
        let width = from.geometry.out_w;
        let mut line = vec![0f32; first.projection.weights.output_channels() * width];
        // SAFETY: the first block's projection writes the line inside
        // `take` and the expansion reads it inside `fill`, one after the
        // other (`depthwise_rows_chained`), never both at once.
        let (read, write) = unsafe { crate::ops::planes::in_place(&mut line) };
        let residual = residual.map_or(Residual::None, Residual::Planes);
        let mut link = first.projection_rows(residual, write, width);
        let then = expansion.line_rows(read)?;
        let mut sink =
            second.projection_rows(Residual::None, output.into(), second.projection.pixels);
        from.with_filters(|from_filters| {
            to.with_filters(|to_filters| {
                depthwise_rows_chained(
                    (&from.geometry, &source, from_filters),
                    &mut link,
                    (&to.geometry, &then, to_filters),
                    &mut sink,
                )
            })
        })?
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub fn run(&self, _: &[f32], _: Option<&[f32]>, _: &mut [f32]) -> TractResult<()> {
        bail!("FastChain needs x86-64")
    }
}

impl Op for FastChain {
    fn name(&self) -> StaticName {
        "FastChain".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let mut info = self.first.info()?;
        info.extend(self.second.info()?);
        Ok(info)
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for FastChain {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        // SAFETY: the second block's projection writes every pixel of
        // every channel (as `FastProjected`'s does).
        unsafe {
            eval_with_residual_into(
                inputs,
                self.first.projection.residual,
                &self.second.projection.output_shape,
                |input, residual, output| self.run(input, residual, output),
            )
        }
    }
}

impl TypedOp for FastChain {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        f32_output_fact(
            "FastChain",
            inputs,
            self.input_count(),
            &self.second.projection.output_shape,
        )
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let first = self.first.cost(inputs)?;
        let second = self.second.cost(inputs)?;
        Ok(fma_cost(first.into_iter().chain(second)))
    }

    as_op!();
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::ops::expand::op::testing::fused;
    use crate::ops::expand::op::Route;
    use crate::ops::project::op::testing::projected;
    use crate::test_support::{bits, values};

    /// The chain gives the bits of the two blocks run one after the other,
    /// through memory: stride 1 into stride 2 with uneven padding, 5x5 into
    /// 3x3, and a first block with a residual, on odd sizes and channel
    /// counts that leave partial registers.
    #[test]
    fn chained_blocks_match_the_blocks_apart_bit_for_bit() {
        if !Route::Streamed.is_available() {
            eprintln!("skipping: needs AVX-512F");
            return;
        }
        for (first, second) in [
            (
                projected(fused((5, 40), (9, 13), (3, 1), (1, 1, 1, 1)), 6, false),
                projected(fused((6, 30), (9, 13), (3, 2), (0, 0, 1, 1)), 7, false),
            ),
            (
                projected(fused((3, 17), (12, 10), (5, 1), (2, 2, 2, 2)), 20, false),
                projected(fused((20, 33), (12, 10), (3, 1), (1, 1, 1, 1)), 5, false),
            ),
            (
                projected(fused((6, 30), (9, 13), (3, 1), (1, 1, 1, 1)), 6, true),
                projected(fused((6, 40), (9, 13), (5, 2), (1, 1, 2, 2)), 9, false),
            ),
        ] {
            assert!(!second.projection.residual);
            let chain = FastChain::new(&first, &second).unwrap();
            let Streamed::Expand(source) = &first.source else {
                unreachable!()
            };
            let input = values(source.input_channels() * source.pixels, 5);
            let residual = first.projection.residual.then_some(&input[..]);
            let mut between = vec![
                f32::NAN;
                first.projection.weights.output_channels()
                    * first.projection.pixels
            ];
            first.run(&input, residual, &mut between).unwrap();
            let mut want = vec![
                f32::NAN;
                second.projection.weights.output_channels()
                    * second.projection.pixels
            ];
            second.run(&between, None, &mut want).unwrap();
            let mut got = vec![f32::NAN; want.len()];
            chain.run(&input, residual, &mut got).unwrap();
            assert_eq!(bits(&got), bits(&want));
        }
        // A second block with a residual needs all of the first's output:
        // no chain.
        let first = projected(fused((5, 40), (9, 13), (3, 1), (1, 1, 1, 1)), 6, false);
        let with_residual = projected(fused((6, 30), (9, 13), (3, 1), (1, 1, 1, 1)), 6, true);
        assert!(with_residual.projection.residual);
        assert!(FastChain::new(&first, &with_residual).is_err());
    }
}
