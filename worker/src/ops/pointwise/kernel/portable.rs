//! The kernel without explicit SIMD: plain Rust the compiler vectorises for
//! the baseline target (SSE2 on x86-64, NEON on arm64); the only path off
//! x86-64.

use super::{Pointwise, BLOCK_CHANNELS};

/// Pixels per portable tile: 8 x 8 accumulators, which the compiler keeps in
/// the 16 SSE or 32 NEON registers.
const PORTABLE_TILE: usize = 8;

pub(super) fn pointwise(conv: &Pointwise, output: &mut [f32]) {
    let pixels = conv.pixels;
    let full = pixels / PORTABLE_TILE * PORTABLE_TILE;
    for start in (0..full).step_by(PORTABLE_TILE) {
        for block in 0..conv.weights.blocks() {
            portable_tile::<PORTABLE_TILE>(conv, block, start, output);
        }
    }
    // The last few pixels one at a time, in the same order of operations.
    for start in full..pixels {
        for block in 0..conv.weights.blocks() {
            portable_tile::<1>(conv, block, start, output);
        }
    }
}

#[inline(always)]
fn portable_tile<const WIDTH: usize>(
    conv: &Pointwise,
    block: usize,
    start: usize,
    output: &mut [f32],
) {
    let weights = conv.weights;
    let pixels = conv.pixels;
    let mut acc = [[0f32; WIDTH]; BLOCK_CHANNELS];
    for (row, bias) in acc.iter_mut().zip(weights.block_bias(block)) {
        *row = [*bias; WIDTH];
    }
    let panel = weights.panel(block);
    for ci in 0..weights.input_channels() {
        let x: &[f32; WIDTH] = conv.input[ci * pixels + start..][..WIDTH]
            .try_into()
            .expect("tile lies inside the plane");
        let w = &panel[ci * BLOCK_CHANNELS..(ci + 1) * BLOCK_CHANNELS];
        for (row, w) in acc.iter_mut().zip(w) {
            for (a, x) in row.iter_mut().zip(x) {
                *a += w * x;
            }
        }
    }
    let rows = (weights.output_channels() - block * BLOCK_CHANNELS).min(BLOCK_CHANNELS);
    for (r, row) in acc.iter().enumerate().take(rows) {
        let at = (block * BLOCK_CHANNELS + r) * pixels + start;
        let out = &mut output[at..at + WIDTH];
        for (i, (o, v)) in out.iter_mut().zip(row).enumerate() {
            let mut v = *v;
            if let Some((lo, hi)) = conv.clamp {
                v = v.max(lo).min(hi);
            }
            if let Some(residual) = conv.residual {
                v += residual[at + i];
            }
            *o = v;
        }
    }
}
