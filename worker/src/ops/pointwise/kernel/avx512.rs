//! The AVX-512 tile of [`super`], written with intrinsics so the
//! accumulators provably stay in registers: 8 output channels x 48 pixels
//! (24 zmm). The last vector of a strip is loaded and stored through a
//! mask, so odd pixel counts need no scalar tail and no padded copy of the
//! input. Planes too small to fill pixel vectors (7x7 = 49 of 64 lanes)
//! put output channels in the lanes instead (`channel_lanes.rs`, which the
//! dispatcher in [`super`] picks for them).

use std::arch::x86_64::*;

use super::{for_each_strip, Pointwise, BLOCK_CHANNELS, FLOATS_PER_LINE};

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

pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Panics unless the CPU has AVX-512F and the slices match `conv`'s shapes.
pub(super) fn pointwise(conv: &Pointwise, output: &mut [f32]) {
    assert!(available(), "AVX-512F is not available");
    conv.check(output);
    // SAFETY: the CPU supports AVX-512F (asserted above) and the input,
    // residual and output lengths match the shapes (checked above), which is
    // all `run` relies on.
    unsafe { run(conv, output) }
}

/// # Safety
/// The CPU must support AVX-512F and the slices must match `conv`'s
/// shapes (`Pointwise::check`).
#[target_feature(enable = "avx512f")]
unsafe fn run(conv: &Pointwise, output: &mut [f32]) {
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
            _mm_prefetch::<_MM_HINT_T0>(next_panel.wrapping_add(ci * BLOCK_CHANNELS) as *const i8);
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
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line * FLOATS_PER_LINE) as *const i8);
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
                    let res = _mm512_maskz_loadu_ps(mask(v), residual.as_ptr().add(at + v * LANES));
                    y = _mm512_add_ps(y, res);
                }
                _mm512_mask_storeu_ps(output.as_mut_ptr().add(at + v * LANES), mask(v), y);
            }
        }
    }
}
