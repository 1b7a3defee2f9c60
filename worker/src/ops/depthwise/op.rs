//! [`FastDepthwise`]: a tract operator running [`super::kernel::depthwise`]
//! with its filter and bias baked in (they are constants in every model we
//! patch), and optionally a fused clamp (ReLU6).

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use crate::ops::eval::{eval_into, f32_output_fact};

use super::kernel::{depthwise, Geometry};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastDepthwise {
    pub geometry: Geometry,
    /// `[channels, kernel, kernel]`, f32.
    pub weights: Arc<Tensor>,
    /// `[channels]`, f32.
    pub bias: Arc<Tensor>,
    /// Lower and upper bound applied to the output, as bit patterns so the
    /// op stays `Eq` (tract compares ops to deduplicate nodes).
    pub clamp: Option<(u32, u32)>,
    /// `[1, channels, out_h, out_w]` or `[channels, out_h, out_w]`.
    pub output_shape: TVec<usize>,
    /// `weights` in the lanes layout (`[channels / 16][k * k][16]`), as the
    /// channels-in-lanes kernels hold them in registers: made once here
    /// rather than transposed on every run (2.5% of an inference did that).
    pub tap_lanes: Arc<Tensor>,
}

impl FastDepthwise {
    /// The convolution `geometry` with `weights` (`[channels, k, k]`) and
    /// `bias` (`[channels]`), unclamped.
    pub fn new(
        geometry: Geometry,
        weights: Tensor,
        bias: Tensor,
        output_shape: TVec<usize>,
    ) -> TractResult<Self> {
        let taps = geometry.kernel * geometry.kernel;
        let tap_lanes = crate::ops::lanes::planes_to_lanes(
            weights.try_as_plain_ram()?.as_slice::<f32>()?,
            geometry.channels,
            taps,
        );
        let groups = tap_lanes.len() / (taps * crate::ops::lanes::LANES);
        let tap_lanes = Tensor::from_shape(&[groups, taps, crate::ops::lanes::LANES], &tap_lanes)?;
        Ok(FastDepthwise {
            geometry,
            weights: Arc::new(weights),
            bias: Arc::new(bias),
            clamp: None,
            output_shape,
            tap_lanes: Arc::new(tap_lanes),
        })
    }

    pub fn clamp_bounds(&self) -> Option<(f32, f32)> {
        crate::ops::rewrite::clamp_from_bits(self.clamp)
    }

    /// Calls `f` with this convolution's filters as the row-streaming
    /// kernel takes them.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn with_filters<T>(
        &self,
        f: impl FnOnce(&super::kernel::row_stream::Filters) -> T,
    ) -> TractResult<T> {
        let weights_view = self.weights.try_as_plain_ram()?;
        let bias_view = self.bias.try_as_plain_ram()?;
        let lanes_view = self.tap_lanes.try_as_plain_ram()?;
        Ok(f(&super::kernel::row_stream::Filters {
            weights: weights_view.as_slice::<f32>()?,
            tap_lanes: lanes_view.as_slice::<f32>()?,
            bias: bias_view.as_slice::<f32>()?,
            clamp: self.clamp_bounds(),
        }))
    }
}

impl Op for FastDepthwise {
    fn name(&self) -> StaticName {
        "FastDepthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{:?} clamp {:?}",
            self.geometry,
            self.clamp_bounds()
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for FastDepthwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let weights_view = self.weights.try_as_plain_ram()?;
        let bias_view = self.bias.try_as_plain_ram()?;
        // SAFETY: every path of the kernel writes every element of the
        // output before anything reads it: for each channel, the portable
        // and AVX2 paths copy `out_h` whole rows of `out_w` values out of
        // their row-padded buffer (`copy_valid_rows`, junk columns left
        // behind), and the AVX-512 path compress-stores exactly the valid
        // lanes one after another, whose count it asserts equals the plane.
        // `depthwise` asserts the output holds `channels` such planes.
        unsafe {
            eval_into(inputs, &self.output_shape, |input, output| {
                depthwise(
                    &self.geometry,
                    input,
                    weights_view.as_slice::<f32>()?,
                    bias_view.as_slice::<f32>()?,
                    self.clamp_bounds(),
                    output,
                );
                Ok(())
            })
        }
    }
}

impl TypedOp for FastDepthwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        f32_output_fact("FastDepthwise", inputs, 1, &self.output_shape)
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let g = &self.geometry;
        let fma = g.output_len() * g.kernel * g.kernel;
        Ok(tvec!((Cost::FMA(f32::datum_type()), fma.into())))
    }

    as_op!();
}

impl crate::ops::rewrite::ConvReplacement for FastDepthwise {
    fn output_shape(&self) -> &[usize] {
        &self.output_shape
    }

    fn fuse_clamp(&mut self, bits: (u32, u32)) {
        self.clamp = Some(bits);
    }
}
