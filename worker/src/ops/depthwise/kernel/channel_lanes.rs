//! The AVX-512F path with channels in lanes: sixteen channels at a time are
//! transposed into a zero-padded buffer holding, for every padded pixel, one
//! register of its sixteen channels; each output pixel is then `k * k`
//! aligned loads and FMAs against per-tap weight registers, and the results
//! are transposed back into the NCHW planes.
//!
//! The flat path ([`super::avx512`]) broadcasts one channel's weights and
//! runs over its plane as flat vectors; on small planes most of its time
//! goes to per-channel work (padding copy, weight broadcasts, compressed
//! stores of junk-column vectors) and to tap loads that straddle cache
//! lines. Here every load is one aligned cache line and no lane is junk,
//! at the price of two 16x16 transposes per sixteen channels and pixels.

use std::arch::x86_64::*;

use super::{Geometry, Params};
pub(super) use crate::ops::lanes::LANES;
use crate::ops::lanes::{planes_to_lanes, Layout};
/// Output pixels of one row computed together: on stride 1 neighbours share
/// all but one column of input loads, and seven accumulators cover the FMA
/// latency on two ports. Every row of EfficientNet-Lite0 this path runs is
/// 7, 14 or 28 pixels wide; other widths end in pairs and singles, whose
/// one or two chains wait on the FMA latency.
pub(super) const ROW_BLOCK: usize = 7;

pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Panics if the CPU lacks AVX-512F.
pub(super) fn depthwise(geo: &Geometry, p: &Params, output: &mut [f32]) {
    depthwise_between(geo, p, (Layout::Planes, Layout::Planes), output);
}

/// [`depthwise`] from `p.input` in layout `from` to `output` in layout
/// `to`. Panics if the CPU lacks AVX-512F.
pub(super) fn depthwise_between(
    geo: &Geometry,
    p: &Params,
    layouts: (Layout, Layout),
    output: &mut [f32],
) {
    assert!(available(), "AVX-512F path on a CPU without it");
    // SAFETY: the CPU supports AVX-512F (asserted above), the only feature
    // these functions are compiled for.
    unsafe {
        match (geo.kernel, geo.stride) {
            (3, 1) => blocks::<3, 1, 9>(geo, p, layouts, output),
            (3, 2) => blocks::<3, 2, 9>(geo, p, layouts, output),
            (5, 1) => blocks::<5, 1, 25>(geo, p, layouts, output),
            (5, 2) => blocks::<5, 2, 25>(geo, p, layouts, output),
            _ => unreachable!("checked by is_supported"),
        }
    }
}

/// Where each input pixel goes in the padded buffer of `width` columns, or
/// `None` for pixels no output reads (VALID crops past the last window).
fn padded_positions(geo: &Geometry, height: usize, width: usize) -> Vec<Option<usize>> {
    (0..geo.in_h * geo.in_w)
        .map(|i| {
            let (y, x) = (i / geo.in_w + geo.pad_top, i % geo.in_w + geo.pad_left);
            (y < height && x < width).then_some(y * width + x)
        })
        .collect()
}

#[target_feature(enable = "avx512f")]
fn blocks<const K: usize, const S: usize, const TAPS: usize>(
    geo: &Geometry,
    p: &Params,
    (from, to): (Layout, Layout),
    output: &mut [f32],
) {
    // The padded input every output window reads: rows and columns up to
    // the last window's far edge.
    let height = (geo.out_h - 1) * S + K;
    let width = (geo.out_w - 1) * S + K;
    let targets = padded_positions(geo, height, width);
    let plane_in = geo.in_h * geo.in_w;
    let plane_out = geo.out_h * geo.out_w;
    // Padding stays zero: each block overwrites the same interior pixels.
    let mut padded = vec![_mm512_setzero_ps(); height * width];
    let mut outputs = vec![_mm512_setzero_ps(); plane_out];
    let clamp = Clamp {
        lo: _mm512_set1_ps(p.lo),
        hi: _mm512_set1_ps(p.hi),
    };
    // Ops keep their filters in lanes; the bare kernel (tests, the kernels
    // bench) lays them out here.
    let laid_out;
    let tap_lanes = match p.tap_lanes {
        Some(lanes) => lanes,
        None => {
            laid_out = planes_to_lanes(p.weights, geo.channels, TAPS);
            &laid_out
        }
    };
    for first in (0..geo.channels).step_by(LANES) {
        let channels = (geo.channels - first).min(LANES);
        match from {
            Layout::Planes => {
                let planes = &p.input[first * plane_in..(first + channels) * plane_in];
                transpose_in(planes, channels, &targets, &mut padded);
            }
            Layout::Lanes => {
                let group = &p.input[first * plane_in..][..LANES * plane_in];
                lanes_in(group, &targets, &mut padded);
            }
        }
        let weights: [__m512; TAPS] = tap_registers(&tap_lanes[first * TAPS..][..TAPS * LANES]);
        // The next group's filters, one cache line per tap, while this
        // group runs: they come from memory once per image, and a run of
        // 9 or 25 lines is too short for the hardware prefetcher.
        if let Some(next) = tap_lanes.get((first + LANES) * TAPS..) {
            for tap in next.chunks(LANES).take(TAPS) {
                _mm_prefetch::<_MM_HINT_T0>(tap.as_ptr().cast());
            }
        }
        let bias = &p.bias[first..first + channels];
        // SAFETY: the mask selects only the `channels` floats of `bias`.
        let bias = unsafe { _mm512_maskz_loadu_ps(first_lanes(channels), bias.as_ptr()) };
        for y in 0..geo.out_h {
            // The rows of padded input the window of output row `y` covers.
            let window: [&[__m512]; K] =
                std::array::from_fn(|ky| &padded[(y * S + ky) * width..][..width]);
            let row = &mut outputs[y * geo.out_w..(y + 1) * geo.out_w];
            output_row::<K, S, TAPS>(&window, &weights, bias, clamp, row);
        }
        match to {
            Layout::Planes => transpose_out::<false>(
                &outputs,
                channels,
                &mut output[first * plane_out..(first + channels) * plane_out],
                (plane_out, 0),
            ),
            Layout::Lanes => lanes_out(
                &outputs,
                &mut output[first * plane_out..][..LANES * plane_out],
            ),
        }
    }
}

#[derive(Clone, Copy)]
pub(super) struct Clamp {
    pub lo: __m512,
    pub hi: __m512,
}

/// One row of output pixels from the `K` padded input rows its windows
/// cover, seven at a time, then in pairs and singles.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn output_row<const K: usize, const S: usize, const TAPS: usize>(
    window: &[&[__m512]; K],
    weights: &[__m512; TAPS],
    bias: __m512,
    clamp: Clamp,
    row: &mut [__m512],
) {
    let mut blocks = row.chunks_exact_mut(ROW_BLOCK);
    let mut x = 0;
    for block in &mut blocks {
        outputs_of_row::<K, S, TAPS, ROW_BLOCK>(window, x, weights, bias, clamp, block);
        x += ROW_BLOCK;
    }
    let mut pairs = blocks.into_remainder().chunks_exact_mut(2);
    for pair in &mut pairs {
        outputs_of_row::<K, S, TAPS, 2>(window, x, weights, bias, clamp, pair);
        x += 2;
    }
    for single in pairs.into_remainder().chunks_exact_mut(1) {
        outputs_of_row::<K, S, TAPS, 1>(window, x, weights, bias, clamp, single);
        x += 1;
    }
}

/// One group of sixteen channels' filters in the lanes layout
/// (`[TAPS][16]`) as one register per tap, lane `c` holding channel `c`'s
/// weight.
#[target_feature(enable = "avx512f")]
pub(super) fn tap_registers<const TAPS: usize>(tap_lanes: &[f32]) -> [__m512; TAPS] {
    assert_eq!(tap_lanes.len(), TAPS * LANES);
    // SAFETY: tap `t`'s sixteen floats are inside `tap_lanes` (asserted).
    std::array::from_fn(|t| unsafe { _mm512_loadu_ps(tap_lanes[t * LANES..].as_ptr()) })
}

/// `lines` runs of `count` floats (at most 16 each), `stride` apart from
/// the start of `src`, transposed: register `i` holds element `i` of every
/// run, lane `l` run `l`'s, zero past `lines`.
#[inline]
#[target_feature(enable = "avx512f")]
fn transposed(src: &[f32], stride: usize, lines: usize, count: usize) -> [__m512; LANES] {
    let mut rows = [_mm512_setzero_ps(); LANES];
    for (line, row) in rows.iter_mut().enumerate().take(lines) {
        let run = &src[line * stride..][..count];
        // SAFETY: the mask selects only the `count` floats of `run`.
        *row = unsafe { _mm512_maskz_loadu_ps(first_lanes(count), run.as_ptr()) };
    }
    transpose(&mut rows);
    rows
}

/// Output pixels `x..x + N` of one row: `window` is the `K` padded input
/// rows the row's filters cover.
#[inline]
#[target_feature(enable = "avx512f")]
fn outputs_of_row<const K: usize, const S: usize, const TAPS: usize, const N: usize>(
    window: &[&[__m512]; K],
    x: usize,
    weights: &[__m512; TAPS],
    bias: __m512,
    clamp: Clamp,
    out: &mut [__m512],
) {
    let mut acc = [bias; N];
    for ky in 0..K {
        // Bounds: the last load is column (x + N - 1) * S + K - 1, inside the
        // padded width because x + N <= out_w.
        let row = &window[ky][x * S..][..(N - 1) * S + K];
        for kx in 0..K {
            let w = weights[ky * K + kx];
            for (n, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(w, row[n * S + kx], *a);
            }
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        // max(a, lo) returns `lo` for a NaN `a`, like f32::max.
        *o = _mm512_min_ps(_mm512_max_ps(a, clamp.lo), clamp.hi);
    }
}

/// Copies `channels` NCHW planes into `padded`: pixel `i` of every plane
/// goes to the lanes of register `targets[i]`.
#[target_feature(enable = "avx512f")]
fn transpose_in(planes: &[f32], channels: usize, targets: &[Option<usize>], padded: &mut [__m512]) {
    let plane = targets.len();
    for start in (0..plane).step_by(LANES) {
        let pixels = (plane - start).min(LANES);
        let rows = transposed(&planes[start..], plane, channels, pixels);
        for (row, target) in rows.iter().zip(&targets[start..start + pixels]) {
            if let Some(target) = *target {
                padded[target] = *row;
            }
        }
    }
}

/// Copies one group of the lanes layout (`[pixel][16]`) into `padded`:
/// pixel `i` goes to register `targets[i]`.
#[target_feature(enable = "avx512f")]
fn lanes_in(group: &[f32], targets: &[Option<usize>], padded: &mut [__m512]) {
    for (pixel, target) in group.chunks_exact(LANES).zip(targets) {
        if let Some(target) = *target {
            // SAFETY: `pixel` holds sixteen floats.
            padded[target] = unsafe { _mm512_loadu_ps(pixel.as_ptr()) };
        }
    }
}

/// Copies one register per output pixel into one group of the lanes
/// layout (`[pixel][16]`).
#[target_feature(enable = "avx512f")]
fn lanes_out(outputs: &[__m512], group: &mut [f32]) {
    for (pixel, value) in group.chunks_exact_mut(LANES).zip(outputs) {
        // SAFETY: `pixel` holds sixteen floats.
        unsafe { _mm512_storeu_ps(pixel.as_mut_ptr(), *value) };
    }
}

/// Copies the first `channels` lanes of every register of `outputs` (one
/// per output pixel) into that many NCHW planes of `output`, each `plane`
/// floats long, from pixel `at` of each plane on (a whole plane, or a row);
/// with `ADD`, adds them to what `output` holds there instead.
#[target_feature(enable = "avx512f")]
pub(crate) fn transpose_out<const ADD: bool>(
    outputs: &[__m512],
    channels: usize,
    output: &mut [f32],
    (plane, at): (usize, usize),
) {
    for start in (0..outputs.len()).step_by(LANES) {
        let pixels = (outputs.len() - start).min(LANES);
        let mut rows = [_mm512_setzero_ps(); LANES];
        rows[..pixels].copy_from_slice(&outputs[start..start + pixels]);
        transpose(&mut rows);
        for (c, row) in rows.iter().enumerate().take(channels) {
            let dst = &mut output[c * plane + at + start..][..pixels];
            let mask = first_lanes(pixels);
            // SAFETY: the mask selects only the `pixels` floats of `dst`.
            unsafe {
                let value = if ADD {
                    _mm512_add_ps(*row, _mm512_maskz_loadu_ps(mask, dst.as_ptr()))
                } else {
                    *row
                };
                _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask, value);
            }
        }
    }
}

/// A mask of the first `n` (at most 16) lanes.
#[inline]
pub(super) fn first_lanes(n: usize) -> __mmask16 {
    (((1u32 << n) - 1) & 0xFFFF) as __mmask16
}

/// Transposes a 16x16 matrix held as 16 rows: lanes of 32, 64, 128 and
/// 256 bits are interleaved in turn.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn transpose(r: &mut [__m512; LANES]) {
    let mut t = [_mm512_setzero_ps(); LANES];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for i in 0..4 {
        r[4 * i] = lo(t[4 * i], t[4 * i + 2]);
        r[4 * i + 1] = hi(t[4 * i], t[4 * i + 2]);
        r[4 * i + 2] = lo(t[4 * i + 1], t[4 * i + 3]);
        r[4 * i + 3] = hi(t[4 * i + 1], t[4 * i + 3]);
    }
    for half in 0..2 {
        let b = 8 * half;
        for j in 0..4 {
            t[b + j] = _mm512_shuffle_f32x4::<0x88>(r[b + j], r[b + 4 + j]);
            t[b + 4 + j] = _mm512_shuffle_f32x4::<0xdd>(r[b + j], r[b + 4 + j]);
        }
    }
    for j in 0..8 {
        r[j] = _mm512_shuffle_f32x4::<0x88>(t[j], t[8 + j]);
        r[8 + j] = _mm512_shuffle_f32x4::<0xdd>(t[j], t[8 + j]);
    }
}

/// The low 64-bit halves of each 128-bit lane of `a` and `b`, interleaved.
#[inline]
#[target_feature(enable = "avx512f")]
fn lo(a: __m512, b: __m512) -> __m512 {
    _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)))
}

/// The high 64-bit halves of each 128-bit lane of `a` and `b`, interleaved.
#[inline]
#[target_feature(enable = "avx512f")]
fn hi(a: __m512, b: __m512) -> __m512 {
    _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_swaps_rows_and_columns() {
        if !available() {
            eprintln!("skipping: no AVX-512F");
            return;
        }
        let matrix: Vec<f32> = (0..LANES * LANES).map(|i| i as f32).collect();
        // SAFETY: AVX-512F is available (checked above); every load reads
        // 16 floats of `matrix`.
        let got = unsafe {
            let mut rows: [__m512; LANES] =
                std::array::from_fn(|r| _mm512_loadu_ps(matrix[r * LANES..].as_ptr()));
            transpose(&mut rows);
            let mut out = vec![0f32; LANES * LANES];
            for (r, row) in rows.iter().enumerate() {
                _mm512_storeu_ps(out[r * LANES..].as_mut_ptr(), *row);
            }
            out
        };
        for r in 0..LANES {
            for c in 0..LANES {
                assert_eq!(got[r * LANES + c], matrix[c * LANES + r], "({r}, {c})");
            }
        }
    }
}
