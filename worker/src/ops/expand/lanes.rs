//! The expansion as a [`LaneRows`] source: one input row of the 1x1
//! convolution at a time, written with its output channels in the lanes,
//! which is the layout the depthwise convolution after it reads
//! ([`row_stream`](crate::ops::depthwise::kernel::row_stream)). Tiles
//! of 48 channels (3 zmm) x 8 pixels: 24 accumulators, per input channel
//! three weight loads and eight broadcasts. The sums run in the pointwise
//! kernel's order (bias, then input channels in turn), so every value is
//! the one the unfused expansion writes.

use std::arch::x86_64::*;

use crate::ops::depthwise::kernel::row_stream::LaneRows;
use crate::ops::pointwise::kernel::{ChannelPanels, CHANNEL_PANEL};

const LANES: usize = 16;
const PANEL_VECTORS: usize = CHANNEL_PANEL / LANES;
/// Pixels per tile: 8 x 3 accumulators, the weights and a broadcast fit
/// the 32 registers.
const PIXELS: usize = 8;

/// The expansion of `input` (`[cin][height][width]`) by `panels`.
pub struct ExpandRows<'a> {
    pub input: &'a [f32],
    pub input_channels: usize,
    pub output_channels: usize,
    /// Width of the input planes (and of the expansion's output).
    pub width: usize,
    pub panels: &'a ChannelPanels,
    /// Clamp bounds; infinite when there is none.
    pub clamp: (f32, f32),
}

impl LaneRows for ExpandRows<'_> {
    fn fill(&self, y: usize, columns: usize, row: &mut [__m512], stride: usize, offset: usize) {
        let plane = self.input.len() / self.input_channels;
        assert!(columns <= self.width && (y + 1) * self.width <= plane);
        assert_eq!(self.panels.bias.len() % CHANNEL_PANEL, 0);
        let blocks = self.output_channels.div_ceil(LANES);
        assert!(row.len() >= (blocks - 1) * stride + offset + columns);
        assert!(std::arch::is_x86_feature_detected!("avx512f"));
        // SAFETY: AVX-512F is there (asserted); the row and the slots the
        // tiles write were bounds-checked above.
        unsafe { self.fill_row(y * self.width, columns, row, stride, offset) }
    }
}

impl ExpandRows<'_> {
    /// # Safety
    /// AVX-512F; pixels `start..start + columns` of every input plane
    /// exist; `row` holds every block's `offset + columns` registers.
    #[target_feature(enable = "avx512f")]
    unsafe fn fill_row(
        &self,
        start: usize,
        columns: usize,
        row: &mut [__m512],
        stride: usize,
        offset: usize,
    ) {
        let blocks = self.output_channels.div_ceil(LANES);
        for panel in 0..self.panels.bias.len() / CHANNEL_PANEL {
            // Registers of this panel that are real blocks of the row.
            let vectors = (blocks - panel * PANEL_VECTORS).min(PANEL_VECTORS);
            let tiles = Tiles {
                rows: self,
                panel,
                vectors,
                row: row.as_mut_ptr(),
                stride,
            };
            let mut x = 0;
            while x + PIXELS <= columns {
                unsafe { tiles.tile::<PIXELS>(start + x, offset + x) };
                x += PIXELS;
            }
            while x < columns {
                unsafe { tiles.tile::<1>(start + x, offset + x) };
                x += 1;
            }
        }
    }
}

struct Tiles<'a> {
    rows: &'a ExpandRows<'a>,
    panel: usize,
    vectors: usize,
    row: *mut __m512,
    stride: usize,
}

impl Tiles<'_> {
    /// Pixels `pixel..pixel + N` of every input plane, expanded into the
    /// panel's blocks of the row at column `column`.
    ///
    /// # Safety
    /// As for `fill_row`, for the tile's pixels and columns.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const N: usize>(&self, pixel: usize, column: usize) {
        let rows = self.rows;
        let cin = rows.input_channels;
        let plane = rows.input.len() / cin;
        let weights =
            &rows.panels.panels[self.panel * cin * CHANNEL_PANEL..][..cin * CHANNEL_PANEL];
        let bias = &rows.panels.bias[self.panel * CHANNEL_PANEL..][..CHANNEL_PANEL];
        let bias: [__m512; PANEL_VECTORS] =
            std::array::from_fn(|v| unsafe { _mm512_loadu_ps(bias[v * LANES..].as_ptr()) });
        let mut acc = [bias; N];
        for ci in 0..cin {
            let w: [__m512; PANEL_VECTORS] = std::array::from_fn(|v| unsafe {
                _mm512_loadu_ps(weights[ci * CHANNEL_PANEL + v * LANES..].as_ptr())
            });
            let input = unsafe { rows.input.as_ptr().add(ci * plane + pixel) };
            for (n, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(unsafe { *input.add(n) });
                for (a, w) in acc.iter_mut().zip(&w) {
                    *a = _mm512_fmadd_ps(*w, x, *a);
                }
            }
        }
        let (lo, hi) = (_mm512_set1_ps(rows.clamp.0), _mm512_set1_ps(rows.clamp.1));
        for (n, acc) in acc.iter().enumerate() {
            for (v, a) in acc.iter().enumerate().take(self.vectors) {
                let block = self.panel * PANEL_VECTORS + v;
                // SAFETY: the caller checked the row holds every block's
                // columns up to this tile's.
                unsafe {
                    *self.row.add(block * self.stride + column + n) =
                        _mm512_min_ps(_mm512_max_ps(*a, lo), hi);
                }
            }
        }
    }
}
