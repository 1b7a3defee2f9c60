//! A depthwise convolution (one k x k filter per channel) over NCHW planes,
//! written so the compiler keeps eight output columns in registers while it
//! walks all k*k taps: the taps of one output row read contiguous input,
//! because each channel is first laid out padded and split into `stride`
//! column phases (even and odd columns for stride 2).

/// Output columns computed together; their accumulators stay in registers
/// (two SSE or one AVX register).
const LANES: usize = 8;

/// The shape of one depthwise convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    pub channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl Geometry {
    /// Whether [`depthwise`] has a specialised kernel for this shape.
    pub fn is_supported(&self) -> bool {
        matches!(self.kernel, 3 | 5)
            && matches!(self.stride, 1 | 2)
            && self.out_h > 0
            && self.out_w > 0
            && self.channels > 0
    }

    pub fn input_len(&self) -> usize {
        self.channels * self.in_h * self.in_w
    }

    pub fn output_len(&self) -> usize {
        self.channels * self.out_h * self.out_w
    }

    /// Padded input rows one channel's output needs.
    fn padded_rows(&self) -> usize {
        (self.out_h - 1) * self.stride + self.kernel
    }

    /// Length of one phase row: every tap offset plus whole blocks of lanes.
    fn phase_len(&self) -> usize {
        self.out_w.div_ceil(LANES) * LANES + (self.kernel - 1) / self.stride
    }
}

/// `output[c] = clamp(bias[c] + conv(input[c], weights[c]))` for every
/// channel, with the clamp (ReLU6 and the like) applied when given.
/// `weights` is `[channels, kernel, kernel]`. Picks the widest vector
/// instructions the CPU has; the results are identical on every path (same
/// operations in the same order, no fused multiply-add).
///
/// Panics if the slices do not match the geometry or the geometry is not
/// supported (callers check [`Geometry::is_supported`] when building the op).
pub fn depthwise(
    geo: &Geometry,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    clamp: Option<(f32, f32)>,
    output: &mut [f32],
) {
    assert!(geo.is_supported(), "unsupported depthwise geometry {geo:?}");
    assert_eq!(input.len(), geo.input_len());
    assert_eq!(output.len(), geo.output_len());
    assert_eq!(weights.len(), geo.channels * geo.kernel * geo.kernel);
    assert_eq!(bias.len(), geo.channels);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), which is all
        // `depthwise_avx2` is compiled to assume; its body is safe Rust.
        unsafe { depthwise_avx2(geo, input, weights, bias, clamp, output) };
        return;
    }
    depthwise_portable(geo, input, weights, bias, clamp, output);
}

/// The same loops compiled for AVX2, so the eight lanes fit one register.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn depthwise_avx2(
    geo: &Geometry,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    clamp: Option<(f32, f32)>,
    output: &mut [f32],
) {
    dispatch(geo, input, weights, bias, clamp, output);
}

/// The baseline build (SSE2 on x86-64, NEON on arm64); also what tests
/// compare the vectorised path against.
pub fn depthwise_portable(
    geo: &Geometry,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    clamp: Option<(f32, f32)>,
    output: &mut [f32],
) {
    dispatch(geo, input, weights, bias, clamp, output);
}

#[inline(always)]
fn dispatch(
    geo: &Geometry,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    clamp: Option<(f32, f32)>,
    output: &mut [f32],
) {
    match (geo.kernel, geo.stride) {
        (3, 1) => channels::<3, 1>(geo, input, weights, bias, clamp, output),
        (3, 2) => channels::<3, 2>(geo, input, weights, bias, clamp, output),
        (5, 1) => channels::<5, 1>(geo, input, weights, bias, clamp, output),
        (5, 2) => channels::<5, 2>(geo, input, weights, bias, clamp, output),
        _ => unreachable!("checked by is_supported"),
    }
}

#[inline(always)]
fn channels<const K: usize, const S: usize>(
    geo: &Geometry,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    clamp: Option<(f32, f32)>,
    output: &mut [f32],
) {
    let rows = geo.padded_rows();
    let len = geo.phase_len();
    let blocks = geo.out_w.div_ceil(LANES);
    let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    // Reused for every channel: [S phases][rows][len], zero where padded.
    let mut phases = vec![0f32; S * rows * len];
    let mut row_out = vec![0f32; blocks * LANES];
    let plane_in = geo.in_h * geo.in_w;
    let plane_out = geo.out_h * geo.out_w;
    for c in 0..geo.channels {
        let src = &input[c * plane_in..(c + 1) * plane_in];
        fill_phases::<S>(geo, src, rows, len, &mut phases);
        let w = &weights[c * K * K..(c + 1) * K * K];
        let b = bias[c];
        let dst = &mut output[c * plane_out..(c + 1) * plane_out];
        for oy in 0..geo.out_h {
            for block in 0..blocks {
                let x0 = block * LANES;
                let mut acc = [b; LANES];
                for ky in 0..K {
                    let y = oy * S + ky;
                    for kx in 0..K {
                        let start = ((kx % S) * rows + y) * len + kx / S + x0;
                        let taps: &[f32; LANES] = phases[start..start + LANES]
                            .try_into()
                            .expect("phase rows hold whole blocks");
                        let wk = w[ky * K + kx];
                        for lane in 0..LANES {
                            acc[lane] += wk * taps[lane];
                        }
                    }
                }
                row_out[x0..x0 + LANES].copy_from_slice(&acc);
            }
            let out_row = &mut dst[oy * geo.out_w..(oy + 1) * geo.out_w];
            for (o, v) in out_row.iter_mut().zip(&row_out) {
                *o = v.max(lo).min(hi);
            }
        }
    }
}

/// Lays one channel out padded and split into column phases:
/// `phases[(p * rows + y) * len + j]` is padded pixel (y, j * S + p).
#[inline(always)]
fn fill_phases<const S: usize>(
    geo: &Geometry,
    src: &[f32],
    rows: usize,
    len: usize,
    phases: &mut [f32],
) {
    for p in 0..S {
        for y in 0..rows {
            let line = &mut phases[(p * rows + y) * len..(p * rows + y + 1) * len];
            let Some(iy) = (y as isize - geo.pad_top as isize)
                .try_into()
                .ok()
                .filter(|iy: &usize| *iy < geo.in_h)
            else {
                line.fill(0.0);
                continue;
            };
            let src_row = &src[iy * geo.in_w..(iy + 1) * geo.in_w];
            for (j, v) in line.iter_mut().enumerate() {
                let x = (j * S + p) as isize - geo.pad_left as isize;
                *v = if x >= 0 && (x as usize) < geo.in_w {
                    src_row[x as usize]
                } else {
                    0.0
                };
            }
        }
    }
}

/// The textbook definition, one multiply-add at a time: what the fast path
/// is tested against.
pub fn depthwise_reference(
    geo: &Geometry,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    clamp: Option<(f32, f32)>,
) -> Vec<f32> {
    let k = geo.kernel;
    let mut out = vec![0f32; geo.output_len()];
    let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    for c in 0..geo.channels {
        for oy in 0..geo.out_h {
            for ox in 0..geo.out_w {
                let mut acc = f64::from(bias[c]);
                for ky in 0..k {
                    for kx in 0..k {
                        let iy = (oy * geo.stride + ky) as isize - geo.pad_top as isize;
                        let ix = (ox * geo.stride + kx) as isize - geo.pad_left as isize;
                        if iy < 0 || ix < 0 || iy as usize >= geo.in_h || ix as usize >= geo.in_w {
                            continue;
                        }
                        let v = input[(c * geo.in_h + iy as usize) * geo.in_w + ix as usize];
                        acc += f64::from(weights[(c * k + ky) * k + kx]) * f64::from(v);
                    }
                }
                out[(c * geo.out_h + oy) * geo.out_w + ox] = (acc as f32).max(lo).min(hi);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1) without a random-number crate.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn geometries() -> Vec<Geometry> {
        let mut out = Vec::new();
        // The model's shapes (SAME padding) plus odd sizes and asymmetric pads.
        for (kernel, stride, in_hw, pad) in [
            (3, 1, 112, 1),
            (3, 2, 112, 0),
            (5, 2, 56, 1),
            (5, 1, 14, 2),
            (3, 1, 7, 1),
            (5, 1, 7, 2),
            (3, 2, 9, 1),
            (5, 2, 11, 2),
            (3, 1, 1, 1),
        ] {
            let out_hw = (in_hw + 2 * pad - kernel) / stride + 1;
            out.push(Geometry {
                channels: 3,
                kernel,
                stride,
                in_h: in_hw,
                in_w: in_hw + 3,
                pad_top: pad,
                pad_left: pad,
                out_h: out_hw,
                out_w: (in_hw + 3 + 2 * pad - kernel) / stride + 1,
            });
        }
        out
    }

    fn check(fast: fn(&Geometry, &[f32], &[f32], &[f32], Option<(f32, f32)>, &mut [f32])) {
        for (i, geo) in geometries().into_iter().enumerate() {
            let input = values(geo.input_len(), i as u32);
            let weights = values(geo.channels * geo.kernel * geo.kernel, 100 + i as u32);
            let bias = values(geo.channels, 200 + i as u32);
            for clamp in [None, Some((0.0, 0.5))] {
                let expected = depthwise_reference(&geo, &input, &weights, &bias, clamp);
                let mut got = vec![f32::NAN; geo.output_len()];
                fast(&geo, &input, &weights, &bias, clamp, &mut got);
                for (j, (g, e)) in got.iter().zip(&expected).enumerate() {
                    assert!(
                        (g - e).abs() <= 1e-5,
                        "{geo:?} clamp {clamp:?} at {j}: {g} vs {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn portable_path_matches_the_definition() {
        check(depthwise_portable);
    }

    #[test]
    fn dispatched_path_matches_the_definition() {
        check(depthwise);
    }

    #[test]
    fn vector_and_portable_paths_agree_exactly() {
        for geo in geometries() {
            let input = values(geo.input_len(), 7);
            let weights = values(geo.channels * geo.kernel * geo.kernel, 8);
            let bias = values(geo.channels, 9);
            let mut a = vec![0.0; geo.output_len()];
            let mut b = vec![0.0; geo.output_len()];
            depthwise(&geo, &input, &weights, &bias, Some((0.0, 6.0)), &mut a);
            depthwise_portable(&geo, &input, &weights, &bias, Some((0.0, 6.0)), &mut b);
            assert_eq!(a, b, "{geo:?}");
        }
    }
}
