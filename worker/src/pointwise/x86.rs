//! The AVX-512 and AVX2 tiles of [`super::kernel`], written with intrinsics
//! so the accumulators provably stay in registers: 8 output channels x 48
//! pixels (24 zmm) for AVX-512, 4 channels x 24 pixels (12 ymm) for AVX2,
//! which has half the registers. The last vector of a strip is loaded and
//! stored through a mask, so odd pixel counts need no scalar tail and no
//! padded copy of the input. On AVX-512, planes too small to fill pixel
//! vectors (7x7 = 49 of 64 lanes) put output channels in the lanes instead
//! (`channel_lanes`).
//!
//! Off x86-64 both report themselves unavailable and are never called.

use super::kernel::Pointwise;

#[cfg(target_arch = "x86_64")]
pub fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

#[cfg(target_arch = "x86_64")]
pub fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Panics unless the CPU has AVX-512F and the slices match `conv`'s shapes.
#[cfg(target_arch = "x86_64")]
pub fn pointwise_avx512(conv: &Pointwise, output: &mut [f32]) {
    assert!(has_avx512(), "AVX-512F is not available");
    conv.check(output);
    // SAFETY: the CPU supports AVX-512F (asserted above) and the input,
    // residual and output lengths match the shapes (checked above), which is
    // all `avx512::run` relies on.
    unsafe { avx512::run(conv, output) }
}

/// Panics unless the CPU has AVX2 and FMA and the slices match `conv`.
#[cfg(target_arch = "x86_64")]
pub fn pointwise_avx2(conv: &Pointwise, output: &mut [f32]) {
    assert!(has_avx2_fma(), "AVX2 and FMA are not available");
    conv.check(output);
    // SAFETY: as for `pointwise_avx512`, with AVX2 and FMA.
    unsafe { avx2::run(conv, output) }
}

#[cfg(not(target_arch = "x86_64"))]
pub fn has_avx512() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
pub fn has_avx2_fma() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
pub fn pointwise_avx512(_conv: &Pointwise, _output: &mut [f32]) {
    unreachable!("callers check has_avx512")
}

#[cfg(not(target_arch = "x86_64"))]
pub fn pointwise_avx2(_conv: &Pointwise, _output: &mut [f32]) {
    unreachable!("callers check has_avx2_fma")
}

/// Floats in a 64-byte cache line: the step of the prefetches.
#[cfg(target_arch = "x86_64")]
const FLOATS_PER_LINE: usize = 16;

/// Calls `tile(vectors, start, width)` for consecutive strips of at most
/// `lanes * max_vectors` pixels; `vectors` covers `width` with the last one
/// partial when `width` is not a multiple of `lanes`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn for_each_strip(
    pixels: usize,
    lanes: usize,
    max_vectors: usize,
    mut strip: impl FnMut(usize, usize, usize),
) {
    let mut start = 0;
    while start < pixels {
        let width = (pixels - start).min(lanes * max_vectors);
        strip(width.div_ceil(lanes), start, width);
        start += width;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{channel_lanes, for_each_strip, FLOATS_PER_LINE};
    use crate::pointwise::kernel::{Pointwise, BLOCK_CHANNELS};

    const LANES: usize = 16;
    /// 8 channels x 3 vectors = 24 accumulators + 3 input vectors, of 32 zmm.
    const MAX_VECTORS: usize = 3;
    /// Rows (one input channel's pixels) longer than this are prefetched by
    /// hand: the L1 prefetcher follows strides up to 2 KB, so on 28x28 and
    /// larger planes each tile's loads waited on L2 for every input
    /// channel. On 14x14 planes prefetching by hand only cost time.
    const PREFETCH_ROWS_OVER: usize = 2048;
    /// Input channels ahead of the one being summed whose rows are
    /// prefetched: enough to cover an L2 hit's latency at a dozen cycles per
    /// channel.
    const PREFETCH_AHEAD: usize = 4;

    /// # Safety
    /// The CPU must support AVX-512F and the slices must match `conv`'s
    /// shapes (`Pointwise::check`).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run(conv: &Pointwise, output: &mut [f32]) {
        if let Some(panels) = conv.weights.channel_panels() {
            channel_lanes::run(conv, panels, output);
            return;
        }
        let prefetch = conv.pixels * std::mem::size_of::<f32>() > PREFETCH_ROWS_OVER;
        for_each_strip(conv.pixels, LANES, MAX_VECTORS, |vectors, start, width| {
            let tail = width - (vectors - 1) * LANES;
            let last_mask: __mmask16 = if tail == LANES { !0 } else { (1 << tail) - 1 };
            for block in 0..conv.weights.blocks() {
                match (vectors, prefetch) {
                    (1, false) => tile::<1, false>(conv, block, start, last_mask, output),
                    (2, false) => tile::<2, false>(conv, block, start, last_mask, output),
                    (_, false) => tile::<3, false>(conv, block, start, last_mask, output),
                    (1, true) => tile::<1, true>(conv, block, start, last_mask, output),
                    (2, true) => tile::<2, true>(conv, block, start, last_mask, output),
                    (_, true) => tile::<3, true>(conv, block, start, last_mask, output),
                }
            }
        });
    }

    /// Output channels `block * 8..` (those that exist) for pixels
    /// `start..start + (V - 1) * 16 + popcount(last_mask)`, prefetching the
    /// input rows ahead when `PREFETCH`.
    ///
    /// # Safety
    /// As for [`run`]; that pixel range must lie inside the plane.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const V: usize, const PREFETCH: bool>(
        conv: &Pointwise,
        block: usize,
        start: usize,
        last_mask: __mmask16,
        output: &mut [f32],
    ) {
        let weights = conv.weights;
        let pixels = conv.pixels;
        let mask = |v: usize| if v + 1 == V { last_mask } else { !0 };

        let mut acc = [[_mm512_setzero_ps(); V]; BLOCK_CHANNELS];
        for (row, bias) in acc.iter_mut().zip(weights.block_bias(block)) {
            *row = [_mm512_set1_ps(*bias); V];
        }
        let panel = weights.panel(block);
        let cin = weights.input_channels();
        let next_strip = if block + 1 == weights.blocks() {
            V * LANES
        } else {
            0
        };
        // The first strip brings every block's weights from L3 (the
        // others find them in L2): it prefetches the next block's as it
        // goes, one input channel's eight weights per channel summed.
        let next_panel = (start == 0).then(|| panel.as_ptr().wrapping_add(panel.len()));
        for ci in 0..cin {
            if let Some(next_panel) = next_panel {
                _mm_prefetch::<_MM_HINT_T0>(
                    next_panel.wrapping_add(ci * BLOCK_CHANNELS) as *const i8
                );
            }
            if PREFETCH {
                let ahead = if ci + PREFETCH_AHEAD < cin {
                    (ci + PREFETCH_AHEAD) * pixels + start
                } else {
                    // The first channels for the next tile: the next
                    // block's over the same strip, or after the last block
                    // the next strip's.
                    (ci + PREFETCH_AHEAD - cin) * pixels + start + next_strip
                };
                // Past the plane's end the address lies outside the input,
                // which a prefetch may name (it never faults);
                // `wrapping_add` keeps computing it defined.
                let ahead = conv.input.as_ptr().wrapping_add(ahead);
                for line in 0..=V {
                    _mm_prefetch::<_MM_HINT_T0>(
                        ahead.wrapping_add(line * FLOATS_PER_LINE) as *const i8
                    );
                }
            }
            // SAFETY: `ci * pixels + start` and the unmasked lanes after it
            // are inside `input` (`[cin, pixels]`, the tile inside the
            // plane); masked lanes are neither read nor faulted on.
            let row = unsafe { conv.input.as_ptr().add(ci * pixels + start) };
            let mut x = [_mm512_setzero_ps(); V];
            for (v, x) in x.iter_mut().enumerate() {
                *x = unsafe { _mm512_maskz_loadu_ps(mask(v), row.add(v * LANES)) };
            }
            let w: &[f32; BLOCK_CHANNELS] = panel[ci * BLOCK_CHANNELS..][..BLOCK_CHANNELS]
                .try_into()
                .expect("panels hold whole blocks");
            for (row, w) in acc.iter_mut().zip(w) {
                let w = _mm512_set1_ps(*w);
                for (a, x) in row.iter_mut().zip(&x) {
                    *a = _mm512_fmadd_ps(w, *x, *a);
                }
            }
        }

        let rows = (weights.output_channels() - block * BLOCK_CHANNELS).min(BLOCK_CHANNELS);
        let clamp = conv
            .clamp
            .map(|(lo, hi)| (_mm512_set1_ps(lo), _mm512_set1_ps(hi)));
        for (r, row) in acc.iter().enumerate().take(rows) {
            let at = (block * BLOCK_CHANNELS + r) * pixels + start;
            for (v, y) in row.iter().enumerate() {
                let mut y = *y;
                if let Some((lo, hi)) = clamp {
                    y = _mm512_min_ps(_mm512_max_ps(y, lo), hi);
                }
                // SAFETY: as for the input, in the `[cout, pixels]` residual
                // and output; `r` is a real output channel (`rows`).
                unsafe {
                    if let Some(residual) = conv.residual {
                        let res =
                            _mm512_maskz_loadu_ps(mask(v), residual.as_ptr().add(at + v * LANES));
                        y = _mm512_add_ps(y, res);
                    }
                    _mm512_mask_storeu_ps(output.as_mut_ptr().add(at + v * LANES), mask(v), y);
                }
            }
        }
    }
}

/// Small planes (7x7) with the output channels in the lanes instead:
/// tiles of 48 channels (3 zmm) x 7 pixels, 21 accumulators, each weight
/// vector loaded once per input channel and each pixel broadcast (10 loads
/// per 21 FMAs; 32-channel tiles needed 9 per 14). Every lane
/// does useful work when the channel count is a multiple of 16 (all of
/// EfficientNet's 7x7 layers), at the price of writing the `[pixel][channel]`
/// tile back to the `[channel][pixel]` output with scatters, which the
/// hundreds of input channels of these layers amortise.
#[cfg(target_arch = "x86_64")]
mod channel_lanes {
    use std::arch::x86_64::*;

    use super::FLOATS_PER_LINE;
    use crate::pointwise::kernel::{ChannelPanels, Pointwise, CHANNEL_PANEL};

    const LANES: usize = 16;
    /// Vectors of output channels per tile: one panel.
    const PANEL_VECTORS: usize = CHANNEL_PANEL / LANES;
    /// Pixels per tile: 7 divides both 7x7 and 14x14 planes.
    const PIXELS: usize = 7;
    /// Input channels per pass over the plane: their weights (8 KB) and
    /// pixels (12.5 KB on 7x7) stay in L1 for all the plane's tiles. Without
    /// this every tile streamed the block's whole panel (up to 147 KB) from
    /// L2 again, and these layers ran at 35 GFMA/s against 60 elsewhere.
    const INPUT_CHUNK: usize = 64;
    /// Weight lines of the next pass each full tile prefetches: one per
    /// input channel of the pass.
    const LINES_PER_TILE: usize = INPUT_CHUNK;

    /// # Safety
    /// As for `avx512::run`; `panels` must be `conv.weights`' own.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run(conv: &Pointwise, panels: &ChannelPanels, output: &mut [f32]) {
        let pixels = conv.pixels;
        let cin = conv.weights.input_channels();
        let cout = conv.weights.output_channels();
        // Sums over the input channels done so far, `[pixel][CHANNEL_PANEL]`
        // for the current block.
        let mut partial = vec![0f32; pixels * CHANNEL_PANEL];
        // Offsets of one pixel in 16 consecutive output channels. Fits i32:
        // the planes this runs on are small (`CHANNEL_LANES_BELOW`).
        let stride = i32::try_from(pixels).expect("small plane");
        let channel_offsets = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(stride),
        );
        for block in 0..cout.div_ceil(CHANNEL_PANEL) {
            let channels = (cout - block * CHANNEL_PANEL).min(CHANNEL_PANEL);
            let lanes_mask = |n: usize| -> __mmask16 {
                if n >= LANES {
                    !0
                } else {
                    (1 << n) - 1
                }
            };
            let masks: [__mmask16; PANEL_VECTORS] =
                std::array::from_fn(|v| lanes_mask(channels.saturating_sub(v * LANES)));
            let tile = Tile {
                conv,
                panels,
                block,
                masks,
                channel_offsets,
            };
            let vectors = channels.div_ceil(LANES);
            let full = pixels / PIXELS * PIXELS;
            for first_ci in (0..cin).step_by(INPUT_CHUNK) {
                let cis = first_ci..(first_ci + INPUT_CHUNK).min(cin);
                for start in (0..full).step_by(PIXELS) {
                    tile.dispatch::<PIXELS>(vectors, start, cis.clone(), &mut partial, output);
                }
                // Leftover pixels one at a time.
                for start in full..pixels {
                    tile.dispatch::<1>(vectors, start, cis.clone(), &mut partial, output);
                }
            }
        }
    }

    struct Tile<'a> {
        conv: &'a Pointwise<'a>,
        panels: &'a ChannelPanels,
        block: usize,
        /// Which of each vector's 16 channels exist.
        masks: [__mmask16; PANEL_VECTORS],
        channel_offsets: __m512i,
    }

    impl Tile<'_> {
        /// [`Tile::run`] with as many vectors as the block has channels.
        ///
        /// # Safety
        /// As for [`Tile::run`].
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn dispatch<const P: usize>(
            &self,
            vectors: usize,
            start: usize,
            input_channels: std::ops::Range<usize>,
            partial: &mut [f32],
            output: &mut [f32],
        ) {
            match vectors {
                1 => self.run::<1, P>(start, input_channels, partial, output),
                2 => self.run::<2, P>(start, input_channels, partial, output),
                _ => self.run::<3, P>(start, input_channels, partial, output),
            }
        }

        /// Channels `block * 48..` (`V` vectors of them) for pixels
        /// `start..start + P`, summing over `input_channels`: the first pass
        /// starts from the bias, later ones from `partial`, and every pass
        /// but the last leaves its sums there.
        ///
        /// # Safety
        /// As for [`run`]; those pixels must lie inside the plane.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn run<const V: usize, const P: usize>(
            &self,
            start: usize,
            input_channels: std::ops::Range<usize>,
            partial: &mut [f32],
            output: &mut [f32],
        ) {
            let conv = self.conv;
            let pixels = conv.pixels;
            let cin = conv.weights.input_channels();
            let panel =
                &self.panels.panels[self.block * cin * CHANNEL_PANEL..][..cin * CHANNEL_PANEL];
            let bias = &self.panels.bias[self.block * CHANNEL_PANEL..][..CHANNEL_PANEL];

            let (first_pass, last_pass) = (input_channels.start == 0, input_channels.end == cin);
            let partial = &mut partial[start * CHANNEL_PANEL..][..P * CHANNEL_PANEL];
            let mut acc = [[_mm512_setzero_ps(); V]; P];
            for (p, row) in acc.iter_mut().enumerate() {
                for (v, a) in row.iter_mut().enumerate() {
                    // SAFETY: `bias` holds CHANNEL_PANEL values and
                    // `partial` as many per pixel of the tile, `v < V <= 3`.
                    *a = unsafe {
                        if first_pass {
                            _mm512_loadu_ps(bias.as_ptr().add(v * LANES))
                        } else {
                            _mm512_loadu_ps(partial.as_ptr().add(p * CHANNEL_PANEL + v * LANES))
                        }
                    };
                }
            }
            // The first tiles of a pass prefetch the weights of the next
            // pass (the next input channels, or the next block's first),
            // which follow in the panels: one line per input channel each.
            // These layers' weights (0.9-1.6 MB each) come from L3 once per
            // image, and the tiles waited on them.
            let tile = start / PIXELS;
            let next_pass = panel
                .as_ptr()
                .wrapping_add(input_channels.end * CHANNEL_PANEL)
                .wrapping_add(tile * LINES_PER_TILE * FLOATS_PER_LINE);
            let prefetch = P == PIXELS
                && tile * LINES_PER_TILE < INPUT_CHUNK * CHANNEL_PANEL / FLOATS_PER_LINE;
            for (i, ci) in input_channels.enumerate() {
                if prefetch {
                    _mm_prefetch::<_MM_HINT_T0>(
                        next_pass.wrapping_add(i * FLOATS_PER_LINE) as *const i8
                    );
                }
                let mut w = [_mm512_setzero_ps(); V];
                for (v, w) in w.iter_mut().enumerate() {
                    // SAFETY: the panel holds CHANNEL_PANEL weights per
                    // input channel.
                    *w = unsafe {
                        _mm512_loadu_ps(panel.as_ptr().add(ci * CHANNEL_PANEL + v * LANES))
                    };
                }
                let x: &[f32; P] = conv.input[ci * pixels + start..][..P]
                    .try_into()
                    .expect("tile lies inside the plane");
                for (row, x) in acc.iter_mut().zip(x) {
                    let x = _mm512_set1_ps(*x);
                    for (a, w) in row.iter_mut().zip(&w) {
                        *a = _mm512_fmadd_ps(*w, x, *a);
                    }
                }
            }

            if !last_pass {
                for (p, row) in acc.iter().enumerate() {
                    for (v, a) in row.iter().enumerate() {
                        // SAFETY: as for the loads above.
                        unsafe {
                            _mm512_storeu_ps(
                                partial.as_mut_ptr().add(p * CHANNEL_PANEL + v * LANES),
                                *a,
                            )
                        };
                    }
                }
                return;
            }
            let clamp = conv
                .clamp
                .map(|(lo, hi)| (_mm512_set1_ps(lo), _mm512_set1_ps(hi)));
            for (p, row) in acc.iter().enumerate() {
                for (v, y) in row.iter().enumerate() {
                    let mut y = *y;
                    if let Some((lo, hi)) = clamp {
                        y = _mm512_min_ps(_mm512_max_ps(y, lo), hi);
                    }
                    let first = (self.block * CHANNEL_PANEL + v * LANES) * pixels + start + p;
                    let mask = self.masks[v];
                    // SAFETY: lane i addresses `first + i * pixels`, output
                    // channel `block * 48 + v * 16 + i` at pixel `start + p`:
                    // inside the `[cout, pixels]` residual and output for the
                    // channels that exist, and the others are masked off.
                    unsafe {
                        if let Some(residual) = conv.residual {
                            let res = _mm512_mask_i32gather_ps::<4>(
                                _mm512_setzero_ps(),
                                mask,
                                self.channel_offsets,
                                residual.as_ptr().add(first),
                            );
                            y = _mm512_add_ps(y, res);
                        }
                        _mm512_mask_i32scatter_ps::<4>(
                            output.as_mut_ptr().add(first),
                            mask,
                            self.channel_offsets,
                            y,
                        );
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::for_each_strip;
    use crate::pointwise::kernel::{Pointwise, BLOCK_CHANNELS};

    const LANES: usize = 8;
    /// 4 channels x 3 vectors = 12 accumulators + 3 inputs + 1 broadcast
    /// weight: all 16 ymm registers.
    const MAX_VECTORS: usize = 3;
    /// Channels per tile: half a packed block.
    const ROWS: usize = BLOCK_CHANNELS / 2;

    /// # Safety
    /// The CPU must support AVX2 and FMA and the slices must match `conv`'s
    /// shapes (`Pointwise::check`).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run(conv: &Pointwise, output: &mut [f32]) {
        let lane_index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for_each_strip(conv.pixels, LANES, MAX_VECTORS, |vectors, start, width| {
            let tail = (width - (vectors - 1) * LANES) as i32;
            // maskload/maskstore use each lane's sign bit.
            let last_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail), lane_index);
            for block in 0..conv.weights.blocks() {
                for half in 0..BLOCK_CHANNELS / ROWS {
                    let first = block * BLOCK_CHANNELS + half * ROWS;
                    if first >= conv.weights.output_channels() {
                        break;
                    }
                    match vectors {
                        1 => tile::<1>(conv, block, half, start, last_mask, output),
                        2 => tile::<2>(conv, block, half, start, last_mask, output),
                        _ => tile::<3>(conv, block, half, start, last_mask, output),
                    }
                }
            }
        });
    }

    /// Output channels `block * 8 + half * 4..` (those that exist) for
    /// pixels `start..` covered by `V` vectors, the last one masked.
    ///
    /// # Safety
    /// As for [`run`]; those pixels must lie inside the plane.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const V: usize>(
        conv: &Pointwise,
        block: usize,
        half: usize,
        start: usize,
        last_mask: __m256i,
        output: &mut [f32],
    ) {
        let weights = conv.weights;
        let pixels = conv.pixels;
        let all = _mm256_set1_epi32(-1);
        let mask = |v: usize| if v + 1 == V { last_mask } else { all };

        let bias = &weights.block_bias(block)[half * ROWS..][..ROWS];
        let mut acc = [[_mm256_setzero_ps(); V]; ROWS];
        for (row, bias) in acc.iter_mut().zip(bias) {
            *row = [_mm256_set1_ps(*bias); V];
        }
        let panel = weights.panel(block);
        for ci in 0..weights.input_channels() {
            // SAFETY: `ci * pixels + start` and the unmasked lanes after it
            // are inside `input`; maskload neither reads nor faults on the
            // masked lanes.
            let row = unsafe { conv.input.as_ptr().add(ci * pixels + start) };
            let mut x = [_mm256_setzero_ps(); V];
            for (v, x) in x.iter_mut().enumerate() {
                *x = unsafe { _mm256_maskload_ps(row.add(v * LANES), mask(v)) };
            }
            let w = &panel[ci * BLOCK_CHANNELS + half * ROWS..][..ROWS];
            for (row, w) in acc.iter_mut().zip(w) {
                let w = _mm256_set1_ps(*w);
                for (a, x) in row.iter_mut().zip(&x) {
                    *a = _mm256_fmadd_ps(w, *x, *a);
                }
            }
        }

        let first = block * BLOCK_CHANNELS + half * ROWS;
        let rows = (weights.output_channels() - first).min(ROWS);
        let clamp = conv
            .clamp
            .map(|(lo, hi)| (_mm256_set1_ps(lo), _mm256_set1_ps(hi)));
        for (r, row) in acc.iter().enumerate().take(rows) {
            let at = (first + r) * pixels + start;
            for (v, y) in row.iter().enumerate() {
                let mut y = *y;
                if let Some((lo, hi)) = clamp {
                    y = _mm256_min_ps(_mm256_max_ps(y, lo), hi);
                }
                // SAFETY: as for the input, in the `[cout, pixels]` residual
                // and output; `first + r` is a real output channel.
                unsafe {
                    if let Some(residual) = conv.residual {
                        let res =
                            _mm256_maskload_ps(residual.as_ptr().add(at + v * LANES), mask(v));
                        y = _mm256_add_ps(y, res);
                    }
                    _mm256_maskstore_ps(output.as_mut_ptr().add(at + v * LANES), mask(v), y);
                }
            }
        }
    }
}
