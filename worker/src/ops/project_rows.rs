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
//! seven broadcasts, straight from the lanes, per input channel; the last
//! 8 channels of a 24- or 40-channel output take one register for two
//! pixels. The sums run in the pointwise kernel's order (bias, then input
//! channel by input channel, clamp, residual last), so every value is the
//! one the unfused projection writes.

use std::arch::x86_64::*;

use crate::ops::depthwise::kernel::row_stream::{transpose_out, RowSink};
use crate::ops::kernel_probes::{self, Kind, Probe};
use crate::ops::live_channels::{Channels, Every, LiveChannels, SKIP_ZEROS_FROM};
use crate::ops::planes::PlanesOut;
use crate::ops::pointwise::kernel::{
    prefetch_lines, ChannelPanels, CHANNEL_PANEL, FLOATS_PER_LINE,
};

const LANES: usize = 16;
const PANEL_VECTORS: usize = CHANNEL_PANEL / LANES;
/// Pixels per tile: 7 divides every row width of EfficientNet-Lite0.
const PIXELS: usize = 7;
/// Pixels per tile of a panel of one vector (16 output channels, or the
/// last 16 of 112), where each FMA needs a broadcast load of its own:
/// timed tile by tile, 14 pixels ran these panels about 10% faster than
/// two tiles of 7 (both still well below the wider panels' speed).
const ONE_VECTOR_PIXELS: usize = 2 * PIXELS;

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
    /// The input channels that are not zero in each tile of [`PIXELS`]
    /// of the row being projected, when there are enough input channels
    /// to skip the others ([`SKIP_ZEROS_FROM`]); kept like `projected`.
    pub live: LiveChannels,
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
        let _timer = kernel_probes::start(|| Probe {
            kind: Kind::ProjectionRow,
            shape: [cin, cout, 1, 1, width],
        });
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
        let cin = self.input_channels;
        let skip_zeros = cin >= SKIP_ZEROS_FROM;
        if skip_zeros {
            // SAFETY: a register is 16 floats.
            let floats = unsafe {
                std::slice::from_raw_parts(row.as_ptr().cast::<f32>(), row.len() * LANES)
            };
            // SAFETY: AVX-512F is there.
            unsafe {
                self.live
                    .find(floats, (width, PIXELS), cin, cin.next_multiple_of(LANES))
            };
        }
        for panel in 0..cout.div_ceil(CHANNEL_PANEL) {
            let channels = (cout - panel * CHANNEL_PANEL).min(CHANNEL_PANEL);
            // Whole vectors, and whether 1 to 8 channels are left after them.
            let (full, half) = match channels % LANES {
                0 => (channels / LANES, false),
                1..=8 => (channels / LANES, true),
                _ => (channels.div_ceil(LANES), false),
            };
            let p = &mut projected;
            // SAFETY: as for this function.
            unsafe {
                let l = skip_zeros.then_some(&self.live);
                match (full, half) {
                    (0, _) => self.panel_row::<0, true>(panel, row, width, p, l),
                    (1, false) => self.panel_row::<1, false>(panel, row, width, p, l),
                    (1, true) => self.panel_row::<1, true>(panel, row, width, p, l),
                    (2, false) => self.panel_row::<2, false>(panel, row, width, p, l),
                    (2, true) => self.panel_row::<2, true>(panel, row, width, p, l),
                    _ => self.panel_row::<3, false>(panel, row, width, p, l),
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

    /// The whole row of one panel of `V` registers (and with `HALF`, 8
    /// channels after them) into `projected`, in tiles of [`PIXELS`] (of
    /// [`ONE_VECTOR_PIXELS`] for a panel of one vector), the row's last
    /// pixels one by one.
    ///
    /// # Safety
    /// As for `project`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn panel_row<const V: usize, const HALF: bool>(
        &self,
        panel: usize,
        row: &[__m512],
        width: usize,
        projected: &mut [__m512],
        live: Option<&LiveChannels>,
    ) {
        let cin = self.input_channels;
        let mut x = 0;
        // SAFETY: tiles stay inside the row (`x + N <= width`).
        unsafe {
            while x < width {
                let at = (panel, x);
                if let (Some(live), true) = (live, x + PIXELS <= width) {
                    let channels = live.of(x / PIXELS, 0);
                    self.tile::<V, HALF, PIXELS>(at, row, width, projected, channels);
                    x += PIXELS;
                } else if V == 1 && !HALF && x + ONE_VECTOR_PIXELS <= width {
                    self.tile::<V, HALF, ONE_VECTOR_PIXELS>(
                        at,
                        row,
                        width,
                        projected,
                        Every(0, cin),
                    );
                    x += ONE_VECTOR_PIXELS;
                } else if x + PIXELS <= width {
                    self.tile::<V, HALF, PIXELS>(at, row, width, projected, Every(0, cin));
                    x += PIXELS;
                } else {
                    self.tile::<V, HALF, 1>(at, row, width, projected, Every(0, cin));
                    x += 1;
                }
            }
        }
    }

    /// Output pixels `x..x + N` of the panel's `V` registers into
    /// `projected`, and with `HALF`, its 8 channels after them.
    ///
    /// Those 8 channels of two neighbouring pixels share a register (lanes
    /// 0-7 the first pixel's, 8-15 the second's) against their weights
    /// twice over: a 24- or 40-channel projection is then 1.5 or 2.5
    /// registers a pixel, where a third register had half its lanes
    /// empty. Each lane still sums its own channel and pixel in the same
    /// order, so the values are the same.
    ///
    /// # Safety
    /// As for `project`; `x + N <= width`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const V: usize, const HALF: bool, const N: usize>(
        &self,
        (panel, x): (usize, usize),
        row: &[__m512],
        width: usize,
        projected: &mut [__m512],
        channels: impl Channels,
    ) {
        let cin = self.input_channels;
        let weights = &self.panels.panels[panel * cin * CHANNEL_PANEL..][..cin * CHANNEL_PANEL];
        let bias = &self.panels.bias[panel * CHANNEL_PANEL..][..CHANNEL_PANEL];
        // The first 8 floats of `eight` in both halves of a register (as
        // 4 doubles: the float form of this broadcast needs AVX512DQ).
        // SAFETY (this and the loads below): a panel holds CHANNEL_PANEL
        // floats per input channel (and of bias), and V < 3 when HALF.
        let twice = |eight: &[f32]| unsafe {
            _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd(
                eight.as_ptr().cast(),
            )))
        };
        let full_bias: [__m512; V] =
            std::array::from_fn(|v| unsafe { _mm512_loadu_ps(bias[v * LANES..].as_ptr()) });
        let mut acc = [full_bias; N];
        // Pixel pairs (2k, 2k + 1) in `pairs[k]`; the entries past
        // N.div_ceil(2) stay unused.
        let mut pairs = [if HALF {
            twice(&bias[V * LANES..])
        } else {
            _mm512_setzero_ps()
        }; N];
        for k in 0..channels.count() {
            let ci = channels.channel(k);
            if let Some(ahead) = channels.ahead(k) {
                // Skipped channels break the run of weights that the
                // hardware prefetches into L1 (the tiles waited on them).
                let lines = weights.as_ptr().wrapping_add(ahead * CHANNEL_PANEL);
                prefetch_lines(lines, 0..CHANNEL_PANEL / FLOATS_PER_LINE);
            }
            let w: [__m512; V] = std::array::from_fn(|v| unsafe {
                _mm512_loadu_ps(weights[ci * CHANNEL_PANEL + v * LANES..].as_ptr())
            });
            // Lane `ci % 16` of pixel `x` in block `ci / 16`.
            // SAFETY: the row holds every block's `width` pixels (checked
            // by `take`) and `x + N <= width`.
            let lane = unsafe {
                (row.as_ptr().add((ci / LANES) * width + x) as *const f32).add(ci % LANES)
            };
            let values: [__m512; N] =
                std::array::from_fn(|n| _mm512_set1_ps(unsafe { *lane.add(n * LANES) }));
            for (acc, value) in acc.iter_mut().zip(&values) {
                for (a, w) in acc.iter_mut().zip(&w) {
                    *a = _mm512_fmadd_ps(*w, *value, *a);
                }
            }
            if HALF {
                let w = twice(&weights[ci * CHANNEL_PANEL + V * LANES..]);
                for (k, pair) in pairs.iter_mut().enumerate().take(N.div_ceil(2)) {
                    let both = match values.get(2 * k + 1) {
                        Some(&second) => _mm512_mask_blend_ps(0xff00, values[2 * k], second),
                        None => values[2 * k],
                    };
                    *pair = _mm512_fmadd_ps(w, both, *pair);
                }
            }
        }
        let (lo, hi) = (_mm512_set1_ps(self.clamp.0), _mm512_set1_ps(self.clamp.1));
        let clamp = |a: __m512| _mm512_min_ps(_mm512_max_ps(a, lo), hi);
        for (n, acc) in acc.iter().enumerate() {
            for (v, a) in acc.iter().enumerate() {
                projected[(panel * PANEL_VECTORS + v) * width + x + n] = clamp(*a);
            }
        }
        if HALF {
            // Lanes 8-15 of these vectors are past the last channel, left
            // as junk (`transpose_out` reads only the channels' lanes).
            let out = &mut projected[(panel * PANEL_VECTORS + V) * width + x..][..N];
            for (k, pair) in pairs.iter().enumerate().take(N.div_ceil(2)) {
                let pair = clamp(*pair);
                out[2 * k] = pair;
                if let Some(second) = out.get_mut(2 * k + 1) {
                    *second = _mm512_shuffle_f32x4::<0b11_10_11_10>(pair, pair);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::lanes::planes_to_lanes;
    use crate::ops::pointwise::kernel::{pointwise, PackedWeights, Pointwise};
    use crate::test_support::{bits, lacks_avx512f, mostly_zeros, values};

    /// With enough input channels to skip the zero ones, the projected
    /// rows are the dense kernel's bit for bit: one- and three-register
    /// panels, the 8-channel half, a partial register of input channels
    /// and a row that ends in a single pixel.
    #[test]
    fn skipping_zero_channels_keeps_every_bit() {
        if lacks_avx512f() {
            return;
        }
        let (cin, (height, width)) = (SKIP_ZEROS_FROM + 40, (3, 15));
        let pixels = height * width;
        let planes = mostly_zeros(cin * pixels, 4);
        for cout in [112, 40] {
            let weights =
                PackedWeights::new(&values(cout * cin, 5), &values(cout, 6), cout, cin, pixels);
            let conv = Pointwise {
                weights: &weights,
                pixels,
                input: &planes,
                clamp: None,
                residual: None,
            };
            let mut want = vec![0f32; conv.output_len()];
            pointwise(&conv, &mut want);

            let panels = weights.to_channel_panels();
            let mut got = vec![f32::NAN; cout * pixels];
            let mut sink = ProjectRows {
                panels: &panels,
                input_channels: cin,
                output_channels: cout,
                clamp: (f32::NEG_INFINITY, f32::INFINITY),
                residual: Residual::None,
                output: got.as_mut_slice().into(),
                plane: pixels,
                projected: Vec::new(),
                live: LiveChannels::default(),
            };
            for y in 0..height {
                let row_planes: Vec<f32> = planes
                    .chunks_exact(pixels)
                    .flat_map(|plane| &plane[y * width..][..width])
                    .copied()
                    .collect();
                let row = planes_to_lanes(&row_planes, cin, width);
                // SAFETY: AVX-512F is there; a register is 16 floats.
                let row: Vec<__m512> = row
                    .chunks_exact(LANES)
                    .map(|lanes| unsafe { _mm512_loadu_ps(lanes.as_ptr()) })
                    .collect();
                sink.take(y, &row, width);
            }
            assert_eq!(bits(&got), bits(&want), "{cin} -> {cout}");
        }
    }
}
