//! The AVX-512F path: 16 flat positions per register, several registers of
//! accumulators in flight to hide the FMA latency, and each finished vector
//! compressed straight into the NCHW output (dropping the junk columns), so
//! there is no second pass over the output.

use std::arch::x86_64::*;

use super::layout::Layout;
use super::{Geometry, Params};

const LANES: usize = 16;
/// Vectors accumulated together: enough independent FMA chains to cover
/// latency on two FMA ports, few enough that the 25 weights of a 5x5 filter
/// still fit the 32 registers next to them.
const GROUP: usize = 4;

pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("popcnt")
}

/// Panics if the CPU lacks AVX-512F (or POPCNT, which every AVX-512 CPU has
/// and which counts the lanes each store writes).
pub(super) fn depthwise(geo: &Geometry, p: &Params, output: &mut [f32]) {
    assert!(available(), "AVX-512F path on a CPU without it");
    // SAFETY: the CPU supports AVX-512F and POPCNT (asserted above), the
    // only features these functions are compiled for.
    unsafe {
        match geo.kernel {
            3 => channels::<9>(geo, p, output),
            5 => channels::<25>(geo, p, output),
            _ => unreachable!("checked by is_supported"),
        }
    }
}

#[target_feature(enable = "avx512f,popcnt")]
fn channels<const TAPS: usize>(geo: &Geometry, p: &Params, output: &mut [f32]) {
    let layout = Layout::new(geo, LANES);
    let taps: [usize; TAPS] = layout.taps[..].try_into().expect("k * k taps");
    let masks = valid_lane_masks(&layout, geo.out_w);
    let plane_in = geo.in_h * geo.in_w;
    let plane_out = geo.out_h * geo.out_w;
    // The stores below write exactly the set lanes, one after another.
    let valid: usize = masks.iter().map(|m| m.count_ones() as usize).sum();
    assert_eq!(valid, plane_out, "lane masks cover the output plane");
    let mut scratch = vec![0f32; layout.scratch_len];
    let (lo, hi) = (_mm512_set1_ps(p.lo), _mm512_set1_ps(p.hi));
    for c in 0..geo.channels {
        fill_scratch(&layout, &p.input[c * plane_in..][..plane_in], &mut scratch);
        let mut weights = [_mm512_setzero_ps(); TAPS];
        for (w, &value) in weights.iter_mut().zip(&p.weights[c * TAPS..][..TAPS]) {
            *w = _mm512_set1_ps(value);
        }
        let clamp = Clamp { lo, hi };
        let dst = &mut output[c * plane_out..][..plane_out];
        // SAFETY: `scratch` is `layout.scratch_len` long, which covers every
        // tap plus whole vectors for all `masks.len()` vectors of positions;
        // `masks` select exactly `dst.len()` lanes in total (asserted above).
        unsafe {
            channel(
                &scratch,
                &taps,
                &weights,
                _mm512_set1_ps(p.bias[c]),
                clamp,
                &masks,
                dst,
            )
        };
    }
}

#[derive(Clone, Copy)]
struct Clamp {
    lo: __m512,
    hi: __m512,
}

/// # Safety
/// `scratch` must hold `taps[t] + masks.len() * LANES` floats for every tap,
/// and the masks must set exactly `dst.len()` bits in total.
#[target_feature(enable = "avx512f,popcnt")]
unsafe fn channel<const TAPS: usize>(
    scratch: &[f32],
    taps: &[usize; TAPS],
    weights: &[__m512; TAPS],
    bias: __m512,
    clamp: Clamp,
    masks: &[u16],
    dst: &mut [f32],
) {
    let base = scratch.as_ptr();
    let out = dst.as_mut_ptr();
    let mut written = 0;
    let mut groups = masks.chunks_exact(GROUP);
    let mut position = 0;
    for group_masks in &mut groups {
        let mut acc = [bias; GROUP];
        for (&tap, &w) in taps.iter().zip(weights) {
            // SAFETY: position + GROUP * LANES <= masks.len() * LANES, so the
            // loads stay inside `scratch` (caller's contract).
            let src = unsafe { base.add(tap + position) };
            for (g, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(w, unsafe { _mm512_loadu_ps(src.add(g * LANES)) }, *a);
            }
        }
        for (&a, &mask) in acc.iter().zip(group_masks) {
            // SAFETY: the masks seen so far set at most `dst.len()` bits.
            written = unsafe { store_valid(a, clamp, mask, out, written) };
        }
        position += GROUP * LANES;
    }
    for &mask in groups.remainder() {
        let mut acc = bias;
        for (&tap, &w) in taps.iter().zip(weights) {
            // SAFETY: as above, for a single vector.
            acc = _mm512_fmadd_ps(w, unsafe { _mm512_loadu_ps(base.add(tap + position)) }, acc);
        }
        // SAFETY: as above.
        written = unsafe { store_valid(acc, clamp, mask, out, written) };
        position += LANES;
    }
    debug_assert_eq!(written, dst.len());
}

/// Clamps `acc` and writes its lanes selected by `mask`, packed together,
/// at `out[written..]`; returns the new count written.
///
/// # Safety
/// `out` must be valid for `written + mask.count_ones()` floats.
#[inline]
#[target_feature(enable = "avx512f,popcnt")]
unsafe fn store_valid(
    acc: __m512,
    clamp: Clamp,
    mask: u16,
    out: *mut f32,
    written: usize,
) -> usize {
    // max(acc, lo) returns `lo` for a NaN `acc`, like f32::max.
    let value = _mm512_min_ps(_mm512_max_ps(acc, clamp.lo), clamp.hi);
    // SAFETY: the caller guarantees room for the selected lanes.
    unsafe {
        if mask == u16::MAX {
            _mm512_storeu_ps(out.add(written), value);
        } else {
            let packed = _mm512_maskz_compress_ps(mask, value);
            _mm512_mask_storeu_ps(
                out.add(written),
                first_lanes(mask.count_ones() as usize),
                packed,
            );
        }
    }
    written + mask.count_ones() as usize
}

/// For each vector of flat positions, the lanes that are real outputs (not
/// junk columns, not past the last row).
fn valid_lane_masks(layout: &Layout, out_w: usize) -> Vec<u16> {
    (0..layout.positions.div_ceil(LANES))
        .map(|v| {
            (0..LANES)
                .filter(|lane| {
                    let position = v * LANES + lane;
                    position < layout.positions && position % layout.width < out_w
                })
                .fold(0u16, |mask, lane| mask | 1 << lane)
        })
        .collect()
}

/// A mask of the first `n` (at most 16) lanes.
#[inline]
fn first_lanes(n: usize) -> __mmask16 {
    (((1u32 << n) - 1) & 0xFFFF) as __mmask16
}

/// [`super::layout::fill_scratch`] with masked 16-lane copies instead of
/// `memcpy` calls (rows are often only 7 to 28 floats), and stride-2 column
/// splitting done by two-register permutes.
#[target_feature(enable = "avx512f,popcnt")]
fn fill_scratch(layout: &Layout, plane: &[f32], scratch: &mut [f32]) {
    for copy in &layout.copies {
        let src = &plane[copy.src..copy.src + copy.len];
        let dst = &mut scratch[copy.dst..copy.dst + copy.len];
        for start in (0..copy.len).step_by(LANES) {
            let lanes = first_lanes((copy.len - start).min(LANES));
            // SAFETY: the masks select only lanes inside `src` and `dst`;
            // masked-off lanes are not accessed.
            unsafe {
                let value = _mm512_maskz_loadu_ps(lanes, src.as_ptr().add(start));
                _mm512_mask_storeu_ps(dst.as_mut_ptr().add(start), lanes, value);
            }
        }
    }
    // Lane i takes element 2i (or 2i + 1) of the 32 floats in two registers.
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for split in &layout.splits {
        let src = &plane[split.src..split.src + split.len];
        let firsts = split.len.div_ceil(2);
        let seconds = split.len / 2;
        assert!(split.dst[0] + firsts <= scratch.len() && split.dst[1] + seconds <= scratch.len());
        // Raw pointers because the two destinations share `scratch`.
        let base = scratch.as_mut_ptr();
        for pair in (0..firsts).step_by(LANES) {
            let read = 2 * pair;
            let left = split.len - read;
            // SAFETY: the load masks select only lanes inside `src` (the
            // second register is only read when the run reaches it), and the
            // store masks only lanes below `firsts` / `seconds`, which fit in
            // `scratch` after the two destinations (asserted above).
            unsafe {
                let low =
                    _mm512_maskz_loadu_ps(first_lanes(left.min(LANES)), src.as_ptr().add(read));
                let high = if left > LANES {
                    _mm512_maskz_loadu_ps(
                        first_lanes((left - LANES).min(LANES)),
                        src.as_ptr().add(read + LANES),
                    )
                } else {
                    _mm512_setzero_ps()
                };
                _mm512_mask_storeu_ps(
                    base.add(split.dst[0] + pair),
                    first_lanes((firsts - pair).min(LANES)),
                    _mm512_permutex2var_ps(low, even, high),
                );
                if seconds > pair {
                    _mm512_mask_storeu_ps(
                        base.add(split.dst[1] + pair),
                        first_lanes((seconds - pair).min(LANES)),
                        _mm512_permutex2var_ps(low, odd, high),
                    );
                }
            }
        }
    }
}
