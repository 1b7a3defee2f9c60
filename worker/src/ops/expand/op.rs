//! [`FastExpandDepthwise`]: [`FastPointwise`] then [`FastDepthwise`],
//! chunk of output channels by chunk.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use crate::ops::depthwise::kernel::{depthwise, Geometry};
use crate::ops::depthwise::op::FastDepthwise;
use crate::ops::pointwise::kernel::{pointwise, PackedWeights, Pointwise, BLOCK_CHANNELS};
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
            expand_clamp: expand.clamp,
            pixels: expand.pixels,
            depthwise: depthwise.clone(),
        })
    }

    fn input_channels(&self) -> usize {
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
        let input = args_1!(inputs);
        let input_view = input.try_as_plain_ram()?;
        let input = input_view.as_slice::<f32>()?;
        ensure!(
            input.len() == self.input_channels() * self.pixels,
            "FastExpandDepthwise: input shape does not match the op"
        );
        let dw = &self.depthwise;
        let weights_view = dw.weights.try_as_plain_ram()?;
        let bias_view = dw.bias.try_as_plain_ram()?;
        let filters = (
            weights_view.as_slice::<f32>()?,
            bias_view.as_slice::<f32>()?,
        );
        // SAFETY: as in FastDepthwise::eval: `depthwise` writes every element
        // of each chunk's output planes, and the chunks cover all channels
        // (`run_chunks` asserts it).
        let mut output = unsafe { Tensor::uninitialized::<f32>(&dw.output_shape)? };
        {
            let mut output_view = output.try_as_plain_ram_mut()?;
            let output = output_view.as_slice_mut::<f32>()?;
            let chunk_len = self.chunks[0].output_channels() * self.pixels;
            // The expansion writes every element of the chunk it uses.
            with_scratch(chunk_len, |expanded| {
                self.run_chunks(input, filters, expanded, output)
            });
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl FastExpandDepthwise {
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
        ensure!(inputs.len() == 1, "FastExpandDepthwise takes one input");
        ensure!(
            inputs[0].datum_type == f32::datum_type(),
            "FastExpandDepthwise is f32 only"
        );
        Ok(tvec!(f32::fact(&*self.depthwise.output_shape)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let channels = self.depthwise.geometry.channels;
        let expand = channels * self.input_channels() * self.pixels;
        let depthwise = self.depthwise.cost(inputs)?;
        let mut fma: TDim = expand.into();
        for (_, n) in depthwise {
            fma += n;
        }
        Ok(tvec!((Cost::FMA(f32::datum_type()), fma)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_whole_blocks_that_fit_the_budget() {
        assert_eq!(chunk_channels(112 * 112), 8);
        assert_eq!(chunk_channels(56 * 56), 40);
        // Huge planes still take one block at a time.
        assert_eq!(chunk_channels(1000 * 1000), BLOCK_CHANNELS);
    }
}
