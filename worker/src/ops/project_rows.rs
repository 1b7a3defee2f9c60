//! The 1x1 projection that ends an inverted-residual block as a
//! [`RowSink`]: it takes each row of the depthwise convolution as that
//! kernel computes it, still with channels in the lanes, and writes the
//! projected row into NCHW planes, adding the residual.
//!
//! Unfused, every depthwise row was transposed into planes of up to 1.8 MB
//! (144 x 56 x 56), which the projection then read back: on a 2-vCPU VM
//! whose L3 is shared with other tenants those planes go out to memory and
//! back. Here they never exist; only the projection's output (a sixth of
//! the channels) is transposed.
//!
//! Tiles of up to 48 output channels (3 zmm) x 7 pixels, as in
//! [`conv_rows`](crate::ops::conv_rows): one weight load per register and
//! seven broadcasts, straight from the lanes, per input channel. The sums
//! run in the pointwise kernel's order (bias, then input channel by input
//! channel, clamp, residual last), so every value is the one the unfused
//! projection writes.

use std::arch::x86_64::*;

use crate::ops::depthwise::kernel::row_stream::{transpose_out, RowSink};
use crate::ops::planes::PlanesOut;
use crate::ops::pointwise::kernel::{ChannelPanels, CHANNEL_PANEL};

const LANES: usize = 16;
const PANEL_VECTORS: usize = CHANNEL_PANEL / LANES;
/// Pixels per tile: 7 divides every row width of EfficientNet-Lite0.
const PIXELS: usize = 7;

/// The projection by `panels` (`[cout / 48][cin][48]`) of the rows it
/// takes, into `output` (`[cout][plane]`), plus the residual (shaped alike)
/// when there is one.
pub struct ProjectRows<'a> {
    pub panels: &'a ChannelPanels,
    pub input_channels: usize,
    pub output_channels: usize,
    /// Clamp bounds; infinite when there is none.
    pub clamp: (f32, f32),
    pub residual: Residual<'a>,
    pub output: PlanesOut<'a>,
    /// Pixels per output plane: the whole plane's, or one row's for a
    /// buffer that holds only the row being taken (`ops::chain`). Row `y`
    /// goes to pixel `y * width` modulo this.
    pub plane: usize,
    /// One projected row, output channels in the lanes: `[vector][x]`.
    /// Empty at first; sized by the first row and reused for the others,
    /// as every tile overwrites its part.
    pub projected: Vec<__m512>,
}

/// What the projection adds last.
pub enum Residual<'a> {
    None,
    /// Planes of their own, whole (also when the output holds one row).
    Planes(&'a [f32]),
    /// What `output` holds: the block's input, when the block runs in
    /// place. Each output row is added to the input row it replaces, which
    /// the block has read by then.
    InPlace,
}

impl RowSink for ProjectRows<'_> {
    fn take(&mut self, y: usize, row: &[__m512], width: usize) {
        let (cin, cout) = (self.input_channels, self.output_channels);
        assert!(std::arch::is_x86_feature_detected!("avx512f"));
        assert!(row.len() >= cin.div_ceil(LANES) * width);
        assert_eq!(
            self.panels.panels.len(),
            cout.div_ceil(CHANNEL_PANEL) * cin * CHANNEL_PANEL
        );
        assert_eq!(self.output.floats(), cout * self.plane);
        assert!(width == self.plane || (y + 1) * width <= self.plane);
        if let Residual::Planes(residual) = self.residual {
            assert_eq!(residual.len() % cout, 0);
            assert!((y + 1) * width <= residual.len() / cout);
        }
        // SAFETY: AVX-512F is there and the slices fit (asserted above).
        unsafe { self.project(y, row, width) }
    }
}

impl ProjectRows<'_> {
    /// # Safety
    /// As checked by `take`.
    #[target_feature(enable = "avx512f")]
    unsafe fn project(&mut self, y: usize, row: &[__m512], width: usize) {
        let cout = self.output_channels;
        let vectors = cout.div_ceil(LANES);
        let mut projected = std::mem::take(&mut self.projected);
        projected.resize(vectors * width, _mm512_setzero_ps());
        for panel in 0..cout.div_ceil(CHANNEL_PANEL) {
            let mut x = 0;
            // SAFETY: tiles stay inside the row (`x + N <= width`).
            unsafe {
                while x < width {
                    let n = if x + PIXELS <= width { PIXELS } else { 1 };
                    match ((vectors - panel * PANEL_VECTORS).min(PANEL_VECTORS), n) {
                        (1, PIXELS) => self.tile::<1, PIXELS>(panel, x, row, width, &mut projected),
                        (2, PIXELS) => self.tile::<2, PIXELS>(panel, x, row, width, &mut projected),
                        (_, PIXELS) => self.tile::<3, PIXELS>(panel, x, row, width, &mut projected),
                        (1, _) => self.tile::<1, 1>(panel, x, row, width, &mut projected),
                        (2, _) => self.tile::<2, 1>(panel, x, row, width, &mut projected),
                        (_, _) => self.tile::<3, 1>(panel, x, row, width, &mut projected),
                    }
                    x += n;
                }
            }
        }
        let at = y * width % self.plane;
        let in_place = matches!(self.residual, Residual::InPlace);
        for (v, pixels) in projected.chunks_exact(width).enumerate() {
            let channels = (cout - v * LANES).min(LANES);
            let planes = self
                .output
                .slice_mut(v * LANES * self.plane, channels * self.plane);
            // In place, the residual is added as the row is stored: the
            // same sum, as addition commutes.
            if in_place {
                transpose_out::<true>(pixels, channels, planes, (self.plane, at));
            } else {
                transpose_out::<false>(pixels, channels, planes, (self.plane, at));
            }
        }
        self.projected = projected;
        if let Residual::Planes(residual) = self.residual {
            let residual_plane = residual.len() / cout;
            for c in 0..cout {
                let row = self.output.slice_mut(c * self.plane + at, width);
                let from = c * residual_plane + y * width;
                for (out, res) in row.iter_mut().zip(&residual[from..from + width]) {
                    *out += res;
                }
            }
        }
    }

    /// Output pixels `x..x + N` of the panel's `V` registers into
    /// `projected`.
    ///
    /// # Safety
    /// As for `project`; `x + N <= width`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const V: usize, const N: usize>(
        &self,
        panel: usize,
        x: usize,
        row: &[__m512],
        width: usize,
        projected: &mut [__m512],
    ) {
        let cin = self.input_channels;
        let weights = &self.panels.panels[panel * cin * CHANNEL_PANEL..][..cin * CHANNEL_PANEL];
        let bias = &self.panels.bias[panel * CHANNEL_PANEL..][..CHANNEL_PANEL];
        let bias: [__m512; V] =
            std::array::from_fn(|v| unsafe { _mm512_loadu_ps(bias[v * LANES..].as_ptr()) });
        let mut acc = [bias; N];
        for ci in 0..cin {
            let w: [__m512; V] = std::array::from_fn(|v| unsafe {
                _mm512_loadu_ps(weights[ci * CHANNEL_PANEL + v * LANES..].as_ptr())
            });
            // Lane `ci % 16` of pixel `x` in block `ci / 16`.
            // SAFETY: the row holds every block's `width` pixels (checked
            // by `take`) and `x + N <= width`.
            let lane = unsafe {
                (row.as_ptr().add((ci / LANES) * width + x) as *const f32).add(ci % LANES)
            };
            for (n, acc) in acc.iter_mut().enumerate() {
                let value = _mm512_set1_ps(unsafe { *lane.add(n * LANES) });
                for (a, w) in acc.iter_mut().zip(&w) {
                    *a = _mm512_fmadd_ps(*w, value, *a);
                }
            }
        }
        let (lo, hi) = (_mm512_set1_ps(self.clamp.0), _mm512_set1_ps(self.clamp.1));
        for (n, acc) in acc.iter().enumerate() {
            for (v, a) in acc.iter().enumerate() {
                projected[(panel * PANEL_VECTORS + v) * width + x + n] =
                    _mm512_min_ps(_mm512_max_ps(*a, lo), hi);
            }
        }
    }
}
