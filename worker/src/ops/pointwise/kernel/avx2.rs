//! The AVX2 + FMA tile of [`super`] for CPUs without AVX-512, written with
//! intrinsics so the accumulators provably stay in registers: 4 output
//! channels x 24 pixels (12 ymm), AVX2 having half AVX-512's registers.
//! The last vector of a strip is loaded and stored through a mask, so odd
//! pixel counts need no scalar tail and no padded copy of the input.

use std::arch::x86_64::*;

use super::{for_each_strip, Pointwise, BLOCK_CHANNELS};

const LANES: usize = 8;
/// 4 channels x 3 vectors = 12 accumulators + 3 inputs + 1 broadcast
/// weight: all 16 ymm registers.
const MAX_VECTORS: usize = 3;
/// Channels per tile: half a packed block.
const ROWS: usize = BLOCK_CHANNELS / 2;

pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Panics unless the CPU has AVX2 and FMA and the slices match `conv`.
pub(super) fn pointwise(conv: &Pointwise, output: &mut [f32]) {
    assert!(available(), "AVX2 and FMA are not available");
    conv.check(output);
    // SAFETY: the CPU supports AVX2 and FMA (asserted above) and the input,
    // residual and output lengths match the shapes (checked above), which
    // is all `run` relies on.
    unsafe { run(conv, output) }
}

/// # Safety
/// The CPU must support AVX2 and FMA and the slices must match `conv`'s
/// shapes (`Pointwise::check`).
#[target_feature(enable = "avx2,fma")]
unsafe fn run(conv: &Pointwise, output: &mut [f32]) {
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
                    let res = _mm256_maskload_ps(residual.as_ptr().add(at + v * LANES), mask(v));
                    y = _mm256_add_ps(y, res);
                }
                _mm256_maskstore_ps(output.as_mut_ptr().add(at + v * LANES), mask(v), y);
            }
        }
    }
}
