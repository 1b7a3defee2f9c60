//! The AVX2 + FMA path for CPUs without AVX-512: the same flat positions,
//! 8 per register, accumulated into a row-padded buffer that is then copied
//! to the output without its junk columns (AVX2 has no compressing store).

use std::arch::x86_64::*;

use super::layout::{copy_valid_rows, fill_scratch, Layout};
use super::{Geometry, Params};

const LANES: usize = 8;
/// Independent accumulators per step, to hide the FMA latency.
const GROUP: usize = 4;

pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Panics if the CPU lacks AVX2 or FMA.
pub(super) fn depthwise(geo: &Geometry, p: &Params, output: &mut [f32]) {
    assert!(available(), "AVX2 path on a CPU without AVX2 and FMA");
    // SAFETY: the CPU supports AVX2 and FMA (asserted above), the only
    // features these functions are compiled for.
    unsafe {
        match geo.kernel {
            3 => channels::<9>(geo, p, output),
            5 => channels::<25>(geo, p, output),
            _ => unreachable!("checked by is_supported"),
        }
    }
}

#[target_feature(enable = "avx2,fma")]
fn channels<const TAPS: usize>(geo: &Geometry, p: &Params, output: &mut [f32]) {
    let layout = Layout::new(geo, LANES);
    let taps: [usize; TAPS] = layout.taps[..].try_into().expect("k * k taps");
    let mut scratch = vec![0f32; layout.scratch_len];
    let mut flat = vec![0f32; layout.positions.div_ceil(LANES) * LANES];
    let plane_in = geo.in_h * geo.in_w;
    let plane_out = geo.out_h * geo.out_w;
    let clamp = (_mm256_set1_ps(p.lo), _mm256_set1_ps(p.hi));
    for c in 0..geo.channels {
        fill_scratch(&layout, &p.input[c * plane_in..][..plane_in], &mut scratch);
        let mut weights = [_mm256_setzero_ps(); TAPS];
        for (w, &value) in weights.iter_mut().zip(&p.weights[c * TAPS..][..TAPS]) {
            *w = _mm256_set1_ps(value);
        }
        // SAFETY: `scratch` is `layout.scratch_len` long, which covers every
        // tap plus whole vectors for all of `flat`, a multiple of LANES long.
        unsafe {
            channel(
                &scratch,
                &taps,
                &weights,
                _mm256_set1_ps(p.bias[c]),
                clamp,
                &mut flat,
            )
        };
        copy_valid_rows(
            &flat,
            layout.width,
            geo.out_w,
            &mut output[c * plane_out..][..plane_out],
        );
    }
}

/// # Safety
/// `flat.len()` must be a multiple of LANES and `scratch` must hold
/// `taps[t] + flat.len()` floats for every tap.
#[target_feature(enable = "avx2,fma")]
unsafe fn channel<const TAPS: usize>(
    scratch: &[f32],
    taps: &[usize; TAPS],
    weights: &[__m256; TAPS],
    bias: __m256,
    (lo, hi): (__m256, __m256),
    flat: &mut [f32],
) {
    let base = scratch.as_ptr();
    let mut groups = flat.chunks_exact_mut(GROUP * LANES);
    let mut position = 0;
    for out in &mut groups {
        let mut acc = [bias; GROUP];
        for (&tap, &w) in taps.iter().zip(weights) {
            // SAFETY: position + GROUP * LANES <= flat.len(), so the loads
            // stay inside `scratch` (caller's contract).
            let src = unsafe { base.add(tap + position) };
            for (g, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(w, unsafe { _mm256_loadu_ps(src.add(g * LANES)) }, *a);
            }
        }
        for (g, a) in acc.iter().enumerate() {
            let value = _mm256_min_ps(_mm256_max_ps(*a, lo), hi);
            // SAFETY: `out` holds GROUP * LANES floats.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(g * LANES), value) };
        }
        position += GROUP * LANES;
    }
    for out in groups.into_remainder().chunks_exact_mut(LANES) {
        let mut acc = bias;
        for (&tap, &w) in taps.iter().zip(weights) {
            // SAFETY: as above, for a single vector.
            acc = _mm256_fmadd_ps(w, unsafe { _mm256_loadu_ps(base.add(tap + position)) }, acc);
        }
        let value = _mm256_min_ps(_mm256_max_ps(acc, lo), hi);
        // SAFETY: `out` holds LANES floats.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), value) };
        position += LANES;
    }
}
