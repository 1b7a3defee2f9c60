//! How one channel's input is laid out before the taps run over it.
//!
//! Every kernel path computes the same thing: the channel is copied into
//! zero-padded "phase planes" (one plane for stride 1; for stride 2 four
//! planes, one per (row parity, column parity), so that stride 2 becomes a
//! stride-1 sum over the planes), and then each output position is
//! `bias + sum_t weight[t] * scratch[tap[t] + position]`, where positions
//! run over the output rows *including* `width - out_w` junk columns per row.
//! Treating the plane as one flat vector keeps every SIMD lane busy even on
//! 7x7 planes, and makes every tap a single contiguous, unaligned load.

use super::Geometry;

/// One run of input pixels copied into the scratch buffer for every channel
/// (stride 1): `scratch[dst + m] = plane[src + m]` for `m < len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RowCopy {
    pub src: usize,
    pub dst: usize,
    pub len: usize,
}

/// One run of input pixels split by column parity into two phase planes
/// (stride 2): source element `m` goes to `dst[m % 2] + m / 2`. A run that
/// starts on an odd padded column is emitted as its own one-pixel split, so
/// `dst[0]` always receives the first pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RowSplit {
    pub src: usize,
    pub dst: [usize; 2],
    pub len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Layout {
    /// Columns of each phase plane, which is also the distance between
    /// output rows in flat positions.
    pub width: usize,
    /// Flat output positions: `out_h * width`, junk columns included.
    pub positions: usize,
    /// Scratch offset of tap `ky * kernel + kx` relative to a position.
    pub taps: Vec<usize>,
    /// What to copy from each channel's input plane: `copies` for stride 1,
    /// `splits` for stride 2 (the other is empty). Everything else in the
    /// scratch buffer is padding and stays zero for every channel.
    pub copies: Vec<RowCopy>,
    pub splits: Vec<RowSplit>,
    /// Scratch length such that whole vectors of `lanes` positions starting
    /// below `positions` only read inside the buffer.
    pub scratch_len: usize,
}

impl Layout {
    /// `lanes` is the number of positions the caller computes at once; the
    /// flat positions are rounded up to it.
    pub fn new(geo: &Geometry, lanes: usize) -> Self {
        let (k, s) = (geo.kernel, geo.stride);
        assert!(matches!(s, 1 | 2), "stride {s}");
        // Taps reach (k - 1) / s rows and columns beyond the output position
        // within one phase plane.
        let reach = (k - 1) / s;
        let width = geo.out_w + reach;
        let height = geo.out_h + reach;
        let plane = width * height;
        // Phase plane (ry, rx) holds padded pixel (s * i + ry, s * j + rx)
        // at row i, column j.
        let phase = |ry: usize, rx: usize| (ry * s + rx) * plane;
        let taps: Vec<usize> = (0..k * k)
            .map(|t| {
                let (ky, kx) = (t / k, t % k);
                phase(ky % s, kx % s) + (ky / s) * width + kx / s
            })
            .collect();

        // Padded columns that are on the input and inside the planes.
        let first_column = geo.pad_left;
        let end_column = (geo.pad_left + geo.in_w).min(s * width);
        let mut copies = Vec::new();
        let mut splits = Vec::new();
        for ry in 0..s {
            for i in 0..height {
                let y = s * i + ry;
                let Some(iy) = y.checked_sub(geo.pad_top).filter(|&iy| iy < geo.in_h) else {
                    continue;
                };
                if first_column >= end_column {
                    continue;
                }
                let src = iy * geo.in_w;
                let len = end_column - first_column;
                if s == 1 {
                    let dst = i * width + first_column;
                    copies.push(RowCopy { src, dst, len });
                    continue;
                }
                // Plane position of padded column x (of this row).
                let at = |x: usize| phase(ry, x % 2) + i * width + x / 2;
                let mut x = first_column;
                if x % 2 == 1 {
                    splits.push(RowSplit {
                        src,
                        dst: [at(x); 2],
                        len: 1,
                    });
                    x += 1;
                }
                if x < end_column {
                    splits.push(RowSplit {
                        src: src + x - first_column,
                        dst: [at(x), at(x + 1)],
                        len: end_column - x,
                    });
                }
            }
        }

        let positions = geo.out_h * width;
        let computed = positions.div_ceil(lanes) * lanes;
        let furthest_tap = taps.iter().copied().max().unwrap_or(0);
        Layout {
            width,
            positions,
            taps,
            copies,
            splits,
            scratch_len: (furthest_tap + computed).max(s * s * plane),
        }
    }
}

/// Copies one channel's input pixels into their places in `scratch`; the
/// padding around them is left as it is (zero).
pub(super) fn fill_scratch(layout: &Layout, plane: &[f32], scratch: &mut [f32]) {
    for copy in &layout.copies {
        scratch[copy.dst..copy.dst + copy.len]
            .copy_from_slice(&plane[copy.src..copy.src + copy.len]);
    }
    for split in &layout.splits {
        let src = &plane[split.src..split.src + split.len];
        let (firsts, seconds) = (src.len().div_ceil(2), src.len() / 2);
        // Whole pairs vectorise; an odd-length run's last pixel is copied
        // on its own.
        for (d, pair) in scratch[split.dst[0]..split.dst[0] + firsts]
            .iter_mut()
            .zip(src.chunks(2))
        {
            *d = pair[0];
        }
        for (d, pair) in scratch[split.dst[1]..split.dst[1] + seconds]
            .iter_mut()
            .zip(src.chunks_exact(2))
        {
            *d = pair[1];
        }
    }
}

/// Copies the real columns of each flat output row to the NCHW output plane.
pub(super) fn copy_valid_rows(flat: &[f32], width: usize, out_w: usize, dst: &mut [f32]) {
    for (out_row, flat_row) in dst.chunks_exact_mut(out_w).zip(flat.chunks(width)) {
        out_row.copy_from_slice(&flat_row[..out_w]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scratch buffer holds every padded pixel where the taps expect it.
    #[test]
    fn phase_planes_hold_the_padded_input() {
        for (kernel, stride, in_h, in_w, pad_top, pad_left) in [
            (3, 1, 5, 7, 1, 1),
            (5, 1, 4, 6, 2, 3),
            (3, 2, 9, 12, 0, 0),
            (3, 2, 9, 12, 1, 1),
            (5, 2, 11, 14, 2, 3),
            (5, 2, 6, 6, 5, 5),
        ] {
            let geo = Geometry::padded(
                1,
                (kernel, stride),
                (in_h, in_w),
                (pad_top, pad_left, pad_top, pad_left),
            );
            let (out_h, out_w) = (geo.out_h, geo.out_w);
            let layout = Layout::new(&geo, 16);
            let input: Vec<f32> = (1..=in_h * in_w).map(|v| v as f32).collect();
            let mut scratch = vec![0.0; layout.scratch_len];
            fill_scratch(&layout, &input, &mut scratch);
            let reach = (kernel - 1) / stride;
            let (width, height) = (out_w + reach, out_h + reach);
            for (ry, rx, i, j) in (0..stride * stride).flat_map(|p| {
                (0..height)
                    .flat_map(move |i| (0..width).map(move |j| (p / stride, p % stride, i, j)))
            }) {
                let (y, x) = (stride * i + ry, stride * j + rx);
                let expected = match (y.checked_sub(pad_top), x.checked_sub(pad_left)) {
                    (Some(iy), Some(ix)) if iy < in_h && ix < in_w => input[iy * in_w + ix],
                    _ => 0.0,
                };
                let got = scratch[(ry * stride + rx) * width * height + i * width + j];
                assert_eq!(got, expected, "{geo:?} plane ({ry}, {rx}) at ({i}, {j})");
            }
        }
    }
}
