//! A depthwise convolution (one k x k filter per channel) over NCHW planes.
//!
//! Two layouts: on large planes each channel is copied into zero-padded
//! phase planes and its outputs are computed as flat vectors of positions
//! (see [`layout`]); on small ones sixteen channels share each register
//! ([`channel_lanes`]). The layout, vector width and instructions depend on
//! the shape and the CPU ([`Path::best`]), chosen at run time.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod channel_lanes;
mod layout;
mod portable;
#[cfg(target_arch = "x86_64")]
pub mod row_stream;

use crate::ops::lanes::Layout;

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

    /// The geometry with explicit padding on every side (top, left,
    /// bottom, right): how the tests and the kernels bench write shapes.
    pub fn padded(
        channels: usize,
        (kernel, stride): (usize, usize),
        (in_h, in_w): (usize, usize),
        (pad_top, pad_left, pad_bottom, pad_right): (usize, usize, usize, usize),
    ) -> Geometry {
        Geometry {
            channels,
            kernel,
            stride,
            in_h,
            in_w,
            pad_top,
            pad_left,
            out_h: (in_h + pad_top + pad_bottom - kernel) / stride + 1,
            out_w: (in_w + pad_left + pad_right - kernel) / stride + 1,
        }
    }

    pub fn output_len(&self) -> usize {
        self.channels * self.out_h * self.out_w
    }
}

/// The slices and constants every path works from.
struct Params<'a> {
    input: &'a [f32],
    weights: &'a [f32],
    /// `weights` in the lanes layout, where the caller keeps them so (read
    /// by the channels-in-lanes path, x86-64's only).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    tap_lanes: Option<&'a [f32]>,
    bias: &'a [f32],
    /// Clamp bounds; infinite when there is no clamp.
    lo: f32,
    hi: f32,
}

impl<'a> Params<'a> {
    /// The slices and the clamp's bounds (infinite without one), after
    /// checking that the geometry is supported and the input (in layout
    /// `from`), filters, bias and output (`output_len` floats in `to`)
    /// fit it: what the kernels' unchecked loads and stores rely on.
    fn checked(
        geo: &Geometry,
        input: &'a [f32],
        (weights, bias, clamp): (&'a [f32], &'a [f32], Option<(f32, f32)>),
        (from, to): (Layout, Layout),
        output_len: usize,
    ) -> Params<'a> {
        assert!(geo.is_supported(), "unsupported depthwise geometry {geo:?}");
        assert_eq!(input.len(), from.len(geo.channels, geo.in_h * geo.in_w));
        assert_eq!(output_len, to.len(geo.channels, geo.out_h * geo.out_w));
        assert_eq!(weights.len(), geo.channels * geo.kernel * geo.kernel);
        assert_eq!(bias.len(), geo.channels);
        let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        Params {
            input,
            weights,
            tap_lanes: None,
            bias,
            lo,
            hi,
        }
    }
}

/// The instruction sets a kernel is compiled for, and its layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// AVX-512F, 16 channels in the lanes of a register (x86-64 only).
    Avx512ChannelLanes,
    /// AVX-512F, 16 flat positions of one channel per register (x86-64 only).
    Avx512,
    /// AVX2 with FMA, 8 lanes (x86-64 only).
    Avx2Fma,
    /// No explicit SIMD; separate multiply and add.
    Portable,
}

impl Path {
    pub const ALL: [Path; 4] = [
        Path::Avx512ChannelLanes,
        Path::Avx512,
        Path::Avx2Fma,
        Path::Portable,
    ];

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Path::Avx512ChannelLanes => channel_lanes::available(),
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => avx512::available(),
            #[cfg(target_arch = "x86_64")]
            Path::Avx2Fma => avx2::available(),
            #[cfg(not(target_arch = "x86_64"))]
            Path::Avx512ChannelLanes | Path::Avx512 | Path::Avx2Fma => false,
            Path::Portable => true,
        }
    }

    /// The fastest path this CPU can run on this shape.
    pub fn best(geo: &Geometry) -> Path {
        *Path::ALL
            .iter()
            .filter(|&&path| path != Path::Avx512ChannelLanes || channel_lanes_pay(geo))
            .find(|path| path.is_available())
            .expect("the portable path is always available")
    }
}

/// Whether channels in lanes beat flat planes on this shape. The kernels
/// bench (`cargo bench -p imagefleet-worker --bench kernels`) has them
/// 1.2-2.9x faster on every output plane of 28x28 and less, even with
/// 56x56 inputs (stride 2), and even or slower on 56x56 and 112x112 outputs,
/// whose padded copies outgrow the L2 cache and whose 3x3 filters do too
/// little work per pixel to pay for two transposes.
fn channel_lanes_pay(geo: &Geometry) -> bool {
    geo.out_h * geo.out_w <= 28 * 28
}

/// `output[c] = clamp(bias[c] + conv(input[c], weights[c]))` for every
/// channel, with the clamp (ReLU6 and the like) applied when given.
/// `weights` is `[channels, kernel, kernel]`. Runs on the fastest [`Path`]
/// this CPU has; paths with FMA round differently from the portable one
/// (within a few ulps of the sum).
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
    // Detection is cached by std, so asking on every call is cheap.
    depthwise_on(Path::best(geo), geo, input, weights, bias, clamp, output);
}

/// [`depthwise`] without explicit SIMD: the baseline build (SSE2 on x86-64,
/// NEON on arm64).
pub fn depthwise_portable(
    geo: &Geometry,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    clamp: Option<(f32, f32)>,
    output: &mut [f32],
) {
    depthwise_on(Path::Portable, geo, input, weights, bias, clamp, output);
}

/// [`depthwise`] on the given path. Panics if the CPU cannot run it.
pub fn depthwise_on(
    path: Path,
    geo: &Geometry,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    clamp: Option<(f32, f32)>,
    output: &mut [f32],
) {
    let layouts = (Layout::Planes, Layout::Planes);
    let params = Params::checked(geo, input, (weights, bias, clamp), layouts, output.len());
    match path {
        #[cfg(target_arch = "x86_64")]
        Path::Avx512ChannelLanes => channel_lanes::depthwise(geo, &params, output),
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => avx512::depthwise(geo, &params, output),
        #[cfg(target_arch = "x86_64")]
        Path::Avx2Fma => avx2::depthwise(geo, &params, output),
        #[cfg(not(target_arch = "x86_64"))]
        Path::Avx512ChannelLanes | Path::Avx512 | Path::Avx2Fma => {
            panic!("{path:?} needs x86-64")
        }
        Path::Portable => portable::depthwise(geo, &params, output),
    }
}

/// [`depthwise`] on the AVX-512 channels-in-lanes path, reading `input` in
/// layout `from` and writing `output` in layout `to`: the lanes layout
/// skips that path's transposes. Panics unless the CPU has AVX-512F and
/// the slices match the geometry in those layouts.
#[cfg(target_arch = "x86_64")]
pub fn depthwise_between(
    geo: &Geometry,
    input: &[f32],
    filters: &row_stream::Filters,
    (from, to): (Layout, Layout),
    output: &mut [f32],
) {
    let weights = (filters.weights, filters.bias, filters.clamp);
    let params = Params {
        tap_lanes: Some(filters.tap_lanes),
        ..Params::checked(geo, input, weights, (from, to), output.len())
    };
    assert_eq!(
        filters.tap_lanes.len(),
        Layout::Lanes.len(geo.channels, geo.kernel * geo.kernel)
    );
    channel_lanes::depthwise_between(geo, &params, (from, to), output);
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
    use crate::test_support::values;

    fn geometries() -> Vec<Geometry> {
        let mut out = Vec::new();
        // Every depthwise shape of EfficientNet-Lite0 (fewer channels), with
        // its SAME padding: stride-2 layers pad (0, 1) or (1, 2).
        for (kernel, stride, hw, before, after) in [
            (3, 1, 112, 1, 1),
            (3, 2, 112, 0, 1),
            (3, 1, 56, 1, 1),
            (5, 2, 56, 1, 2),
            (5, 1, 28, 2, 2),
            (3, 2, 28, 0, 1),
            (3, 1, 14, 1, 1),
            (5, 1, 14, 2, 2),
            (5, 2, 14, 1, 2),
            (5, 1, 7, 2, 2),
            (3, 1, 7, 1, 1),
        ] {
            out.push(Geometry::padded(
                5,
                (kernel, stride),
                (hw, hw),
                (before, before, after, after),
            ));
        }
        // Odd and tiny sizes, asymmetric padding, padding wider than the
        // filter, and VALID crops that leave input columns unused.
        for (kernel, stride, in_h, in_w, pads) in [
            (3, 1, 9, 12, (1, 1, 1, 1)),
            (3, 2, 9, 12, (1, 1, 1, 1)),
            (5, 2, 11, 14, (2, 2, 2, 2)),
            (5, 1, 11, 14, (0, 3, 4, 1)),
            (3, 2, 10, 13, (2, 0, 0, 2)),
            (3, 1, 1, 4, (1, 1, 1, 1)),
            (5, 2, 1, 1, (2, 2, 2, 2)),
            (3, 1, 4, 5, (4, 3, 3, 4)),
            (5, 2, 17, 33, (0, 0, 0, 0)),
            (3, 2, 8, 8, (0, 0, 0, 0)),
            (3, 1, 5, 40, (0, 0, 0, 0)),
            (5, 1, 3, 3, (2, 2, 2, 2)),
        ] {
            out.push(Geometry::padded(3, (kernel, stride), (in_h, in_w), pads));
        }
        // More channels than one register holds, with a partial last block
        // (the channel-lanes path works sixteen at a time).
        out.push(Geometry::padded(37, (5, 1), (14, 14), (2, 2, 2, 2)));
        out.push(Geometry::padded(33, (3, 2), (13, 9), (0, 1, 1, 0)));
        out
    }

    fn check_path(path: Path) {
        if !path.is_available() {
            eprintln!("skipping {path:?}: not supported by this CPU");
            return;
        }
        for (i, geo) in geometries().into_iter().enumerate() {
            let input = values(geo.input_len(), i as u32);
            let weights = values(geo.channels * geo.kernel * geo.kernel, 100 + i as u32);
            let bias = values(geo.channels, 200 + i as u32);
            for clamp in [None, Some((0.0, 0.5))] {
                let expected = depthwise_reference(&geo, &input, &weights, &bias, clamp);
                let mut got = vec![f32::NAN; geo.output_len()];
                depthwise_on(path, &geo, &input, &weights, &bias, clamp, &mut got);
                for (j, (g, e)) in got.iter().zip(&expected).enumerate() {
                    assert!(
                        (g - e).abs() <= 1e-5,
                        "{path:?} {geo:?} clamp {clamp:?} at {j}: {g} vs {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn portable_path_matches_the_definition() {
        check_path(Path::Portable);
    }

    #[test]
    fn avx2_path_matches_the_definition() {
        check_path(Path::Avx2Fma);
    }

    #[test]
    fn avx512_path_matches_the_definition() {
        check_path(Path::Avx512);
    }

    #[test]
    fn avx512_channel_lanes_path_matches_the_definition() {
        check_path(Path::Avx512ChannelLanes);
    }

    #[test]
    fn dispatched_path_matches_the_definition() {
        for (i, geo) in geometries().into_iter().enumerate() {
            let input = values(geo.input_len(), i as u32);
            let weights = values(geo.channels * geo.kernel * geo.kernel, 1 + i as u32);
            let bias = values(geo.channels, 2 + i as u32);
            let expected = depthwise_reference(&geo, &input, &weights, &bias, Some((0.0, 6.0)));
            let mut got = vec![f32::NAN; geo.output_len()];
            depthwise(&geo, &input, &weights, &bias, Some((0.0, 6.0)), &mut got);
            for (g, e) in got.iter().zip(&expected) {
                assert!((g - e).abs() <= 1e-5, "{geo:?}: {g} vs {e}");
            }
        }
    }

    /// The vector paths use FMA, so they may round differently from the
    /// portable path, but only in the last bits.
    #[test]
    fn vector_and_portable_paths_agree() {
        for geo in geometries() {
            let input = values(geo.input_len(), 7);
            let weights = values(geo.channels * geo.kernel * geo.kernel, 8);
            let bias = values(geo.channels, 9);
            let mut portable = vec![0.0; geo.output_len()];
            depthwise_portable(
                &geo,
                &input,
                &weights,
                &bias,
                Some((0.0, 6.0)),
                &mut portable,
            );
            for path in Path::ALL.into_iter().filter(|path| path.is_available()) {
                let mut got = vec![f32::NAN; geo.output_len()];
                depthwise_on(
                    path,
                    &geo,
                    &input,
                    &weights,
                    &bias,
                    Some((0.0, 6.0)),
                    &mut got,
                );
                for (g, p) in got.iter().zip(&portable) {
                    assert!((g - p).abs() <= 1e-5, "{path:?} {geo:?}: {g} vs {p}");
                }
            }
        }
    }

    #[test]
    fn the_best_path_is_available() {
        for geo in geometries() {
            assert!(Path::best(&geo).is_available());
        }
    }
}
