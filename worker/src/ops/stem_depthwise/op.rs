//! [`FastStemDepthwise`]: [`FastStemConv`] streamed into [`FastDepthwise`]
//! row by row (AVX-512F only; the patch fuses nothing elsewhere).

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use crate::ops::eval::{eval_into, f32_output_fact, fma_cost};

use crate::ops::depthwise::op::FastDepthwise;
use crate::ops::pointwise::kernel::ChannelPanels;
use crate::ops::stem::op::FastStemConv;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastStemDepthwise {
    pub stem: FastStemConv,
    /// The stem's filters with output channels in the lanes.
    pub lanes: Arc<ChannelPanels>,
    /// The depthwise convolution over all the stem's channels.
    pub depthwise: FastDepthwise,
}

impl FastStemDepthwise {
    /// Fuses `stem` with `depthwise`, which must read exactly its output.
    pub fn new(stem: &FastStemConv, depthwise: &FastDepthwise) -> TractResult<Self> {
        let (s, d) = (&stem.geometry, &depthwise.geometry);
        ensure!(
            d.channels == stem.weights.output_channels() && (d.in_h, d.in_w) == (s.out_h, s.out_w),
            "stem and depthwise convolution do not fit together"
        );
        Ok(FastStemDepthwise {
            stem: stem.clone(),
            lanes: Arc::new(stem.weights.to_channel_panels()),
            depthwise: depthwise.clone(),
        })
    }

    /// Computes the op's output from `input` (the stem's input).
    #[cfg(target_arch = "x86_64")]
    pub fn run(&self, input: &[f32], output: &mut [f32]) -> TractResult<()> {
        use crate::ops::depthwise::kernel::row_stream::{available, depthwise_rows};

        ensure!(available(), "FastStemDepthwise needs AVX-512F");
        let dw = &self.depthwise;
        ensure!(
            output.len() == dw.geometry.output_len(),
            "FastStemDepthwise: output shape does not match the op"
        );
        let rows = self.rows(input.into())?;
        dw.with_filters(|filters| depthwise_rows(&dw.geometry, &rows, filters, output))
    }

    /// The stem's convolution of `input` as rows for the depthwise
    /// convolution; an error unless `input` has the stem's input shape.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn rows<'a>(
        &'a self,
        input: crate::ops::planes::PlanesIn<'a>,
    ) -> TractResult<crate::ops::conv_rows::ConvRows<'a>> {
        ensure!(
            input.floats() == self.stem.geometry.input_len(),
            "FastStemDepthwise: input shape does not match the op"
        );
        Ok(crate::ops::conv_rows::ConvRows {
            geometry: self.stem.geometry,
            output_channels: self.depthwise.geometry.channels,
            input,
            panels: &self.lanes,
            clamp: self
                .stem
                .clamp_bounds()
                .unwrap_or((f32::NEG_INFINITY, f32::INFINITY)),
        })
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub fn run(&self, _input: &[f32], _output: &mut [f32]) -> TractResult<()> {
        bail!("FastStemDepthwise needs x86-64")
    }
}

impl Op for FastStemDepthwise {
    fn name(&self) -> StaticName {
        "FastStemDepthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "stem {:?}, depthwise {:?}",
            self.stem.geometry, self.depthwise.geometry
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for FastStemDepthwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        // SAFETY: the streamed depthwise convolution writes every row of
        // every output plane.
        unsafe {
            eval_into(inputs, &self.depthwise.output_shape, |input, output| {
                self.run(input, output)
            })
        }
    }
}

impl TypedOp for FastStemDepthwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        f32_output_fact("FastStemDepthwise", inputs, 1, &self.depthwise.output_shape)
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(fma_cost(
            self.stem
                .cost(inputs)?
                .into_iter()
                .chain(self.depthwise.cost(inputs)?),
        ))
    }

    as_op!();
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::ops::depthwise::kernel::{depthwise, row_stream, Geometry};
    use crate::ops::pointwise::kernel::PackedWeights;
    use crate::ops::stem::im2col::Geometry as StemGeometry;
    use crate::ops::stem::kernel::conv;
    use crate::test_support::{bits, values};

    /// A 3x3 stride-2 stem of `cin` to `cout` channels on `h x w` (padding
    /// top, left, bottom, right), then a 3x3 depthwise convolution at
    /// stride 1, both clamped.
    fn fused(
        (cin, cout): (usize, usize),
        (h, w): (usize, usize),
        (top, left, bottom, right): (usize, usize, usize, usize),
    ) -> FastStemDepthwise {
        let relu6 = Some((0f32.to_bits(), 6f32.to_bits()));
        let geometry =
            StemGeometry::padded(cin, (3, 3), (2, 2), (h, w), (top, left, bottom, right));
        let (out_h, out_w) = (geometry.out_h, geometry.out_w);
        let patch = geometry.patch_len();
        let stem = FastStemConv {
            geometry,
            weights: Arc::new(PackedWeights::new(
                &values(cout * patch, 1),
                &values(cout, 2),
                cout,
                patch,
                out_h * out_w,
            )),
            clamp: relu6,
            output_shape: tvec![cout, out_h, out_w],
        };
        let depthwise = FastDepthwise {
            clamp: Some(((-1f32).to_bits(), 1f32.to_bits())),
            ..FastDepthwise::new(
                Geometry::padded(cout, (3, 1), (out_h, out_w), (1, 1, 1, 1)),
                Tensor::from_shape(&[cout, 3, 3], &values(cout * 9, 3)).unwrap(),
                Tensor::from_shape(&[cout], &values(cout, 4)).unwrap(),
                tvec![cout, out_h, out_w],
            )
            .unwrap()
        };
        FastStemDepthwise::new(&stem, &depthwise).unwrap()
    }

    /// The stem's kernel, then the depthwise kernel, through memory.
    fn unfused(op: &FastStemDepthwise, input: &[f32]) -> Vec<f32> {
        let stem = &op.stem;
        let mut between = vec![0f32; stem.output_shape.iter().product()];
        conv(
            &stem.geometry,
            &stem.weights,
            input,
            stem.clamp_bounds(),
            &mut between,
        );
        let dw = &op.depthwise;
        let mut out = vec![0f32; dw.geometry.output_len()];
        depthwise(
            &dw.geometry,
            &between,
            dw.weights.try_as_plain_ram().unwrap().as_slice().unwrap(),
            dw.bias.try_as_plain_ram().unwrap().as_slice().unwrap(),
            dw.clamp_bounds(),
            &mut out,
        );
        out
    }

    /// Same sums in the same order as the unfused pair, so the same bits.
    /// The shapes cover EfficientNet's stem, padding on every side (the
    /// edge tiles), odd sizes, and channel counts that leave partial
    /// registers and a second panel.
    #[test]
    fn streamed_stem_matches_the_unfused_kernels_bit_for_bit() {
        if !row_stream::available() {
            eprintln!("skipping: needs AVX-512F");
            return;
        }
        for op in [
            fused((3, 32), (224, 224), (0, 0, 1, 1)),
            fused((3, 20), (23, 20), (1, 1, 1, 1)),
            fused((2, 50), (9, 40), (1, 0, 0, 1)),
            fused((1, 16), (5, 5), (0, 0, 0, 0)),
        ] {
            let input = values(op.stem.geometry.input_len(), 5);
            let want = unfused(&op, &input);
            let mut got = vec![f32::NAN; want.len()];
            op.run(&input, &mut got).unwrap();
            assert_eq!(bits(&got), bits(&want), "{:?}", op.stem.geometry);
        }
    }
}
