//! The channels-in-lanes depthwise convolution ([`super::channel_lanes`])
//! over input rows that another kernel produces as they are needed, so the
//! depthwise input never exists whole.
//!
//! The channels-in-lanes layout wins on small planes only when its input
//! must first be transposed out of NCHW planes: on 112x112 and 56x56 the
//! padded copy outgrows the L2 cache. A producer that writes the layout
//! directly (the 1x1 expansion before the convolution, or the stem) has
//! nothing to transpose, and a ring of `K` padded rows of every channel
//! (6 KB to 200 KB here) stays in L1 or L2 however large the plane. Each
//! output row is then computed for every block of sixteen channels and
//! transposed straight into its place in the NCHW output.

use std::arch::x86_64::*;
use std::cell::RefCell;

/// Writes rows of pixels with channels in the lanes into NCHW planes.
pub(crate) use super::channel_lanes::transpose_out;
use super::channel_lanes::{first_lanes, output_row, tap_registers, Clamp, LANES};
use super::Geometry;
use crate::ops::kernel_probes::{self, Kind, Probe};

/// Produces the input of a depthwise convolution one row at a time, in
/// the channels-in-lanes layout.
pub trait LaneRows {
    /// Writes input row `y` (`0..in_h` of the convolution's geometry) of
    /// every channel into `row`: pixel `x` of channels `16 b..16 b + 16` goes
    /// to `row[b * stride + offset + x]`, for every `x` in `0..columns`, and
    /// nothing else may be written. Lanes past the last channel may hold
    /// anything: their filters are zero and they are never stored.
    fn fill(&self, y: usize, columns: usize, row: &mut [__m512], stride: usize, offset: usize);
}

pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Takes the depthwise convolution's output one row at a time.
pub trait RowSink {
    /// Output row `y`: pixel `x` of channels `16 b..16 b + 16` is
    /// `row[b * width + x]`, `width` the output width. Lanes past the last
    /// channel hold junk.
    fn take(&mut self, y: usize, row: &[__m512], width: usize);
}

/// The output as NCHW planes (`[channels][out_h * out_w]`).
struct Planes<'a> {
    output: &'a mut [f32],
    channels: usize,
    plane: usize,
}

impl RowSink for Planes<'_> {
    fn take(&mut self, y: usize, row: &[__m512], width: usize) {
        for (b, pixels) in row.chunks_exact(width).enumerate() {
            let channels = block_channels(self.channels, b);
            // SAFETY: rows come only from `rows`, which runs once
            // `depthwise_rows_into` has asserted AVX-512F.
            unsafe {
                transpose_out::<false>(
                    pixels,
                    channels,
                    &mut self.output[b * LANES * self.plane..][..channels * self.plane],
                    (self.plane, y * width),
                )
            };
        }
    }
}

/// `output[c] = clamp(bias[c] + conv(input[c], weights[c]))` for every
/// channel (as [`super::depthwise`]), the input rows coming from `source`.
/// Sums in the same order as the channels-in-lanes path.
///
/// Panics if the CPU lacks AVX-512F, or the slices or the geometry do not
/// fit.
pub fn depthwise_rows(
    geo: &Geometry,
    source: &impl LaneRows,
    filters: &Filters,
    output: &mut [f32],
) {
    assert_eq!(output.len(), geo.output_len());
    let mut planes = Planes {
        output,
        channels: geo.channels,
        plane: geo.out_h * geo.out_w,
    };
    depthwise_rows_into(geo, source, filters, &mut planes);
}

/// [`depthwise_rows`], each output row handed to `sink` (in order, every
/// row once) instead of written into planes.
pub fn depthwise_rows_into(
    geo: &Geometry,
    source: &impl LaneRows,
    filters: &Filters,
    sink: &mut impl RowSink,
) {
    check(geo, filters);
    // SAFETY: the CPU supports AVX-512F (`check`), the only feature these
    // functions are compiled for.
    unsafe {
        match (geo.kernel, geo.stride) {
            (3, 1) => rows::<3, 1, 9>(geo, source, filters, sink),
            (3, 2) => rows::<3, 2, 9>(geo, source, filters, sink),
            (5, 1) => rows::<5, 1, 25>(geo, source, filters, sink),
            (5, 2) => rows::<5, 2, 25>(geo, source, filters, sink),
            _ => unreachable!("checked by is_supported"),
        }
    }
}

/// Two depthwise convolutions in a row, the first's output rows becoming
/// the second's input rows one at a time: `link` takes each output row of
/// the first (into a buffer of one row) and `then` reads it back as its
/// input row 0, producing that input row of the second (a 1x1 expansion,
/// say), whose output rows go to `sink`. Nothing between the two is ever
/// whole. Every value is the one of the two run apart.
///
/// Panics if the CPU lacks AVX-512F, the slices or a geometry do not fit,
/// or the second does not read exactly the first's rows.
pub fn depthwise_rows_chained(
    (first, source, first_filters): (&Geometry, &impl LaneRows, &Filters),
    link: &mut impl RowSink,
    (second, then, second_filters): (&Geometry, &impl LaneRows, &Filters),
    sink: &mut impl RowSink,
) {
    check(first, first_filters);
    assert_eq!(
        second.in_h, first.out_h,
        "the second convolution reads other rows"
    );
    let first = (first, source, first_filters);
    // SAFETY: as in `depthwise_rows_into`.
    unsafe {
        match (first.0.kernel, first.0.stride) {
            (3, 1) => chained::<3, 1, 9>(first, link, (second, then, second_filters), sink),
            (3, 2) => chained::<3, 2, 9>(first, link, (second, then, second_filters), sink),
            (5, 1) => chained::<5, 1, 25>(first, link, (second, then, second_filters), sink),
            (5, 2) => chained::<5, 2, 25>(first, link, (second, then, second_filters), sink),
            _ => unreachable!("checked by is_supported"),
        }
    }
}

/// Panics unless the CPU has AVX-512F and `filters` fit `geo`, which the
/// kernels' unchecked loads rely on.
fn check(geo: &Geometry, filters: &Filters) {
    assert!(available(), "AVX-512F path on a CPU without it");
    assert!(geo.is_supported(), "unsupported depthwise geometry {geo:?}");
    let taps = geo.kernel * geo.kernel;
    assert_eq!(filters.weights.len(), geo.channels * taps);
    assert_eq!(
        filters.tap_lanes.len(),
        geo.channels.div_ceil(LANES) * taps * LANES
    );
    assert_eq!(filters.bias.len(), geo.channels);
}

#[target_feature(enable = "avx512f")]
fn chained<const K: usize, const S: usize, const TAPS: usize>(
    (first, source, first_filters): (&Geometry, &impl LaneRows, &Filters),
    link: &mut impl RowSink,
    (second, then, second_filters): (&Geometry, &impl LaneRows, &Filters),
    sink: &mut impl RowSink,
) {
    let chained = Chained {
        first: RefCell::new((Stream::<K, S, TAPS>::new(first, first_filters), link)),
        source,
        then,
    };
    depthwise_rows_into(second, &chained, second_filters, sink);
}

/// The second convolution's input rows of [`depthwise_rows_chained`]:
/// input row `y` is the first convolution's output row `y` through `link`
/// and `then`.
struct Chained<'a, const K: usize, const S: usize, const TAPS: usize, A, L, B> {
    first: RefCell<(Stream<K, S, TAPS>, &'a mut L)>,
    source: &'a A,
    then: &'a B,
}

impl<const K: usize, const S: usize, const TAPS: usize, A, L, B> LaneRows
    for Chained<'_, K, S, TAPS, A, L, B>
where
    A: LaneRows,
    L: RowSink,
    B: LaneRows,
{
    fn fill(&self, y: usize, columns: usize, row: &mut [__m512], stride: usize, offset: usize) {
        {
            let mut first = self.first.borrow_mut();
            let (stream, link) = &mut *first;
            let width = stream.geo.out_w;
            // SAFETY: AVX-512F is there (`depthwise_rows_chained` checked).
            let (produced, output) = unsafe { stream.next_row(self.source) }
                .expect("the second convolution asks for no more rows than the first makes");
            assert_eq!(produced, y, "input rows asked for out of order");
            link.take(y, output, width);
        }
        self.then.fill(0, columns, row, stride, offset);
    }
}

/// The depthwise convolution's weights (`[channels][k * k]`, and in the
/// lanes layout, `[channels / 16][k * k][16]`), bias and clamp.
pub struct Filters<'a> {
    pub weights: &'a [f32],
    pub tap_lanes: &'a [f32],
    pub bias: &'a [f32],
    pub clamp: Option<(f32, f32)>,
}

#[target_feature(enable = "avx512f")]
fn rows<const K: usize, const S: usize, const TAPS: usize>(
    geo: &Geometry,
    source: &impl LaneRows,
    filters: &Filters,
    sink: &mut impl RowSink,
) {
    let mut stream = Stream::<K, S, TAPS>::new(geo, filters);
    while let Some((y, row)) = stream.next_row(source) {
        sink.take(y, row, geo.out_w);
    }
}

/// The convolution one output row at a time, each computed when asked
/// for from the input rows it needs, which `source` produces just then.
struct Stream<const K: usize, const S: usize, const TAPS: usize> {
    geo: Geometry,
    /// Padded columns of a ring row.
    width: usize,
    /// Input columns a ring row takes.
    columns: usize,
    /// Floats (registers) of one ring slot: every block's padded row.
    stride: usize,
    /// `K` padded rows of every block, row `r` in slot `r % K`: output row
    /// `y` reads rows `y * S..y * S + K`, and rows are produced in order
    /// just before the first output row that needs them. The padding
    /// columns are never written, so they stay zero.
    ring: Vec<__m512>,
    taps: Vec<[__m512; TAPS]>,
    biases: Vec<__m512>,
    clamp: Clamp,
    out_row: Vec<__m512>,
    /// Padded rows in the ring so far.
    produced: usize,
    /// The next output row.
    next: usize,
}

impl<const K: usize, const S: usize, const TAPS: usize> Stream<K, S, TAPS> {
    #[target_feature(enable = "avx512f")]
    fn new(geo: &Geometry, filters: &Filters) -> Self {
        let blocks = geo.channels.div_ceil(LANES);
        // Padded columns up to the last window's far edge; the input
        // columns past it (VALID crops) are never produced.
        let width = (geo.out_w - 1) * S + K;
        let columns = geo.in_w.min(width - geo.pad_left);
        let stride = blocks * width;
        let taps = (0..blocks)
            .map(|b| tap_registers(&filters.tap_lanes[b * TAPS * LANES..][..TAPS * LANES]))
            .collect();
        let biases = (0..blocks)
            .map(|b| {
                let bias = &filters.bias[b * LANES..];
                let channels = block_channels(geo.channels, b);
                // SAFETY: the mask selects only the `channels` floats of
                // `bias`.
                unsafe { _mm512_maskz_loadu_ps(first_lanes(channels), bias.as_ptr()) }
            })
            .collect();
        let (lo, hi) = filters.clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        Stream {
            geo: *geo,
            width,
            columns,
            stride,
            ring: vec![_mm512_setzero_ps(); K * stride],
            taps,
            biases,
            clamp: Clamp {
                lo: _mm512_set1_ps(lo),
                hi: _mm512_set1_ps(hi),
            },
            out_row: vec![_mm512_setzero_ps(); blocks * geo.out_w],
            produced: 0,
            next: 0,
        }
    }

    /// The next output row and its index (pixel `x` of channels
    /// `16 b..16 b + 16` at `b * out_w + x`), after asking `source` for
    /// the input rows it needs, in order; `None` past the last.
    #[target_feature(enable = "avx512f")]
    fn next_row(&mut self, source: &impl LaneRows) -> Option<(usize, &[__m512])> {
        let (geo, y) = (&self.geo, self.next);
        if y == geo.out_h {
            return None;
        }
        while self.produced < y * S + K {
            let slot = &mut self.ring[(self.produced % K) * self.stride..][..self.stride];
            match self.produced.checked_sub(geo.pad_top) {
                Some(iy) if iy < geo.in_h => {
                    source.fill(iy, self.columns, slot, self.width, geo.pad_left)
                }
                // Padding rows: the slot may hold an older input row.
                _ => slot.fill(_mm512_setzero_ps()),
            }
            self.produced += 1;
        }
        let width = self.width;
        let timer = kernel_probes::start(|| Probe {
            kind: Kind::DepthwiseRow,
            shape: [geo.channels, geo.channels, K, S, geo.out_w],
        });
        for (b, (taps, &bias)) in self.taps.iter().zip(&self.biases).enumerate() {
            let window: [&[__m512]; K] = std::array::from_fn(|ky| {
                let slot = (y * S + ky) % K;
                &self.ring[slot * self.stride + b * width..][..width]
            });
            let pixels = &mut self.out_row[b * geo.out_w..][..geo.out_w];
            output_row::<K, S, TAPS>(&window, taps, bias, self.clamp, pixels);
        }
        drop(timer);
        self.next += 1;
        Some((y, &self.out_row))
    }
}

/// Channels in block `b` of sixteen.
fn block_channels(channels: usize, b: usize) -> usize {
    (channels - b * LANES).min(LANES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::depthwise::kernel::depthwise_reference;
    use crate::ops::lanes::planes_to_lanes;
    use crate::test_support::values;

    /// NCHW planes handed over row by row, with a canary in every lane
    /// past the last channel.
    struct Planes<'a> {
        input: &'a [f32],
        geo: Geometry,
    }

    impl LaneRows for Planes<'_> {
        fn fill(&self, y: usize, columns: usize, row: &mut [__m512], stride: usize, offset: usize) {
            let g = &self.geo;
            for b in 0..g.channels.div_ceil(LANES) {
                for x in 0..columns {
                    let lanes: [f32; LANES] = std::array::from_fn(|l| {
                        let c = b * LANES + l;
                        if c < g.channels {
                            self.input[(c * g.in_h + y) * g.in_w + x]
                        } else {
                            f32::NAN
                        }
                    });
                    // SAFETY: AVX-512F is there (the caller asserts it);
                    // the load reads the 16 floats of `lanes`.
                    row[b * stride + offset + x] = unsafe { _mm512_loadu_ps(lanes.as_ptr()) };
                }
            }
        }
    }

    #[test]
    fn rows_from_a_source_match_the_definition() {
        if !available() {
            eprintln!("skipping: no AVX-512F");
            return;
        }
        // (channels, kernel, stride, in_h, in_w, pads top/left/bottom/right):
        // EfficientNet's fused shapes, partial blocks, odd sizes, pads wider
        // than the kernel's reach and VALID crops.
        for (channels, kernel, stride, (in_h, in_w), (top, left, bottom, right)) in [
            (32, 3, 1, (112, 112), (1, 1, 1, 1)),
            (20, 3, 2, (112, 112), (0, 0, 1, 1)),
            (37, 3, 1, (56, 56), (1, 1, 1, 1)),
            (33, 5, 2, (56, 56), (1, 1, 2, 2)),
            (5, 5, 1, (9, 13), (2, 0, 3, 4)),
            (17, 3, 2, (17, 33), (0, 0, 0, 0)),
            (3, 5, 2, (1, 1), (2, 2, 2, 2)),
            (16, 3, 1, (4, 5), (4, 3, 3, 4)),
        ] {
            let geo = Geometry::padded(
                channels,
                (kernel, stride),
                (in_h, in_w),
                (top, left, bottom, right),
            );
            let input = values(geo.input_len(), 1);
            let weights = values(channels * kernel * kernel, 2);
            let bias = values(channels, 3);
            let clamp = Some((-0.5, 0.75));
            let want = depthwise_reference(&geo, &input, &weights, &bias, clamp);
            let mut got = vec![f32::NAN; geo.output_len()];
            let source = Planes { input: &input, geo };
            let filters = Filters {
                weights: &weights,
                tap_lanes: &planes_to_lanes(&weights, channels, kernel * kernel),
                bias: &bias,
                clamp,
            };
            depthwise_rows(&geo, &source, &filters, &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= 1e-4, "{geo:?} at {i}: {g} vs {w}");
            }
        }
    }
}
