//! The geometry of an ungrouped convolution and its im2col matrix: one row
//! per (input channel, filter row, filter column), one column per output
//! pixel, zeros where the filter hangs over the padding.

/// The shape of one ungrouped 2D convolution over a CHW input (batch 1).
/// Padding after the input is implied by the output size: positions past
/// the input read zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    pub input_channels: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl Geometry {
    /// The geometry of a convolution with explicit padding on every side
    /// (top, left, bottom, right); the tests' way of writing shapes.
    #[cfg(test)]
    pub fn padded(
        input_channels: usize,
        (kernel_h, kernel_w): (usize, usize),
        (stride_h, stride_w): (usize, usize),
        (in_h, in_w): (usize, usize),
        (top, left, bottom, right): (usize, usize, usize, usize),
    ) -> Geometry {
        Geometry {
            input_channels,
            kernel_h,
            kernel_w,
            stride_h,
            stride_w,
            in_h,
            in_w,
            pad_top: top,
            pad_left: left,
            out_h: (in_h + top + bottom - kernel_h) / stride_h + 1,
            out_w: (in_w + left + right - kernel_w) / stride_w + 1,
        }
    }

    /// Rows of the im2col matrix: the input channels of the equivalent 1x1
    /// convolution.
    pub fn patch_len(&self) -> usize {
        self.input_channels * self.kernel_h * self.kernel_w
    }

    pub fn input_len(&self) -> usize {
        self.input_channels * self.in_h * self.in_w
    }

    pub fn out_pixels(&self) -> usize {
        self.out_h * self.out_w
    }

    pub fn is_valid(&self) -> bool {
        self.input_channels > 0
            && self.kernel_h > 0
            && self.kernel_w > 0
            && self.stride_h > 0
            && self.stride_w > 0
            && self.out_h > 0
            && self.out_w > 0
    }
}

/// Fills `matrix` (`[patch_len][out_pixels]`, every element written) from
/// `input` (`[input_channels][in_h][in_w]`). Row `(ci * kernel_h + ky) *
/// kernel_w + kx` matches the OIHW weight layout flattened to
/// `[cout][patch_len]`.
pub fn im2col(geo: &Geometry, input: &[f32], matrix: &mut [f32]) {
    assert_eq!(input.len(), geo.input_len(), "input is not [cin, h, w]");
    assert_eq!(
        matrix.len(),
        geo.patch_len() * geo.out_pixels(),
        "matrix is not [cin * kh * kw, out_h * out_w]"
    );
    let plane = geo.in_h * geo.in_w;
    let mut rows = matrix.chunks_exact_mut(geo.out_pixels());
    for ci in 0..geo.input_channels {
        let channel = &input[ci * plane..][..plane];
        for ky in 0..geo.kernel_h {
            for kx in 0..geo.kernel_w {
                let row = rows.next().expect("one row per filter tap");
                let columns = tap_columns(geo, kx);
                for (oy, line) in row.chunks_exact_mut(geo.out_w).enumerate() {
                    let iy = (oy * geo.stride_h + ky).checked_sub(geo.pad_top);
                    match iy.filter(|&iy| iy < geo.in_h) {
                        Some(iy) => {
                            let source = &channel[iy * geo.in_w..][..geo.in_w];
                            fill_line(source, geo.stride_w, &columns, line);
                        }
                        None => line.fill(0.0),
                    }
                }
            }
        }
    }
}

/// Which output columns of filter column `kx` read the input (the rest read
/// padding), and the input column the first of them reads.
#[derive(Debug, Clone, Copy)]
struct TapColumns {
    first: usize,
    end: usize,
    source_start: usize,
}

fn tap_columns(geo: &Geometry, kx: usize) -> TapColumns {
    let s = geo.stride_w;
    // Output column ox reads input column ox * s + kx - pad_left.
    let first = geo.pad_left.saturating_sub(kx).div_ceil(s).min(geo.out_w);
    let end = (geo.in_w + geo.pad_left)
        .saturating_sub(kx)
        .div_ceil(s)
        .clamp(first, geo.out_w);
    TapColumns {
        first,
        end,
        source_start: (first * s + kx).saturating_sub(geo.pad_left),
    }
}

/// One output row of one matrix row: `line[ox] = source[ox * stride +
/// kx - pad_left]` inside the input, zero outside.
fn fill_line(source: &[f32], stride: usize, columns: &TapColumns, line: &mut [f32]) {
    let TapColumns {
        first,
        end,
        source_start,
    } = *columns;
    line[..first].fill(0.0);
    line[end..].fill(0.0);
    let inside = &mut line[first..end];
    if inside.is_empty() {
        // The filter column lies wholly in the padding for this row.
        return;
    }
    let source = &source[source_start..];
    match stride {
        1 => inside.copy_from_slice(&source[..inside.len()]),
        // The stem's case: whole pairs let the compiler vectorise the
        // deinterleave; the last pixel may have no partner inside the row.
        2 => {
            let pairs = (source.len() / 2).min(inside.len());
            let (paired, last) = inside.split_at_mut(pairs);
            for (d, pair) in paired.iter_mut().zip(source.chunks_exact(2)) {
                *d = pair[0];
            }
            if let Some(d) = last.first_mut() {
                *d = source[2 * pairs];
            }
        }
        _ => {
            for (d, s) in inside.iter_mut().zip(source.iter().step_by(stride)) {
                *d = *s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every element is the padded input pixel its row and column name.
    #[test]
    fn matrix_holds_the_padded_patches() {
        for (cin, (kh, kw), (sh, sw), (in_h, in_w), (top, left, bottom, right)) in [
            (3, (3, 3), (2, 2), (224, 224), (0, 0, 1, 1)),
            (3, (3, 3), (2, 2), (9, 12), (1, 1, 1, 1)),
            (2, (3, 3), (1, 1), (5, 7), (1, 1, 1, 1)),
            (1, (5, 3), (3, 2), (11, 10), (2, 1, 2, 0)),
            (2, (3, 3), (2, 2), (8, 9), (0, 0, 0, 0)),
            (1, (3, 3), (2, 2), (2, 2), (3, 3, 3, 3)),
            (2, (2, 4), (1, 3), (6, 13), (0, 2, 1, 1)),
        ] {
            let geo = Geometry::padded(
                cin,
                (kh, kw),
                (sh, sw),
                (in_h, in_w),
                (top, left, bottom, right),
            );
            let input: Vec<f32> = (1..=geo.input_len()).map(|v| v as f32).collect();
            let mut matrix = vec![f32::NAN; geo.patch_len() * geo.out_pixels()];
            im2col(&geo, &input, &mut matrix);
            for (i, got) in matrix.iter().enumerate() {
                let (row, pixel) = (i / geo.out_pixels(), i % geo.out_pixels());
                let (ci, ky, kx) = (row / (kh * kw), row / kw % kh, row % kw);
                let (oy, ox) = (pixel / geo.out_w, pixel % geo.out_w);
                let iy = (oy * sh + ky).checked_sub(top).filter(|&y| y < in_h);
                let ix = (ox * sw + kx).checked_sub(left).filter(|&x| x < in_w);
                let want = match (iy, ix) {
                    (Some(iy), Some(ix)) => input[(ci * in_h + iy) * in_w + ix],
                    _ => 0.0,
                };
                assert_eq!(*got, want, "{geo:?} row {row} pixel {pixel}");
            }
        }
    }
}
