//! An ungrouped convolution as im2col + [`crate::ops::pointwise`]'s kernel, and
//! the textbook definition it is tested against.

use super::im2col::{im2col, Geometry};
use crate::ops::pointwise::kernel::{pointwise, PackedWeights, Pointwise};
use crate::ops::scratch::with_scratch;

/// `output[co] = clamp(bias[co] + sum over (ci, ky, kx) of w[co][ci][ky][kx]
/// * padded input[ci][oy * sh + ky][ox * sw + kx])`. `weights` packs the
/// OIHW filter flattened to `[cout][cin * kh * kw]` with the bias;
/// `output` is `[cout][out_h * out_w]`, every element written.
///
/// Panics if the slices do not match the geometry.
pub fn conv(
    geo: &Geometry,
    weights: &PackedWeights,
    input: &[f32],
    clamp: Option<(f32, f32)>,
    output: &mut [f32],
) {
    assert_eq!(weights.input_channels(), geo.patch_len());
    let len = geo.patch_len() * geo.out_pixels();
    // im2col overwrites every element of the matrix it uses.
    with_scratch(len, |matrix| {
        im2col(geo, input, matrix);
        let product = Pointwise {
            weights,
            pixels: geo.out_pixels(),
            input: matrix,
            clamp,
            residual: None,
        };
        pointwise(&product, output);
    });
}

/// The textbook definition in f64, one multiply-add at a time. `weights` is
/// OIHW, `bias` `[cout]`; returns `[cout][out_h][out_w]`.
pub fn conv_reference(
    geo: &Geometry,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    clamp: Option<(f32, f32)>,
) -> Vec<f64> {
    let (kh, kw) = (geo.kernel_h, geo.kernel_w);
    let cout = bias.len();
    let mut out = vec![0f64; cout * geo.out_pixels()];
    for co in 0..cout {
        for oy in 0..geo.out_h {
            for ox in 0..geo.out_w {
                let mut acc = f64::from(bias[co]);
                for ci in 0..geo.input_channels {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * geo.stride_h + ky) as isize - geo.pad_top as isize;
                            let ix = (ox * geo.stride_w + kx) as isize - geo.pad_left as isize;
                            if iy < 0
                                || ix < 0
                                || iy as usize >= geo.in_h
                                || ix as usize >= geo.in_w
                            {
                                continue;
                            }
                            let x = input[(ci * geo.in_h + iy as usize) * geo.in_w + ix as usize];
                            let w = weights[((co * geo.input_channels + ci) * kh + ky) * kw + kx];
                            acc += f64::from(w) * f64::from(x);
                        }
                    }
                }
                if let Some((lo, hi)) = clamp {
                    acc = acc.max(f64::from(lo)).min(f64::from(hi));
                }
                out[(co * geo.out_h + oy) * geo.out_w + ox] = acc;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::values;

    /// (cout, cin, (kh, kw), (sh, sw), (in_h, in_w), (top, left, bottom,
    /// right)): the stem itself, odd sizes, no padding, padding on every
    /// side, padding wider than the filter, non-square filters and strides,
    /// channel counts off the kernel's blocks.
    type Shape = (
        usize,
        usize,
        (usize, usize),
        (usize, usize),
        (usize, usize),
        (usize, usize, usize, usize),
    );
    const SHAPES: [Shape; 9] = [
        (32, 3, (3, 3), (2, 2), (224, 224), (0, 0, 1, 1)),
        (32, 3, (3, 3), (2, 2), (37, 51), (1, 1, 1, 1)),
        (13, 3, (3, 3), (2, 2), (17, 9), (0, 0, 0, 0)),
        (8, 2, (3, 3), (1, 1), (15, 23), (1, 1, 1, 1)),
        (5, 1, (5, 5), (2, 2), (19, 21), (2, 2, 2, 2)),
        (9, 4, (3, 3), (2, 2), (3, 2), (3, 3, 4, 4)),
        (17, 3, (5, 3), (3, 2), (31, 29), (2, 0, 1, 2)),
        (7, 2, (1, 7), (1, 3), (12, 40), (0, 3, 0, 3)),
        (40, 3, (7, 7), (2, 2), (45, 45), (3, 3, 3, 3)),
    ];

    fn geometry(&(_, cin, kernel, stride, input, pads): &Shape) -> Geometry {
        Geometry::padded(cin, kernel, stride, input, pads)
    }

    #[test]
    fn conv_matches_the_definition() {
        for (i, shape) in SHAPES.iter().enumerate() {
            let geo = geometry(shape);
            let cout = shape.0;
            let seed = 10 * i as u32;
            let input = values(geo.input_len(), seed);
            let weights = values(cout * geo.patch_len(), seed + 1);
            let bias = values(cout, seed + 2);
            let packed =
                PackedWeights::new(&weights, &bias, cout, geo.patch_len(), geo.out_pixels());
            // 1e-5 of the sum of the terms' magnitudes bounds f32 rounding
            // in any order of addition.
            let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
            let magnitude = conv_reference(&geo, &abs(&input), &abs(&weights), &abs(&bias), None);
            for clamp in [None, Some((0.0, 6.0)), Some((-0.25, 0.5))] {
                let expected = conv_reference(&geo, &input, &weights, &bias, clamp);
                let mut got = vec![f32::NAN; cout * geo.out_pixels()];
                conv(&geo, &packed, &input, clamp, &mut got);
                for (j, ((g, e), m)) in got.iter().zip(&expected).zip(&magnitude).enumerate() {
                    assert!(
                        (f64::from(*g) - e).abs() <= 1e-5 * (m + 1.0),
                        "{geo:?} cout {cout} clamp {clamp:?} at {j}: {g} vs {e}"
                    );
                }
            }
        }
    }

    /// The shared buffer is reused across calls of different sizes without
    /// stale values leaking in: a small conv after a big one still matches.
    #[test]
    fn reused_matrix_does_not_leak_between_shapes() {
        for shape in [&SHAPES[0], &SHAPES[5], &SHAPES[1]] {
            let geo = geometry(shape);
            let cout = shape.0;
            let input = values(geo.input_len(), 3);
            let weights = values(cout * geo.patch_len(), 4);
            let bias = values(cout, 5);
            let packed =
                PackedWeights::new(&weights, &bias, cout, geo.patch_len(), geo.out_pixels());
            let expected = conv_reference(&geo, &input, &weights, &bias, None);
            let mut got = vec![f32::NAN; cout * geo.out_pixels()];
            conv(&geo, &packed, &input, None, &mut got);
            for (g, e) in got.iter().zip(&expected) {
                assert!((f64::from(*g) - e).abs() <= 1e-4, "{geo:?}: {g} vs {e}");
            }
        }
    }
}
