//! [`FastLanesBlock`]: an expansion ([`FastPointwise`]), the depthwise
//! convolution reading it ([`FastDepthwise`]) and maybe the projection
//! reading that (with its residual), through the lanes layout.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use crate::ops::depthwise::op::FastDepthwise;
use crate::ops::eval::{eval_with_residual_into, f32_output_fact, fma_cost};
use crate::ops::pointwise::op::FastPointwise;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastLanesBlock {
    pub expansion: FastPointwise,
    pub depthwise: FastDepthwise,
    /// The projection reading the depthwise convolution's output, once it
    /// is fused too; until then the op outputs the depthwise planes.
    pub projection: Option<FastPointwise>,
}

impl FastLanesBlock {
    /// Whether this CPU runs the op (AVX-512F).
    pub fn is_available() -> bool {
        #[cfg(target_arch = "x86_64")]
        return crate::ops::depthwise::kernel::row_stream::available();
        #[cfg(not(target_arch = "x86_64"))]
        return false;
    }

    /// Fuses `expansion` with `depthwise`, which must read exactly its
    /// output; both on a plane small enough for the pointwise kernel's
    /// channels-in-lanes layout, the expansion without a residual.
    pub fn new(expansion: &FastPointwise, depthwise: &FastDepthwise) -> TractResult<Self> {
        let g = &depthwise.geometry;
        ensure!(
            !expansion.residual
                && expansion.weights.channel_panels().is_some()
                && expansion.weights.output_channels() == g.channels
                && expansion.pixels == g.in_h * g.in_w,
            "expansion and depthwise convolution do not fit together in lanes"
        );
        Ok(FastLanesBlock {
            expansion: expansion.clone(),
            depthwise: depthwise.clone(),
            projection: None,
        })
    }

    /// This block with `projection`, which must read exactly its output,
    /// fused too.
    pub fn with_projection(&self, projection: &FastPointwise) -> TractResult<Self> {
        let g = &self.depthwise.geometry;
        ensure!(
            self.projection.is_none()
                && projection.weights.channel_panels().is_some()
                && projection.weights.input_channels() == g.channels
                && projection.pixels == g.out_h * g.out_w,
            "depthwise convolution and projection do not fit together in lanes"
        );
        Ok(FastLanesBlock {
            projection: Some(projection.clone()),
            ..self.clone()
        })
    }

    fn residual(&self) -> bool {
        self.projection.as_ref().is_some_and(|p| p.residual)
    }

    fn output_shape(&self) -> &[usize] {
        match &self.projection {
            Some(projection) => &projection.output_shape,
            None => &self.depthwise.output_shape,
        }
    }

    /// Computes the op's output from `input` (the expansion's, NCHW) and
    /// the projection's `residual`.
    #[cfg(target_arch = "x86_64")]
    pub fn run(
        &self,
        input: &[f32],
        residual: Option<&[f32]>,
        output: &mut [f32],
    ) -> TractResult<()> {
        use crate::ops::depthwise::kernel::depthwise_between;
        use crate::ops::lanes::Layout::{Lanes, Planes};
        use crate::ops::pointwise::kernel::{pointwise_between, Pointwise};
        use crate::ops::scratch::with_scratch;

        ensure!(Self::is_available(), "FastLanesBlock needs AVX-512F");
        let g = &self.depthwise.geometry;
        let output_len: usize = self.output_shape().iter().product();
        ensure!(
            input.len() == self.expansion.weights.input_channels() * self.expansion.pixels
                && output.len() == output_len
                && residual.is_none_or(|r| r.len() == output_len)
                && residual.is_some() == self.residual(),
            "FastLanesBlock: input, output or residual shape does not match the op"
        );
        let expanded_len = Lanes.len(g.channels, g.in_h * g.in_w);
        let filtered_len = Lanes.len(g.channels, g.out_h * g.out_w);
        with_scratch(expanded_len + filtered_len, |scratch| {
            let (expanded, filtered) = scratch.split_at_mut(expanded_len);
            let expansion = Pointwise {
                weights: &self.expansion.weights,
                pixels: self.expansion.pixels,
                input,
                clamp: self.expansion.clamp_bounds(),
                residual: None,
            };
            pointwise_between(&expansion, (Planes, Lanes), expanded);
            let Some(projection) = &self.projection else {
                return self.depthwise.with_filters(|filters| {
                    depthwise_between(g, expanded, filters, (Lanes, Planes), output)
                });
            };
            self.depthwise.with_filters(|filters| {
                depthwise_between(g, expanded, filters, (Lanes, Lanes), filtered)
            })?;
            let projection = Pointwise {
                weights: &projection.weights,
                pixels: projection.pixels,
                input: filtered,
                clamp: projection.clamp_bounds(),
                residual,
            };
            pointwise_between(&projection, (Lanes, Planes), output);
            Ok(())
        })
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub fn run(&self, _: &[f32], _: Option<&[f32]>, _: &mut [f32]) -> TractResult<()> {
        bail!("FastLanesBlock needs x86-64")
    }
}

impl Op for FastLanesBlock {
    fn name(&self) -> StaticName {
        "FastLanesBlock".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} channels expanded, {:?}, projected to {:?}",
            self.expansion.weights.input_channels(),
            self.depthwise.geometry,
            self.projection
                .as_ref()
                .map(|p| p.weights.output_channels())
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for FastLanesBlock {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        // SAFETY: the last step writes every element of the output: the
        // projection every channel of every pixel, or else the depthwise
        // convolution every plane.
        unsafe {
            eval_with_residual_into(
                inputs,
                self.residual(),
                self.output_shape(),
                |input, residual, output| self.run(input, residual, output),
            )
        }
    }
}

impl TypedOp for FastLanesBlock {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        f32_output_fact(
            "FastLanesBlock",
            inputs,
            1 + usize::from(self.residual()),
            self.output_shape(),
        )
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let mut costs = self.expansion.cost(inputs)?;
        costs.extend(self.depthwise.cost(inputs)?);
        if let Some(projection) = &self.projection {
            costs.extend(projection.cost(inputs)?);
        }
        Ok(fma_cost(costs))
    }

    as_op!();
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::ops::depthwise::kernel::{depthwise_on, Path};
    use crate::ops::expand::op::testing::{expansion_and_depthwise, projection};
    use crate::ops::pointwise::kernel::{pointwise, Pointwise};
    use crate::test_support::{bits, values};

    /// The three ops one after another through NCHW planes, on the kernels
    /// the model runs them on apart.
    fn unfused(block: &FastLanesBlock, input: &[f32], residual: Option<&[f32]>) -> Vec<f32> {
        let through = |conv: &FastPointwise, input: &[f32], residual: Option<&[f32]>| {
            let conv = Pointwise {
                weights: &conv.weights,
                pixels: conv.pixels,
                input,
                clamp: conv.clamp_bounds(),
                residual,
            };
            let mut out = vec![0f32; conv.output_len()];
            pointwise(&conv, &mut out);
            out
        };
        let expanded = through(&block.expansion, input, None);
        let dw = &block.depthwise;
        let mut filtered = vec![0f32; dw.geometry.output_len()];
        dw.with_filters(|f| {
            depthwise_on(
                Path::Avx512ChannelLanes,
                &dw.geometry,
                &expanded,
                f.weights,
                f.bias,
                f.clamp,
                &mut filtered,
            )
        })
        .unwrap();
        match &block.projection {
            Some(projection) => through(projection, &filtered, residual),
            None => filtered,
        }
    }

    /// Same sums in the same order as the unfused ops, so the same bits.
    /// The shapes cover EfficientNet's 7x7 block with its residual,
    /// channel counts that leave partial registers and panels, planes
    /// that end in single pixels, stride 2 with a VALID crop, and a block
    /// whose projection is not fused.
    #[test]
    fn lanes_block_matches_the_unfused_ops_bit_for_bit() {
        if !FastLanesBlock::is_available() {
            eprintln!("skipping: needs AVX-512F");
            return;
        }
        let cases = [
            ((192, 1152), (7, 7), (5, 1), (2, 2, 2, 2), Some((192, true))),
            ((20, 40), (9, 9), (3, 2), (1, 1, 1, 1), Some((53, false))),
            ((13, 24), (11, 10), (3, 2), (0, 0, 0, 0), Some((5, true))),
            ((7, 24), (11, 10), (5, 1), (2, 2, 2, 2), None),
        ];
        for (channels, plane, filter, padding, projected) in cases {
            let (expansion, depthwise) = expansion_and_depthwise(channels, plane, filter, padding);
            let mut block = FastLanesBlock::new(&expansion, &depthwise).unwrap();
            let g = block.depthwise.geometry;
            if let Some((cout, residual)) = projected {
                let projection = projection((g.channels, cout), (g.out_h, g.out_w), residual);
                block = block.with_projection(&projection).unwrap();
            }
            let input = values(channels.0 * plane.0 * plane.1, 5);
            let output_len: usize = block.output_shape().iter().product();
            let residual = block.residual().then(|| values(output_len, 8));
            let want = unfused(&block, &input, residual.as_deref());
            let mut got = vec![f32::NAN; output_len];
            block.run(&input, residual.as_deref(), &mut got).unwrap();
            assert_eq!(bits(&got), bits(&want), "{g:?} into {projected:?}");
        }
    }

    /// Only blocks on planes the pointwise kernel keeps in lanes fuse, and
    /// each projection only once.
    #[test]
    fn large_planes_and_second_projections_do_not_fuse() {
        let (expansion, depthwise) =
            expansion_and_depthwise((8, 16), (14, 14), (3, 1), (1, 1, 1, 1));
        assert!(FastLanesBlock::new(&expansion, &depthwise).is_err());
        let (expansion, depthwise) = expansion_and_depthwise((8, 16), (7, 7), (3, 1), (1, 1, 1, 1));
        let block = FastLanesBlock::new(&expansion, &depthwise).unwrap();
        let projected = block
            .with_projection(&projection((16, 8), (7, 7), false))
            .unwrap();
        assert!(projected
            .with_projection(&projection((16, 8), (7, 7), false))
            .is_err());
        assert!(block
            .with_projection(&projection((17, 8), (7, 7), false))
            .is_err());
    }
}
