//! The AVX-512 kernel for small planes (7x7), with the output channels in
//! the lanes instead of the pixels: tiles of 48 channels (3 zmm) x 7
//! pixels, 21 accumulators, each weight vector loaded once per input
//! channel and each pixel broadcast (10 loads per 21 FMAs; 32-channel tiles
//! needed 9 per 14). Every lane does useful work when the channel count is a multiple of 16 (all of
//! EfficientNet's 7x7 layers), at the price of writing the `[pixel][channel]`
//! tile back to the `[channel][pixel]` output with scatters, which the
//! hundreds of input channels of these layers amortise.

use std::arch::x86_64::*;

use super::{prefetch_lines, ChannelPanels, Pointwise, CHANNEL_PANEL, FLOATS_PER_LINE};
use crate::ops::kernel_probes::{self, Kind, Probe};
use crate::ops::lanes::{Layout, LANES};
use crate::ops::live_channels::{Channels, Every, Live, LiveChannels, SKIP_ZEROS_FROM};
/// Vectors of output channels per tile: one panel.
const PANEL_VECTORS: usize = CHANNEL_PANEL / LANES;
/// Pixels per tile: 7 divides both 7x7 and 14x14 planes.
const PIXELS: usize = 7;
/// Input channels per pass over the plane: their weights (8 KB) and
/// pixels (12.5 KB on 7x7) stay in L1 for all the plane's tiles. Without
/// this every tile streamed the block's whole panel (up to 147 KB) from
/// L2 again, and these layers ran far below the kernel's speed elsewhere
/// (the figures are in docs/performance.md).
const INPUT_CHUNK: usize = 64;
/// Weight lines of the next pass each full tile prefetches: one per
/// input channel of the pass.
const LINES_PER_TILE: usize = INPUT_CHUNK;

/// Where a tile is: its first pixel, the input channels of its pass and,
/// when it skips the zero ones, those of them that are not.
type TileAt<'a> = (usize, std::ops::Range<usize>, Option<Live<'a>>);

pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Panics unless the CPU has AVX-512F, `conv`'s weights hold the
/// channels-in-lanes layout ([`super::PackedWeights::channel_panels`]) and
/// the slices match `conv`'s shapes.
pub(super) fn pointwise(conv: &Pointwise, output: &mut [f32]) {
    pointwise_between(conv, (Layout::Planes, Layout::Planes), output);
}

/// [`pointwise`] with the input in one layout and the output (and the
/// residual) in another.
pub(super) fn pointwise_between(
    conv: &Pointwise,
    (from, to): (Layout, Layout),
    output: &mut [f32],
) {
    assert!(available(), "AVX-512F is not available");
    conv.check_layouts((from, to), output);
    let panels = conv
        .weights
        .channel_panels()
        .expect("weights packed for channels in lanes");
    let _timer = kernel_probes::start(|| Probe {
        kind: Kind::LanesPointwise,
        shape: [
            conv.weights.input_channels(),
            conv.weights.output_channels(),
            1,
            1,
            conv.pixels,
        ],
    });
    // SAFETY: the CPU supports AVX-512F (asserted above), the input,
    // residual and output lengths match the shapes in these layouts
    // (checked above) and `panels` are `conv.weights`' own, which is all
    // `run` relies on.
    unsafe {
        match (from, to) {
            (Layout::Planes, Layout::Planes) => run::<false, false>(conv, panels, output),
            (Layout::Planes, Layout::Lanes) => run::<false, true>(conv, panels, output),
            (Layout::Lanes, Layout::Planes) => run::<true, false>(conv, panels, output),
            (Layout::Lanes, Layout::Lanes) => run::<true, true>(conv, panels, output),
        }
    }
}

/// Reads the input in the lanes layout if `LANES_IN`, NCHW planes
/// otherwise; writes the output (and reads the residual) likewise after
/// `LANES_OUT`.
///
/// # Safety
/// The CPU must support AVX-512F, the slices must match `conv`'s shapes
/// in those layouts (`Pointwise::check_layouts`) and `panels` must be
/// `conv.weights`' own.
#[target_feature(enable = "avx512f")]
unsafe fn run<const LANES_IN: bool, const LANES_OUT: bool>(
    conv: &Pointwise,
    panels: &ChannelPanels,
    output: &mut [f32],
) {
    let pixels = conv.pixels;
    let cin = conv.weights.input_channels();
    let cout = conv.weights.output_channels();
    // Sums over the input channels done so far, `[pixel][CHANNEL_PANEL]`
    // for the current block.
    let mut partial = vec![0f32; pixels * CHANNEL_PANEL];
    // Offsets of one pixel in 16 consecutive output channels. Fits i32:
    // the planes this runs on are small (`CHANNEL_LANES_BELOW`).
    let stride = i32::try_from(pixels).expect("small plane");
    // A projection's input (in lanes, after ReLU6) is mostly zeros.
    let skip_zeros = LANES_IN && cin >= SKIP_ZEROS_FROM;
    let mut live = LiveChannels::default();
    if skip_zeros {
        live.find(conv.input, (pixels, PIXELS), cin, INPUT_CHUNK);
    }
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
        for (chunk, first_ci) in (0..cin).step_by(INPUT_CHUNK).enumerate() {
            let cis = first_ci..(first_ci + INPUT_CHUNK).min(cin);
            for start in (0..full).step_by(PIXELS) {
                let live = skip_zeros.then(|| live.of(start / PIXELS, chunk));
                tile.dispatch::<PIXELS, LANES_IN, LANES_OUT>(
                    vectors,
                    (start, cis.clone(), live),
                    &mut partial,
                    output,
                );
            }
            // Leftover pixels one at a time.
            for start in full..pixels {
                tile.dispatch::<1, LANES_IN, LANES_OUT>(
                    vectors,
                    (start, cis.clone(), None),
                    &mut partial,
                    output,
                );
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
    unsafe fn dispatch<const P: usize, const LANES_IN: bool, const LANES_OUT: bool>(
        &self,
        vectors: usize,
        at: TileAt,
        partial: &mut [f32],
        output: &mut [f32],
    ) {
        match vectors {
            1 => self.run::<1, P, LANES_IN, LANES_OUT>(at, partial, output),
            2 => self.run::<2, P, LANES_IN, LANES_OUT>(at, partial, output),
            _ => self.run::<3, P, LANES_IN, LANES_OUT>(at, partial, output),
        }
    }

    /// Adds `channels` to the sums of the tile at `start`, against the
    /// block's `panel`; with each `i`th channel, prefetches `LINES` lines
    /// `i * LINES..` after `next_pass` when given.
    ///
    /// # Safety
    /// As for [`run`]; the channels exist and the tile's pixels lie inside
    /// the plane.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn sum_channels<
        const V: usize,
        const P: usize,
        const LANES_IN: bool,
        const LINES: usize,
    >(
        &self,
        acc: &mut [[__m512; V]; P],
        (panel, start): (&[f32], usize),
        channels: impl Channels,
        next_pass: Option<*const f32>,
    ) {
        let pixels = self.conv.pixels;
        for i in 0..channels.count() {
            let ci = channels.channel(i);
            if let Some(next_pass) = next_pass {
                prefetch_lines(next_pass, i * LINES..(i + 1) * LINES);
            }
            let mut w = [_mm512_setzero_ps(); V];
            for (v, w) in w.iter_mut().enumerate() {
                // SAFETY: the panel holds CHANNEL_PANEL weights per
                // input channel.
                *w = unsafe { _mm512_loadu_ps(panel.as_ptr().add(ci * CHANNEL_PANEL + v * LANES)) };
            }
            // Pixel `start + p` of channel `ci` is `x[p * step]`.
            let (at, step) = if LANES_IN {
                ((ci / LANES * pixels + start) * LANES + ci % LANES, LANES)
            } else {
                (ci * pixels + start, 1)
            };
            let x = &self.conv.input[at..][..(P - 1) * step + 1];
            for (p, row) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(x[p * step]);
                for (a, w) in row.iter_mut().zip(&w) {
                    *a = _mm512_fmadd_ps(*w, x, *a);
                }
            }
        }
    }

    /// Channels `block * 48..` (`V` vectors of them) for pixels
    /// `start..start + P`, summing over `input_channels` (only over the
    /// `live` ones of them when given): the first pass starts from the
    /// bias, later ones from `partial`, and every pass but the last
    /// leaves its sums there.
    ///
    /// # Safety
    /// As for [`run`]; those pixels must lie inside the plane.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const V: usize, const P: usize, const LANES_IN: bool, const LANES_OUT: bool>(
        &self,
        (start, input_channels, live): TileAt,
        partial: &mut [f32],
        output: &mut [f32],
    ) {
        let conv = self.conv;
        let pixels = conv.pixels;
        let cin = conv.weights.input_channels();
        let panel = &self.panels.panels[self.block * cin * CHANNEL_PANEL..][..cin * CHANNEL_PANEL];
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
        let prefetch =
            P == PIXELS && tile * LINES_PER_TILE < INPUT_CHUNK * CHANNEL_PANEL / FLOATS_PER_LINE;
        let next_pass = prefetch.then_some(next_pass);
        // SAFETY (both): as for this function.
        match live {
            None => unsafe {
                let channels = Every(input_channels.start, input_channels.end);
                self.sum_channels::<V, P, LANES_IN, 1>(
                    &mut acc,
                    (panel, start),
                    channels,
                    next_pass,
                )
            },
            Some(live) => unsafe {
                // The next pass needs all its weights, live or not here:
                // two lines a live channel, the rest after them.
                self.sum_channels::<V, P, LANES_IN, 2>(&mut acc, (panel, start), live, next_pass);
                if let Some(next_pass) = next_pass {
                    prefetch_lines(next_pass, 2 * live.count()..input_channels.len());
                }
            },
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
                let mask = self.masks[v];
                if LANES_OUT {
                    let at = ((self.block * PANEL_VECTORS + v) * pixels + start + p) * LANES;
                    // SAFETY: register `at / 16` of the lanes output (and
                    // residual) holds these sixteen channels at this pixel.
                    unsafe {
                        if let Some(residual) = conv.residual {
                            let res = _mm512_maskz_loadu_ps(mask, residual.as_ptr().add(at));
                            y = _mm512_add_ps(y, res);
                        }
                        _mm512_mask_storeu_ps(output.as_mut_ptr().add(at), mask, y);
                    }
                    continue;
                }
                let first = (self.block * CHANNEL_PANEL + v * LANES) * pixels + start + p;
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
