//! Which input channels of a tile of pixels are not all zero, so that a
//! projection can skip the others.
//!
//! A block's projection reads its depthwise convolution's output after
//! ReLU6, and in the wide blocks most of it is zero: 70-73% of the values
//! in the 480- and 672-channel blocks on the three samples, and 40-50% of
//! their channels are zero across a whole tile of 7 pixels (30-70% in the
//! 7x7 blocks). A channel that is zero across a tile adds nothing to the
//! tile's sums: adding a product of zero leaves every sum as it is, but
//! for a sum of exactly -0, which it would turn into +0 (so an output of
//! zero might differ in its sign; no other value can).

use std::arch::x86_64::*;

use crate::ops::lanes::LANES;

/// Input channels from which a projection skips the channels that are
/// zero across a tile: below this the lists cost more than they save
/// (the figures are in docs/performance.md).
pub const SKIP_ZEROS_FROM: usize = 240;

/// How many live channels ahead of the one being summed
/// [`LiveChannels::of`] also gives, for prefetching its weights: skipped
/// channels break the run of weights the hardware prefetches.
const AHEAD: usize = 4;

/// For each tile of `tile_pixels` pixels and each chunk of input
/// channels, the channels of the chunk with a value other than ±0 at one
/// of the tile's pixels, in order. Buffers are kept for the next input.
#[derive(Default)]
pub struct LiveChannels {
    /// `[tile][chunk][stride]`: each list, then junk channels.
    lists: Vec<u32>,
    counts: Vec<usize>,
    stride: usize,
    chunks: usize,
}

impl LiveChannels {
    /// Finds the lists for `input` in the lanes layout (`[cin / 16][width]
    /// [16]`: channel `c` of pixel `x` at `((c / 16) * width + x) * 16 + c
    /// % 16`), for the tiles of `tile_pixels` that fit in `width` and
    /// chunks of `chunk` channels (a multiple of 16).
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn find(
        &mut self,
        input: &[f32],
        (width, tile_pixels): (usize, usize),
        cin: usize,
        chunk: usize,
    ) {
        assert!(chunk.is_multiple_of(LANES) && chunk > 0);
        assert!(input.len() >= cin.div_ceil(LANES) * width * LANES);
        let tiles = width / tile_pixels;
        self.chunks = cin.div_ceil(chunk);
        // Room for a whole register stored after a chunk's last channel,
        // and for the channels `AHEAD` of it.
        self.stride = chunk + LANES.max(AHEAD);
        self.lists.resize(tiles * self.chunks * self.stride, 0);
        self.counts.clear();
        self.counts.resize(tiles * self.chunks, 0);
        let magnitude = _mm512_set1_epi32(0x7fff_ffff);
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let lists = self.lists.chunks_exact_mut(self.stride);
        for ((list, count), at) in lists.zip(&mut self.counts).zip(0..) {
            let (tile, chunk_index) = (at / self.chunks, at % self.chunks);
            let first = chunk_index * chunk;
            for block in first / LANES..(first + chunk).min(cin).div_ceil(LANES) {
                let pixels =
                    &input[(block * width + tile * tile_pixels) * LANES..][..tile_pixels * LANES];
                let any = pixels
                    .chunks_exact(LANES)
                    .fold(_mm512_setzero_si512(), |any, p| {
                        // SAFETY: `p` holds 16 floats.
                        let p = unsafe { _mm512_loadu_ps(p.as_ptr()) };
                        _mm512_or_si512(any, _mm512_castps_si512(p))
                    });
                let exists = (cin - block * LANES).min(LANES);
                let mask = _mm512_test_epi32_mask(any, magnitude) & ((1u32 << exists) - 1) as u16;
                let channels = _mm512_add_epi32(lanes, _mm512_set1_epi32((block * LANES) as i32));
                // SAFETY: `*count <= block * 16 - first <= chunk - 16`,
                // and the list has `stride >= chunk + 16` entries.
                unsafe {
                    _mm512_storeu_si512(
                        list.as_mut_ptr().add(*count).cast(),
                        _mm512_maskz_compress_epi32(mask, channels),
                    )
                };
                *count += mask.count_ones() as usize;
            }
        }
    }

    /// The live channels of a tile's chunk.
    pub fn of(&self, tile: usize, chunk: usize) -> Live<'_> {
        let at = tile * self.chunks + chunk;
        let list = &self.lists[at * self.stride..][..self.stride];
        let count = self.counts[at];
        Live {
            channels: &list[..count],
            ahead: &list[AHEAD..][..count],
        }
    }
}

/// The input channels a tile sums over, in order. A trait rather than an
/// iterator: the kernels' loops over closures were not inlined (inside
/// `target_feature` functions) and spilled every sum around the call.
pub trait Channels: Copy {
    fn count(&self) -> usize;
    /// The `k`th channel.
    fn channel(&self, k: usize) -> usize;
    /// A channel summed after the `k`th whose weights to prefetch then.
    fn ahead(&self, k: usize) -> Option<usize>;
}

/// Channels from `.0` up to `.1` (not included), all of them summed.
#[derive(Clone, Copy)]
pub struct Every(pub usize, pub usize);

impl Channels for Every {
    #[inline(always)]
    fn count(&self) -> usize {
        self.1 - self.0
    }

    #[inline(always)]
    fn channel(&self, k: usize) -> usize {
        self.0 + k
    }

    #[inline(always)]
    fn ahead(&self, _: usize) -> Option<usize> {
        None
    }
}

/// A tile's live channels, and for each the channel [`AHEAD`] after it in
/// the list (past its end, junk channels: only prefetched).
#[derive(Clone, Copy)]
pub struct Live<'a> {
    channels: &'a [u32],
    ahead: &'a [u32],
}

impl Channels for Live<'_> {
    #[inline(always)]
    fn count(&self) -> usize {
        self.channels.len()
    }

    #[inline(always)]
    fn channel(&self, k: usize) -> usize {
        self.channels[k] as usize
    }

    #[inline(always)]
    fn ahead(&self, k: usize) -> Option<usize> {
        Some(self.ahead[k] as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{lacks_avx512f, values, xorshift};

    /// The lists hold exactly the channels with a value other than ±0 in
    /// a tile, chunk by chunk: NaN and the smallest subnormal are live,
    /// -0 is not; channel counts that end in a partial register and
    /// pixels after the last whole tile are covered.
    #[test]
    fn lists_hold_the_channels_that_are_not_zero() {
        if lacks_avx512f() {
            return;
        }
        let (cin, width, tile_pixels, chunk): (usize, _, _, _) = (40, 15, 7, 32);
        let mut input = values(cin.div_ceil(LANES) * width * LANES, 3);
        let at = |c: usize, x: usize| ((c / LANES) * width + x) * LANES + c % LANES;
        for ((c, x), roll) in (0..cin)
            .flat_map(|c| (0..width).map(move |x| (c, x)))
            .zip(xorshift(9))
        {
            input[at(c, x)] = match roll % 8 {
                0..=4 => 0.0,
                5 => -0.0,
                6 if roll % 64 == 6 => f32::NAN,
                6 if roll % 64 == 14 => f32::from_bits(1),
                _ => input[at(c, x)],
            };
        }
        let mut live = LiveChannels::default();
        // SAFETY: AVX-512F is there.
        unsafe { live.find(&input, (width, tile_pixels), cin, chunk) };
        let mut skipped = 0;
        for tile in 0..width / tile_pixels {
            for first in (0..cin).step_by(chunk) {
                let want: Vec<usize> = (first..(first + chunk).min(cin))
                    .filter(|&c| {
                        let pixels = tile * tile_pixels..(tile + 1) * tile_pixels;
                        pixels
                            .into_iter()
                            .any(|x| input[at(c, x)] != 0.0 || input[at(c, x)].is_nan())
                    })
                    .collect();
                let got = live.of(tile, first / chunk);
                let got: Vec<usize> = (0..got.count()).map(|k| got.channel(k)).collect();
                assert_eq!(got, want, "tile {tile}, channels {first}..");
                skipped += (first + chunk).min(cin) - first - want.len();
            }
        }
        assert!(skipped > 0, "the input leaves no channel to skip");
    }
}
