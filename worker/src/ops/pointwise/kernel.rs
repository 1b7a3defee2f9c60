//! A 1x1 convolution over CHW planes, `out[co][p] = bias[co] +
//! sum_ci w[co][ci] * in[ci][p]`, as a matrix product that reads the
//! activations where they lie: each call computes a tile of
//! [`BLOCK_CHANNELS`] output channels by a few vectors of pixels with every
//! accumulator in a register, walking the input channels and broadcasting one
//! weight per output channel. Only the weights are rearranged, once, when the
//! op is built ([`PackedWeights`]).
//!
//! Tiles sweep all output channels for one strip of pixels before moving to
//! the next, so that strip (`[cin, tile width]`, at most 48 pixels wide) stays
//! in L1 or L2 while every weight panel streams past it. Small planes
//! (7x7) on AVX-512 swap the roles, output channels in the lanes (see
//! [`CHANNEL_LANES_BELOW`]).
//!
//! This file holds the layouts and the dispatch; each instruction set's
//! kernel is a child module ([`Isa`]), reading only what is defined here.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod channel_lanes;
mod portable;

use crate::ops::lanes::Layout;

/// Output channels computed together; the packed weights hold panels of
/// this many channels, zero-padded at the end.
pub const BLOCK_CHANNELS: usize = 8;

/// Output channels per panel of the channels-in-lanes layout: three AVX-512
/// registers.
pub const CHANNEL_PANEL: usize = 48;

/// Planes smaller than this (the 7x7 layers) run with output channels in
/// the vector lanes on AVX-512: 49 pixels fill only 49 of the 64 lanes that
/// four pixel vectors offer, while the channel counts there are multiples
/// of 32. Larger planes fill their pixel vectors well enough.
pub const CHANNEL_LANES_BELOW: usize = 128;

/// The weights in the order the kernels read them.
///
/// Pixels in lanes (every kernel): for each block of [`BLOCK_CHANNELS`]
/// output channels, for each input channel, the block's weights side by side
/// (`panels[(block * cin + ci) * 8 + r]` is `w[block * 8 + r][ci]`), so one
/// tile's broadcasts walk memory forwards.
///
/// Channels in lanes (AVX-512, small planes only): the same with blocks of
/// [`CHANNEL_PANEL`] channels, so each input channel's weights load as
/// three vectors.
#[derive(Debug, Clone)]
pub struct PackedWeights {
    input_channels: usize,
    output_channels: usize,
    panels: Vec<f32>,
    /// Padded with zeros to whole blocks.
    bias: Vec<f32>,
    channel_panels: Option<ChannelPanels>,
}

#[derive(Debug, Clone)]
pub struct ChannelPanels {
    /// `[cout / 48][cin][48]`, zero-padded like `panels`.
    pub panels: Vec<f32>,
    /// Padded with zeros to whole panels.
    pub bias: Vec<f32>,
}

impl PackedWeights {
    /// `weights` is `[output_channels, input_channels]` (OI), `bias` is
    /// `[output_channels]`. `pixels`, the plane size the op runs on, picks
    /// which layouts are worth their memory; any size still computes
    /// correctly.
    pub fn new(
        weights: &[f32],
        bias: &[f32],
        output_channels: usize,
        input_channels: usize,
        pixels: usize,
    ) -> PackedWeights {
        assert_eq!(weights.len(), output_channels * input_channels);
        assert_eq!(bias.len(), output_channels);
        let (panels, padded_bias) = panels_of(weights, bias, input_channels, BLOCK_CHANNELS);
        let channel_panels = (pixels < CHANNEL_LANES_BELOW).then(|| {
            let (panels, bias) = panels_of(weights, bias, input_channels, CHANNEL_PANEL);
            ChannelPanels { panels, bias }
        });
        PackedWeights {
            input_channels,
            output_channels,
            panels,
            bias: padded_bias,
            channel_panels,
        }
    }

    pub fn input_channels(&self) -> usize {
        self.input_channels
    }

    pub fn output_channels(&self) -> usize {
        self.output_channels
    }

    pub fn blocks(&self) -> usize {
        self.bias.len() / BLOCK_CHANNELS
    }

    /// `[input_channels][BLOCK_CHANNELS]` for output channel block `block`.
    pub fn panel(&self, block: usize) -> &[f32] {
        let len = self.input_channels * BLOCK_CHANNELS;
        &self.panels[block * len..(block + 1) * len]
    }

    /// `[BLOCK_CHANNELS]`, zero past the last output channel.
    pub fn block_bias(&self, block: usize) -> &[f32; BLOCK_CHANNELS] {
        self.bias[block * BLOCK_CHANNELS..(block + 1) * BLOCK_CHANNELS]
            .try_into()
            .expect("bias is padded to whole blocks")
    }

    /// Output channels `channels` as a convolution of their own, packed for
    /// planes of `pixels`.
    pub fn output_channel_range(&self, channels: std::ops::Range<usize>, pixels: usize) -> Self {
        assert!(
            channels.end <= self.output_channels,
            "channels {channels:?}"
        );
        PackedWeights::new(
            &self.unpacked(channels.clone()),
            &self.bias[channels.clone()],
            channels.len(),
            self.input_channels,
            pixels,
        )
    }

    /// The channels-in-lanes layout of all the weights, whatever plane size
    /// they were packed for: for kernels that keep output channels in the
    /// lanes on any plane.
    pub fn to_channel_panels(&self) -> ChannelPanels {
        let (panels, bias) = panels_of(
            &self.unpacked(0..self.output_channels),
            &self.bias[..self.output_channels],
            self.input_channels,
            CHANNEL_PANEL,
        );
        ChannelPanels { panels, bias }
    }

    /// Output channels `channels` as `[channel][input channel]` (OI).
    fn unpacked(&self, channels: std::ops::Range<usize>) -> Vec<f32> {
        let cin = self.input_channels;
        let mut weights = Vec::with_capacity(channels.len() * cin);
        for co in channels {
            let (block, r) = (co / BLOCK_CHANNELS, co % BLOCK_CHANNELS);
            weights.extend((0..cin).map(|ci| self.panels[(block * cin + ci) * BLOCK_CHANNELS + r]));
        }
        weights
    }

    /// The channels-in-lanes layout, when the plane size asked for it.
    pub fn channel_panels(&self) -> Option<&ChannelPanels> {
        self.channel_panels.as_ref()
    }
}

/// `weights` (`[cout][cin]`) as `[cout / width][cin][width]` and the bias
/// padded alike, zeros filling the last panel.
fn panels_of(
    weights: &[f32],
    bias: &[f32],
    input_channels: usize,
    width: usize,
) -> (Vec<f32>, Vec<f32>) {
    let output_channels = bias.len();
    let blocks = output_channels.div_ceil(width);
    let mut panels = vec![0f32; blocks * input_channels * width];
    for co in 0..output_channels {
        let (block, r) = (co / width, co % width);
        for ci in 0..input_channels {
            panels[(block * input_channels + ci) * width + r] = weights[co * input_channels + ci];
        }
    }
    let mut padded_bias = bias.to_vec();
    padded_bias.resize(blocks * width, 0.0);
    (panels, padded_bias)
}

// Compared bit for bit so ops holding them can be `Eq`.
impl PartialEq for PackedWeights {
    fn eq(&self, other: &PackedWeights) -> bool {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        // The channel panels are derived from the same weights; whether
        // they exist only depends on the plane size.
        self.input_channels == other.input_channels
            && self.output_channels == other.output_channels
            && bits(&self.panels) == bits(&other.panels)
            && bits(&self.bias) == bits(&other.bias)
            && self.channel_panels.is_some() == other.channel_panels.is_some()
    }
}

impl Eq for PackedWeights {}

impl PartialEq for ChannelPanels {
    fn eq(&self, other: &ChannelPanels) -> bool {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        bits(&self.panels) == bits(&other.panels) && bits(&self.bias) == bits(&other.bias)
    }
}

impl Eq for ChannelPanels {}

/// One pointwise convolution to compute: the input and what to apply after
/// the bias, in the order the ONNX graph does (clamp, then residual add).
#[derive(Debug, Clone, Copy)]
pub struct Pointwise<'a> {
    pub weights: &'a PackedWeights,
    /// Pixels per channel plane (H * W).
    pub pixels: usize,
    /// `[input_channels][pixels]`.
    pub input: &'a [f32],
    /// Lower and upper bound (ReLU6 and the like).
    pub clamp: Option<(f32, f32)>,
    /// `[output_channels][pixels]`, added last (a residual connection).
    pub residual: Option<&'a [f32]>,
}

impl Pointwise<'_> {
    pub fn output_len(&self) -> usize {
        self.weights.output_channels * self.pixels
    }

    /// Panics unless the slices match the shapes: what the vector kernels'
    /// unchecked loads and stores rely on.
    pub(super) fn check(&self, output: &[f32]) {
        self.check_layouts((Layout::Planes, Layout::Planes), output);
    }

    /// [`Pointwise::check`] with the input in layout `from` and the output
    /// and residual in `to`.
    pub(super) fn check_layouts(&self, (from, to): (Layout, Layout), output: &[f32]) {
        let output_len = to.len(self.weights.output_channels, self.pixels);
        assert_eq!(
            self.input.len(),
            from.len(self.weights.input_channels, self.pixels),
            "input is not [cin, pixels] in {from:?}"
        );
        assert_eq!(
            output.len(),
            output_len,
            "output is not [cout, pixels] in {to:?}"
        );
        if let Some(residual) = self.residual {
            assert_eq!(
                residual.len(),
                output_len,
                "residual is not [cout, pixels] in {to:?}"
            );
        }
    }
}

/// The instruction sets with a kernel of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// 16 pixels per register, masked tails.
    Avx512,
    /// 8 pixels per register, masked tails; needs FMA too.
    Avx2Fma,
    /// Plain Rust the compiler vectorises for the baseline target (SSE2,
    /// NEON); the only path off x86-64.
    Portable,
}

impl Isa {
    /// The fastest kernel this CPU runs.
    pub fn best() -> Isa {
        Isa::all()
            .into_iter()
            .find(|isa| isa.is_available())
            .unwrap_or(Isa::Portable)
    }

    /// Fastest first.
    pub fn all() -> [Isa; 3] {
        [Isa::Avx512, Isa::Avx2Fma, Isa::Portable]
    }

    pub fn is_available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx512::available(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => avx2::available(),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx512 | Isa::Avx2Fma => false,
            Isa::Portable => true,
        }
    }
}

/// Computes `conv` into `output` (`[output_channels][pixels]`) on the
/// fastest kernel the CPU has.
pub fn pointwise(conv: &Pointwise, output: &mut [f32]) {
    pointwise_on(Isa::best(), conv, output);
}

/// [`pointwise`] on a chosen kernel. Panics if the CPU lacks `isa` or the
/// slices do not match the shapes.
pub fn pointwise_on(isa: Isa, conv: &Pointwise, output: &mut [f32]) {
    conv.check(output);
    assert!(isa.is_available(), "{isa:?} is not supported by this CPU");
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if conv.weights.channel_panels().is_some() => {
            channel_lanes::pointwise(conv, output)
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => avx512::pointwise(conv, output),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => avx2::pointwise(conv, output),
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx512 | Isa::Avx2Fma => unreachable!("is_available is false off x86-64"),
        Isa::Portable => portable::pointwise(conv, output),
    }
}

/// [`pointwise`] with the input in layout `from` and the output (and the
/// residual) in `to`, on the AVX-512 channels-in-lanes kernel: the only one
/// that reads and writes the lanes layout. Panics unless the CPU has
/// AVX-512F, the weights hold that kernel's layout
/// ([`PackedWeights::channel_panels`], small planes) and the slices match
/// the shapes in those layouts.
#[cfg(target_arch = "x86_64")]
pub fn pointwise_between(conv: &Pointwise, layouts: (Layout, Layout), output: &mut [f32]) {
    channel_lanes::pointwise_between(conv, layouts, output);
}

/// Floats in a 64-byte cache line: the step of the vector kernels'
/// prefetches.
#[cfg(target_arch = "x86_64")]
pub(crate) const FLOATS_PER_LINE: usize = 16;

/// Prefetches cache lines `lines` after `from` into L1 (only a hint: any
/// address will do).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_lines(from: *const f32, lines: std::ops::Range<usize>) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    for line in lines {
        // SAFETY: a prefetch reads nothing and cannot fault.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(from.wrapping_add(line * FLOATS_PER_LINE).cast()) };
    }
}

/// Calls `strip(vectors, start, width)` for consecutive strips of at most
/// `lanes * max_vectors` pixels; `vectors` covers `width` with the last one
/// partial when `width` is not a multiple of `lanes`. The vector kernels'
/// walk over the plane.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn for_each_strip(
    pixels: usize,
    lanes: usize,
    max_vectors: usize,
    mut strip: impl FnMut(usize, usize, usize),
) {
    let mut start = 0;
    while start < pixels {
        let width = (pixels - start).min(lanes * max_vectors);
        strip(width.div_ceil(lanes), start, width);
        start += width;
    }
}

/// The textbook definition in f64: what every kernel is tested against.
/// `weights` is `[output_channels][input_channels]`.
pub fn pointwise_reference(
    weights: &[f32],
    bias: &[f32],
    pixels: usize,
    input: &[f32],
    clamp: Option<(f32, f32)>,
    residual: Option<&[f32]>,
) -> Vec<f64> {
    let cout = bias.len();
    let cin = weights.len() / cout;
    let mut out = vec![0f64; cout * pixels];
    for co in 0..cout {
        for p in 0..pixels {
            let mut acc = f64::from(bias[co]);
            for ci in 0..cin {
                acc += f64::from(weights[co * cin + ci]) * f64::from(input[ci * pixels + p]);
            }
            if let Some((lo, hi)) = clamp {
                acc = acc.max(f64::from(lo)).min(f64::from(hi));
            }
            if let Some(residual) = residual {
                acc += f64::from(residual[co * pixels + p]);
            }
            out[co * pixels + p] = acc;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::values;

    /// (cout, cin, pixels): EfficientNet-Lite0's shapes (some scaled down)
    /// plus channel counts off the block size and pixel counts off every
    /// vector width.
    const SHAPES: [(usize, usize, usize); 19] = [
        (16, 32, 12544),
        (96, 16, 784),
        (24, 144, 3136),
        (192, 1152, 49),
        (1280, 32, 49),
        (80, 480, 196),
        (1, 1, 1),
        (3, 5, 7),
        (9, 3, 17),
        (13, 7, 33),
        (7, 19, 47),
        (17, 2, 48),
        (8, 8, 49),
        (15, 11, 63),
        (33, 65, 97),
        (5, 300, 129),
        (9, 5, 161),
        (3, 17, 130),
        (50, 40, 64),
    ];

    /// Worst error allowed: 1e-5 of the sum of the magnitudes of the terms,
    /// which bounds f32 rounding whatever the order of the additions.
    fn tolerance(weights: &[f32], bias: &[f32], input: &[f32], pixels: usize) -> Vec<f64> {
        let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
        pointwise_reference(&abs(weights), &abs(bias), pixels, &abs(input), None, None)
            .into_iter()
            .map(|m| 1e-5 * (m + 1.0))
            .collect()
    }

    fn check(isa: Isa) {
        for (i, &(cout, cin, pixels)) in SHAPES.iter().enumerate() {
            let seed = i as u32 * 10;
            let weights = values(cout * cin, seed);
            let bias = values(cout, seed + 1);
            let input = values(cin * pixels, seed + 2);
            let residual = values(cout * pixels, seed + 3);
            let packed = PackedWeights::new(&weights, &bias, cout, cin, pixels);
            let tolerance = tolerance(&weights, &bias, &input, pixels);
            for clamp in [None, Some((0.0, 0.5))] {
                for residual in [None, Some(residual.as_slice())] {
                    let conv = Pointwise {
                        weights: &packed,
                        pixels,
                        input: &input,
                        clamp,
                        residual,
                    };
                    let expected =
                        pointwise_reference(&weights, &bias, pixels, &input, clamp, residual);
                    let mut got = vec![f32::NAN; conv.output_len()];
                    pointwise_on(isa, &conv, &mut got);
                    for (j, ((g, e), t)) in got.iter().zip(&expected).zip(&tolerance).enumerate() {
                        assert!(
                            (f64::from(*g) - e).abs() <= *t,
                            "{isa:?} cout {cout} cin {cin} pixels {pixels} clamp {clamp:?} \
                             residual {} at {j}: {g} vs {e}",
                            residual.is_some()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn portable_path_matches_the_definition() {
        check(Isa::Portable);
    }

    #[test]
    fn avx2_path_matches_the_definition() {
        if Isa::Avx2Fma.is_available() {
            check(Isa::Avx2Fma);
        } else {
            eprintln!("skipped: no AVX2+FMA on this CPU");
        }
    }

    #[test]
    fn avx512_path_matches_the_definition() {
        if Isa::Avx512.is_available() {
            check(Isa::Avx512);
        } else {
            eprintln!("skipped: no AVX-512F on this CPU");
        }
    }

    #[test]
    fn dispatched_path_matches_the_definition() {
        let (cout, cin, pixels) = (21, 13, 53);
        let weights = values(cout * cin, 1);
        let bias = values(cout, 2);
        let input = values(cin * pixels, 3);
        let packed = PackedWeights::new(&weights, &bias, cout, cin, pixels);
        let conv = Pointwise {
            weights: &packed,
            pixels,
            input: &input,
            clamp: Some((-0.25, 0.25)),
            residual: None,
        };
        let mut got = vec![f32::NAN; conv.output_len()];
        pointwise(&conv, &mut got);
        let expected = pointwise_reference(&weights, &bias, pixels, &input, conv.clamp, None);
        let tolerance = tolerance(&weights, &bias, &input, pixels);
        for ((g, e), t) in got.iter().zip(&expected).zip(&tolerance) {
            assert!((f64::from(*g) - e).abs() <= *t, "{g} vs {e}");
        }
    }

    #[test]
    fn packing_pads_channels_to_whole_blocks() {
        let packed = PackedWeights::new(&values(10 * 3, 4), &values(10, 5), 10, 3, 1000);
        assert_eq!(packed.blocks(), 2);
        assert_eq!(packed.panel(1).len(), 3 * BLOCK_CHANNELS);
        assert_eq!(packed.block_bias(1)[2..], [0.0; 6]);
        assert!(packed.channel_panels().is_none());
        let small = PackedWeights::new(&values(40 * 3, 4), &values(40, 5), 40, 3, 49);
        let channel = small
            .channel_panels()
            .expect("7x7 planes get channel panels");
        assert_eq!(channel.panels.len(), 3 * CHANNEL_PANEL);
        assert_eq!(channel.bias[40..], [0.0; 8]);
    }

    /// The 7x7 kernel, reading its input in lanes, skips the channels that
    /// are zero across a tile and still gives the planes kernel's bits:
    /// passes that end in a partial register, pixels after the last tile.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn skipping_zero_channels_in_lanes_keeps_every_bit() {
        use crate::ops::lanes::planes_to_lanes;
        use crate::ops::live_channels::SKIP_ZEROS_FROM;
        use crate::test_support::{bits, lacks_avx512f, mostly_zeros};
        if lacks_avx512f() {
            return;
        }
        let (cout, cin, pixels) = (100, SKIP_ZEROS_FROM + 72, 52);
        let weights =
            PackedWeights::new(&values(cout * cin, 1), &values(cout, 2), cout, cin, pixels);
        let planes = mostly_zeros(cin * pixels, 3);
        let conv = |input| Pointwise {
            weights: &weights,
            pixels,
            input,
            clamp: Some((0.0, 6.0)),
            residual: None,
        };
        let mut want = vec![0f32; cout * pixels];
        pointwise(&conv(&planes), &mut want);
        let lanes = planes_to_lanes(&planes, cin, pixels);
        let mut got = vec![f32::NAN; cout * pixels];
        pointwise_between(&conv(&lanes), (Layout::Lanes, Layout::Planes), &mut got);
        assert_eq!(bits(&got), bits(&want));
    }
}
