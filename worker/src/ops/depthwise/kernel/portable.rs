//! The path without explicit SIMD (SSE2 on x86-64, NEON on arm64 through
//! auto-vectorisation); also the twin the vector paths are tested against.
//! Uses separate multiply and add, because `f32::mul_add` without a known
//! FMA unit is a slow library call.

use super::layout::{copy_valid_rows, fill_scratch, Layout};
use super::{Geometry, Params};

/// Flat positions accumulated together: four SSE or NEON registers, enough
/// independent chains to hide the add latency.
const BLOCK: usize = 16;

pub(super) fn depthwise(geo: &Geometry, p: &Params, output: &mut [f32]) {
    match geo.kernel {
        3 => channels::<9>(geo, p, output),
        5 => channels::<25>(geo, p, output),
        _ => unreachable!("checked by is_supported"),
    }
}

fn channels<const TAPS: usize>(geo: &Geometry, p: &Params, output: &mut [f32]) {
    let layout = Layout::new(geo, BLOCK);
    let taps: [usize; TAPS] = layout.taps[..].try_into().expect("k * k taps");
    let mut scratch = vec![0f32; layout.scratch_len];
    let mut flat = vec![0f32; layout.positions.div_ceil(BLOCK) * BLOCK];
    let plane_in = geo.in_h * geo.in_w;
    let plane_out = geo.out_h * geo.out_w;
    for c in 0..geo.channels {
        fill_scratch(&layout, &p.input[c * plane_in..][..plane_in], &mut scratch);
        let weights: &[f32; TAPS] = p.weights[c * TAPS..][..TAPS].try_into().expect("k * k");
        for (start, out) in (0..).step_by(BLOCK).zip(flat.chunks_exact_mut(BLOCK)) {
            // Fixed-size arrays let the compiler drop the bounds checks and
            // keep the accumulators in vector registers.
            let mut acc = [p.bias[c]; BLOCK];
            for (&tap, &w) in taps.iter().zip(weights) {
                let src: &[f32; BLOCK] = scratch[tap + start..][..BLOCK]
                    .try_into()
                    .expect("BLOCK floats");
                for lane in 0..BLOCK {
                    acc[lane] += w * src[lane];
                }
            }
            for (o, a) in out.iter_mut().zip(&acc) {
                *o = a.max(p.lo).min(p.hi);
            }
        }
        copy_valid_rows(
            &flat,
            layout.width,
            geo.out_w,
            &mut output[c * plane_out..][..plane_out],
        );
    }
}
