//! An ungrouped convolution (the 1x1 expansions, the stem) as a
//! [`LaneRows`] source: one output row at a time, written with its output
//! channels in the lanes, which is the layout the depthwise convolution
//! after it reads ([`row_stream`](crate::ops::depthwise::kernel::row_stream)).
//! Tiles of up to 48 channels (3 zmm) x 7 pixels: up to 21 accumulators,
//! per filter tap one weight load per register and seven broadcasts. The
//! sums run in the order of the pointwise kernel (and of im2col, whose
//! rows are the taps): bias, then input channel by input channel, filter
//! row by row, column by column; taps over the padding are skipped, where
//! im2col adds an exact zero. Every value is the one the unfused
//! convolution writes.

use std::arch::x86_64::*;

use crate::ops::depthwise::kernel::row_stream::LaneRows;
use crate::ops::kernel_probes::{self, Kind, Probe};
use crate::ops::planes::PlanesIn;
use crate::ops::pointwise::kernel::{ChannelPanels, CHANNEL_PANEL};
use crate::ops::stem::im2col::Geometry;

const LANES: usize = 16;
const PANEL_VECTORS: usize = CHANNEL_PANEL / LANES;
/// Pixels per tile: 7 x 3 accumulators, the weights and a broadcast fit
/// the 32 registers, and 7 divides every row width of EfficientNet-Lite0
/// (7 to 112), so no row ends in single pixels, whose three accumulators
/// would wait on the FMA latency.
const PIXELS: usize = 7;

/// The convolution of `input` (`[cin][in_h][in_w]`) by `panels` (its
/// filters as `[cout / 48][cin * kh * kw][48]`).
pub struct ConvRows<'a> {
    pub geometry: Geometry,
    pub output_channels: usize,
    pub input: PlanesIn<'a>,
    pub panels: &'a ChannelPanels,
    /// Clamp bounds; infinite when there is none.
    pub clamp: (f32, f32),
}

impl LaneRows for ConvRows<'_> {
    fn fill(&self, y: usize, columns: usize, row: &mut [__m512], stride: usize, offset: usize) {
        let g = &self.geometry;
        assert_eq!(self.input.floats(), g.input_len());
        assert!(y < g.out_h && columns <= g.out_w);
        assert!(g.kernel_h == g.kernel_w && g.stride_h == g.stride_w);
        assert_eq!(
            self.panels.panels.len(),
            self.output_channels.div_ceil(CHANNEL_PANEL) * g.patch_len() * CHANNEL_PANEL
        );
        let blocks = self.output_channels.div_ceil(LANES);
        assert!(row.len() >= (blocks - 1) * stride + offset + columns);
        assert!(std::arch::is_x86_feature_detected!("avx512f"));
        let target = Target {
            row: row.as_mut_ptr(),
            stride,
            offset,
        };
        let _timer = kernel_probes::start(|| Probe {
            kind: if g.kernel_h == 1 {
                Kind::ExpansionRow
            } else {
                Kind::StemRow
            },
            shape: [
                g.input_channels,
                self.output_channels,
                g.kernel_h,
                g.stride_h,
                columns,
            ],
        });
        // SAFETY: AVX-512F is there (asserted); the row holds every block's
        // columns (asserted) and `Tiles` reads only input pixels inside
        // the planes (`tile` and `edge_tile`).
        unsafe {
            match (g.kernel_h, g.stride_h) {
                (1, 1) => self.fill_row::<1, 1>(y, columns, target),
                (3, 2) => self.fill_row::<3, 2>(y, columns, target),
                (k, s) => panic!("no row kernel for {k}x{k} stride {s}"),
            }
        }
    }
}

/// Where a row goes: block `b`'s column `x` is `row[b * stride + offset + x]`.
#[derive(Clone, Copy)]
struct Target {
    row: *mut __m512,
    stride: usize,
    offset: usize,
}

impl ConvRows<'_> {
    /// Whether `K` x `K` filters at stride `S` are among the row kernels.
    pub fn supports(kernel: usize, stride: usize) -> bool {
        matches!((kernel, stride), (1, 1) | (3, 2))
    }

    /// # Safety
    /// AVX-512F; `target` holds every block's `columns` columns.
    #[target_feature(enable = "avx512f")]
    unsafe fn fill_row<const K: usize, const S: usize>(
        &self,
        y: usize,
        columns: usize,
        target: Target,
    ) {
        let g = &self.geometry;
        // The filter rows that fall inside the input for this output row.
        let first = (g.pad_top.saturating_sub(y * S)).min(K);
        let last = (g.in_h + g.pad_top).saturating_sub(y * S).min(K);
        let filter_rows = first..last.max(first);
        // Output columns whose windows lie inside the input: [inner_from, inner_to).
        let inner_from = g.pad_left.div_ceil(S);
        let inner_to = ((g.in_w + g.pad_left + S).saturating_sub(K) / S)
            .max(inner_from)
            .min(columns);
        let blocks = self.output_channels.div_ceil(LANES);
        for panel in 0..self.output_channels.div_ceil(CHANNEL_PANEL) {
            let tiles = Tiles {
                rows: self,
                panel,
                filter_rows: filter_rows.clone(),
                y,
                target,
            };
            // SAFETY: as for this function; `tile` only runs on columns
            // inside [inner_from, inner_to), `edge_tile` checks each tap.
            unsafe {
                match (blocks - panel * PANEL_VECTORS).min(PANEL_VECTORS) {
                    1 => tiles.row::<K, S, 1>(columns, inner_from..inner_to),
                    2 => tiles.row::<K, S, 2>(columns, inner_from..inner_to),
                    _ => tiles.row::<K, S, 3>(columns, inner_from..inner_to),
                }
            }
        }
    }
}

struct Tiles<'a> {
    rows: &'a ConvRows<'a>,
    panel: usize,
    filter_rows: std::ops::Range<usize>,
    y: usize,
    target: Target,
}

impl Tiles<'_> {
    /// The panel's `V` registers of output columns `0..columns`, those in
    /// `inner` [`PIXELS`] at a time.
    ///
    /// # Safety
    /// As for `fill_row`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn row<const K: usize, const S: usize, const V: usize>(
        &self,
        columns: usize,
        inner: std::ops::Range<usize>,
    ) {
        let mut x = 0;
        while x < columns {
            // SAFETY: `tile` runs only on columns inside `inner`.
            unsafe {
                if inner.contains(&x) && x + PIXELS <= inner.end {
                    self.tile::<K, S, V, PIXELS, false>(x);
                    x += PIXELS;
                } else {
                    self.tile::<K, S, V, 1, true>(x);
                    x += 1;
                }
            }
        }
    }

    /// Output columns `x..x + N` of the row into the panel's `V`
    /// registers. With `EDGE`, taps over the padding are skipped one by one;
    /// without, every tap must lie inside the input.
    ///
    /// # Safety
    /// As for `fill_row`; without `EDGE` the columns' windows lie inside
    /// the input.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<
        const K: usize,
        const S: usize,
        const V: usize,
        const N: usize,
        const EDGE: bool,
    >(
        &self,
        x: usize,
    ) {
        let rows = self.rows;
        let g = &rows.geometry;
        let taps = g.patch_len();
        let weights =
            &rows.panels.panels[self.panel * taps * CHANNEL_PANEL..][..taps * CHANNEL_PANEL];
        let bias = &rows.panels.bias[self.panel * CHANNEL_PANEL..][..CHANNEL_PANEL];
        let bias: [__m512; V] =
            std::array::from_fn(|v| unsafe { _mm512_loadu_ps(bias[v * LANES..].as_ptr()) });
        let mut acc = [bias; N];
        let plane = g.in_h * g.in_w;
        for ci in 0..g.input_channels {
            for ky in self.filter_rows.clone() {
                let iy = self.y * S + ky - g.pad_top;
                let line = rows.input.line(ci * plane + iy * g.in_w, g.in_w);
                for kx in 0..K {
                    let tap = (ci * K + ky) * K + kx;
                    let w: [__m512; V] = std::array::from_fn(|v| unsafe {
                        _mm512_loadu_ps(weights[tap * CHANNEL_PANEL + v * LANES..].as_ptr())
                    });
                    for (n, acc) in acc.iter_mut().enumerate() {
                        let ix = (x + n) * S + kx;
                        let value = if EDGE {
                            match ix.checked_sub(g.pad_left) {
                                Some(ix) if ix < g.in_w => line[ix],
                                _ => continue,
                            }
                        } else {
                            // SAFETY: the caller keeps the window inside
                            // the input row.
                            unsafe { *line.get_unchecked(ix - g.pad_left) }
                        };
                        let value = _mm512_set1_ps(value);
                        for (a, w) in acc.iter_mut().zip(&w) {
                            *a = _mm512_fmadd_ps(*w, value, *a);
                        }
                    }
                }
            }
        }
        let (lo, hi) = (_mm512_set1_ps(rows.clamp.0), _mm512_set1_ps(rows.clamp.1));
        let t = self.target;
        for (n, acc) in acc.iter().enumerate() {
            for (v, a) in acc.iter().enumerate() {
                let block = self.panel * PANEL_VECTORS + v;
                // SAFETY: the caller checked the row holds every block's
                // columns.
                unsafe {
                    *t.row.add(block * t.stride + t.offset + x + n) =
                        _mm512_min_ps(_mm512_max_ps(*a, lo), hi);
                }
            }
        }
    }
}
