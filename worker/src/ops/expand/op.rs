//! [`FastExpandDepthwise`]: [`FastPointwise`] then [`FastDepthwise`],
//! row by row with channels in lanes where the CPU has AVX-512
//! ([`Route::Streamed`]), else chunk of output channels by chunk.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use crate::ops::eval::{eval_into, f32_output_fact, fma_cost};

use crate::ops::depthwise::kernel::{depthwise, Geometry};
use crate::ops::depthwise::op::FastDepthwise;
use crate::ops::pointwise::kernel::{
    pointwise, ChannelPanels, PackedWeights, Pointwise, BLOCK_CHANNELS,
};
use crate::ops::pointwise::op::FastPointwise;
use crate::ops::rewrite::clamp_from_bits;
use crate::ops::scratch::with_scratch;

/// Bytes of expanded activations computed per chunk: a quarter of a core's
/// L2 (2 MB on the Xeons we run on, 1 MB and up on most x86 cores), so the
/// chunk, the expansion's input and the depthwise scratch all stay there.
const CHUNK_BYTES: usize = 512 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastExpandDepthwise {
    /// The expansion's weights split into consecutive chunks of output
    /// channels, each packed as a convolution of its own.
    pub chunks: Vec<Arc<PackedWeights>>,
    /// The expansion's clamp (ReLU6), as bit patterns.
    pub expand_clamp: Option<(u32, u32)>,
    /// All of the expansion's weights with output channels in the lanes,
    /// for the streamed path (AVX-512).
    pub lanes: Arc<ChannelPanels>,
    /// H * W of the expansion's input and output.
    pub pixels: usize,
    /// The depthwise convolution over all the expanded channels.
    pub depthwise: FastDepthwise,
}

impl FastExpandDepthwise {
    /// Fuses `expand` (no residual) with `depthwise`, which must read
    /// exactly its output.
    pub fn new(expand: &FastPointwise, depthwise: &FastDepthwise) -> TractResult<Self> {
        let channels = expand.weights.output_channels();
        ensure!(
            !expand.residual
                && depthwise.geometry.channels == channels
                && depthwise.geometry.in_h * depthwise.geometry.in_w == expand.pixels,
            "expansion and depthwise convolution do not fit together"
        );
        let chunk = chunk_channels(expand.pixels);
        let chunks = (0..channels)
            .step_by(chunk)
            .map(|first| {
                let channels = first..(first + chunk).min(channels);
                Arc::new(expand.weights.output_channel_range(channels, expand.pixels))
            })
            .collect();
        Ok(FastExpandDepthwise {
            chunks,
            lanes: Arc::new(expand.weights.to_channel_panels()),
            expand_clamp: expand.clamp,
            pixels: expand.pixels,
            depthwise: depthwise.clone(),
        })
    }

    pub(crate) fn input_channels(&self) -> usize {
        self.chunks[0].input_channels()
    }
}

/// Channels per chunk: [`CHUNK_BYTES`] worth of planes, in whole blocks of
/// the pointwise kernel, at least one block.
fn chunk_channels(pixels: usize) -> usize {
    let fit = CHUNK_BYTES / (pixels * std::mem::size_of::<f32>()).max(1);
    (fit / BLOCK_CHANNELS).max(1) * BLOCK_CHANNELS
}

impl Op for FastExpandDepthwise {
    fn name(&self) -> StaticName {
        "FastExpandDepthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "cin {} chunks of {} channels, {:?}",
            self.input_channels(),
            self.chunks[0].output_channels(),
            self.depthwise.geometry
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for FastExpandDepthwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        // SAFETY: both routes write every element of the output
        // (`run_chunks` asserts its chunks cover all channels; the streamed
        // depthwise convolution writes every row of every plane).
        unsafe {
            eval_into(inputs, &self.depthwise.output_shape, |input, output| {
                self.run(Route::best(), input, output)
            })
        }
    }
}

/// How the expansion's output reaches the depthwise convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A few channels' whole planes at a time, through L2 (any CPU).
    Chunks,
    /// Row by row with channels in the lanes (`ops/conv_rows.rs`; AVX-512F).
    Streamed,
}

impl Route {
    /// Streamed where the CPU has it: the kernels bench has it faster on
    /// the 112x112 and 56x56 expansions and even on the smaller ones, where
    /// in the model it saves the depthwise transpose in.
    pub fn best() -> Route {
        if Route::Streamed.is_available() {
            Route::Streamed
        } else {
            Route::Chunks
        }
    }

    pub fn is_available(self) -> bool {
        match self {
            Route::Chunks => true,
            #[cfg(target_arch = "x86_64")]
            Route::Streamed => crate::ops::depthwise::kernel::row_stream::available(),
            #[cfg(not(target_arch = "x86_64"))]
            Route::Streamed => false,
        }
    }
}

impl FastExpandDepthwise {
    /// Computes the op's output from `input` by `route`, which must be
    /// available on this CPU.
    pub fn run(&self, route: Route, input: &[f32], output: &mut [f32]) -> TractResult<()> {
        ensure!(
            input.len() == self.input_channels() * self.pixels,
            "FastExpandDepthwise: input shape does not match the op"
        );
        let dw = &self.depthwise;
        ensure!(
            output.len() == dw.geometry.output_len(),
            "FastExpandDepthwise: output size"
        );
        let weights_view = dw.weights.try_as_plain_ram()?;
        let bias_view = dw.bias.try_as_plain_ram()?;
        let filters = (
            weights_view.as_slice::<f32>()?,
            bias_view.as_slice::<f32>()?,
        );
        match route {
            Route::Streamed => self.run_streamed(input, output)?,
            Route::Chunks => {
                let chunk_len = self.chunks[0].output_channels() * self.pixels;
                // The expansion writes every element of the chunk it uses.
                with_scratch(chunk_len, |expanded| {
                    self.run_chunks(input, filters, expanded, output)
                });
            }
        }
        Ok(())
    }
}

impl FastExpandDepthwise {
    /// The expansion streamed into the depthwise convolution row by row.
    #[cfg(target_arch = "x86_64")]
    fn run_streamed(&self, input: &[f32], output: &mut [f32]) -> TractResult<()> {
        use crate::ops::depthwise::kernel::row_stream::depthwise_rows;
        let rows = self.rows(input.into())?;
        let dw = &self.depthwise;
        dw.with_filters(|filters| depthwise_rows(&dw.geometry, &rows, filters, output))
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn run_streamed(&self, _: &[f32], _: &mut [f32]) -> TractResult<()> {
        bail!("the streamed route needs x86-64")
    }

    /// The expansion of `input` as rows for the depthwise convolution; an
    /// error unless `input` has the expansion's input shape.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn rows<'a>(
        &'a self,
        input: crate::ops::planes::PlanesIn<'a>,
    ) -> TractResult<crate::ops::conv_rows::ConvRows<'a>> {
        self.rows_of(input, self.depthwise.geometry.in_h)
    }

    /// [`FastExpandDepthwise::rows`] of one input row only (`line`, every
    /// input channel's pixels of that row), as its row 0: the expansion
    /// of a row another op has just made (`ops::chain`).
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn line_rows<'a>(
        &'a self,
        line: crate::ops::planes::PlanesIn<'a>,
    ) -> TractResult<crate::ops::conv_rows::ConvRows<'a>> {
        self.rows_of(line, 1)
    }

    /// The expansion of `height` rows of input planes.
    #[cfg(target_arch = "x86_64")]
    fn rows_of<'a>(
        &'a self,
        input: crate::ops::planes::PlanesIn<'a>,
        height: usize,
    ) -> TractResult<crate::ops::conv_rows::ConvRows<'a>> {
        let g = &self.depthwise.geometry;
        ensure!(
            input.floats() == self.input_channels() * height * g.in_w,
            "FastExpandDepthwise: input shape does not match the op"
        );
        Ok(crate::ops::conv_rows::ConvRows {
            geometry: crate::ops::stem::im2col::Geometry {
                input_channels: self.input_channels(),
                kernel_h: 1,
                kernel_w: 1,
                stride_h: 1,
                stride_w: 1,
                in_h: height,
                in_w: g.in_w,
                pad_top: 0,
                pad_left: 0,
                out_h: height,
                out_w: g.in_w,
            },
            output_channels: g.channels,
            input,
            panels: &self.lanes,
            clamp: clamp_from_bits(self.expand_clamp).unwrap_or((f32::NEG_INFINITY, f32::INFINITY)),
        })
    }

    /// Expands `input` one chunk of channels at a time into `expanded` and
    /// runs the depthwise convolution (`filters`: its weights and bias) on
    /// each chunk into its planes of `output`.
    fn run_chunks(
        &self,
        input: &[f32],
        (dw_weights, dw_bias): (&[f32], &[f32]),
        expanded: &mut [f32],
        output: &mut [f32],
    ) {
        let dw = &self.depthwise;
        let taps = dw.geometry.kernel * dw.geometry.kernel;
        let plane_out = dw.geometry.out_h * dw.geometry.out_w;
        let expand_clamp = clamp_from_bits(self.expand_clamp);
        let mut first = 0;
        for weights in &self.chunks {
            let n = weights.output_channels();
            let expanded = &mut expanded[..n * self.pixels];
            let expand = Pointwise {
                weights,
                pixels: self.pixels,
                input,
                clamp: expand_clamp,
                residual: None,
            };
            pointwise(&expand, expanded);
            let geometry = Geometry {
                channels: n,
                ..dw.geometry
            };
            depthwise(
                &geometry,
                expanded,
                &dw_weights[first * taps..(first + n) * taps],
                &dw_bias[first..first + n],
                dw.clamp_bounds(),
                &mut output[first * plane_out..(first + n) * plane_out],
            );
            first += n;
        }
        assert_eq!(first, dw.geometry.channels, "chunks cover every channel");
    }
}

impl TypedOp for FastExpandDepthwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        f32_output_fact(
            "FastExpandDepthwise",
            inputs,
            1,
            &self.depthwise.output_shape,
        )
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let channels = self.depthwise.geometry.channels;
        let expand = channels * self.input_channels() * self.pixels;
        let expand = (Cost::FMA(f32::datum_type()), expand.into());
        Ok(fma_cost(
            std::iter::once(expand).chain(self.depthwise.cost(inputs)?),
        ))
    }

    as_op!();
}

/// Fused ops from seeded weights, for the tests of this op and of those
/// built on it.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::test_support::values;

    /// An expansion of `cin` to `cout` channels on `h x w` planes fused with
    /// a depthwise convolution (`kernel`, `stride`, padding top, left,
    /// bottom, right), both clamped, from seeded weights.
    pub fn fused(
        channels: (usize, usize),
        plane: (usize, usize),
        filter: (usize, usize),
        padding: (usize, usize, usize, usize),
    ) -> FastExpandDepthwise {
        let (expand, depthwise) = expansion_and_depthwise(channels, plane, filter, padding);
        FastExpandDepthwise::new(&expand, &depthwise).unwrap()
    }

    /// The two ops [`fused`] fuses.
    pub fn expansion_and_depthwise(
        (cin, cout): (usize, usize),
        (h, w): (usize, usize),
        (kernel, stride): (usize, usize),
        (top, left, bottom, right): (usize, usize, usize, usize),
    ) -> (FastPointwise, FastDepthwise) {
        let clamp = Some((0f32.to_bits(), 6f32.to_bits()));
        let bias = values(cout, 2);
        let expand = FastPointwise {
            weights: Arc::new(PackedWeights::new(
                &values(cin * cout, 1),
                &bias,
                cout,
                cin,
                h * w,
            )),
            clamp,
            residual: false,
            pixels: h * w,
            output_shape: tvec![cout, h, w],
        };
        let geometry = Geometry::padded(cout, (kernel, stride), (h, w), (top, left, bottom, right));
        let filters = values(cout * kernel * kernel, 3);
        let depthwise = FastDepthwise {
            clamp: Some(((-1f32).to_bits(), 1f32.to_bits())),
            ..FastDepthwise::new(
                geometry,
                Tensor::from_shape(&[cout, kernel, kernel], &filters).unwrap(),
                Tensor::from_shape(&[cout], &values(cout, 4)).unwrap(),
                tvec![cout, geometry.out_h, geometry.out_w],
            )
            .unwrap()
        };
        (expand, depthwise)
    }

    /// A projection of the `cin` channels of `h x w` planes to `cout`,
    /// unclamped, with a residual or not, from seeded weights.
    pub fn projection(
        (cin, cout): (usize, usize),
        (h, w): (usize, usize),
        residual: bool,
    ) -> FastPointwise {
        let pixels = h * w;
        FastPointwise {
            weights: Arc::new(PackedWeights::new(
                &values(cin * cout, 6),
                &values(cout, 7),
                cout,
                cin,
                pixels,
            )),
            clamp: None,
            residual,
            pixels,
            output_shape: tvec![cout, h, w],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::fused;
    use super::*;
    use crate::test_support::{bits, values};

    /// Both routes sum in the same order: streaming changes where values
    /// live, not one bit of them. The shapes cover EfficientNet's first
    /// fused block, channel counts that leave partial registers and panels,
    /// rows that end in single pixels, and VALID crops.
    #[test]
    fn streamed_route_matches_the_chunks_bit_for_bit() {
        if !Route::Streamed.is_available() {
            eprintln!("skipping: the streamed route needs AVX-512F");
            return;
        }
        for op in [
            fused((16, 96), (112, 112), (3, 2), (0, 0, 1, 1)),
            fused((5, 40), (9, 13), (3, 1), (1, 1, 1, 1)),
            fused((7, 50), (11, 10), (5, 2), (1, 2, 2, 1)),
            fused((3, 17), (12, 9), (3, 2), (0, 0, 0, 0)),
        ] {
            let input = values(op.input_channels() * op.pixels, 5);
            let mut chunks = vec![0f32; op.depthwise.geometry.output_len()];
            op.run(Route::Chunks, &input, &mut chunks).unwrap();
            let mut streamed = vec![f32::NAN; chunks.len()];
            op.run(Route::Streamed, &input, &mut streamed).unwrap();
            assert_eq!(
                bits(&streamed),
                bits(&chunks),
                "{:?}",
                op.depthwise.geometry
            );
        }
    }

    #[test]
    fn chunks_are_whole_blocks_that_fit_the_budget() {
        assert_eq!(chunk_channels(112 * 112), 8);
        assert_eq!(chunk_channels(56 * 56), 40);
        // Huge planes still take one block at a time.
        assert_eq!(chunk_channels(1000 * 1000), BLOCK_CHANNELS);
    }
}
