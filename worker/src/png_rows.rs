//! 8-bit RGB and RGBA PNGs (not interlaced) decoded straight into 8-bit
//! RGB: the png crate parses the chunks and inflates, we undo the row
//! filters, and with AVX2 undo runs of Paeth rows four at a time.
//!
//! Paeth is what photo encoders pick for most rows, and undoing it is one
//! long chain: each pixel needs its left neighbour's final value, about
//! ten dependent operations a pixel; on big RGBA photos the png crate
//! spent a third of the decode there. A pixel also needs the row above,
//! so four rows can run together as a wavefront, each a pixel behind the
//! one above it: one chain then yields four pixels.
//!
//! The image is inflated into one buffer of filtered rows, unfiltered in
//! place a little behind the inflater, and each finished row packed down
//! to RGB in the same buffer, which then becomes the image: no other copy
//! of the pixels exists.

use image::RgbImage;
use png::{BitDepth, ColorType, Decoded, StreamingDecoder, UnfilterRegion};

/// Filter types of the PNG specification.
const NONE: u8 = 0;
const SUB: u8 = 1;
const UP: u8 = 2;
const AVERAGE: u8 = 3;
const PAETH: u8 = 4;

/// Decodes `bytes`, a PNG of `width` x `height`, into RGB (alpha dropped).
/// `None` for the layouts this path leaves to the general decoder (not
/// 8-bit RGB or RGBA, interlaced) and for any damage, which the general
/// decoder then reports.
pub fn decode(bytes: &[u8], width: u32, height: u32) -> Option<RgbImage> {
    let mut decoder = StreamingDecoder::new();
    let mut at = 0;
    // The header, then up to the first image data.
    loop {
        let (consumed, decoded) = decoder.update(&bytes[at..], None).ok()?;
        at += consumed;
        match decoded {
            Decoded::ChunkBegin(_, png::chunk::IDAT) => break,
            Decoded::ChunkComplete(png::chunk::IEND) => return None,
            _ if consumed == 0 => return None,
            _ => {}
        }
    }
    let info = decoder.info()?;
    let bpp = match (info.color_type, info.bit_depth) {
        (ColorType::Rgb, BitDepth::Eight) => 3,
        (ColorType::Rgba, BitDepth::Eight) => 4,
        _ => return None,
    };
    if info.interlaced || (info.width, info.height) != (width, height) {
        return None;
    }
    let (width, height) = (width as usize, height as usize);
    let mut rows = Rows::new(width, height, bpp)?;
    let mut region = UnfilterRegion::default();
    while rows.unfiltered < height {
        let filled = region.filled;
        let (consumed, decoded) = decoder
            .update(&bytes[at..], Some(&mut region.as_buf(&mut rows.buffer)))
            .ok()?;
        at += consumed;
        // Once every row is inflated, or the stream ends or stops moving
        // (the rows then come up short and the general decoder reports
        // why), the inflater is done with the buffer.
        let finished = region.filled == rows.buffer.len()
            || matches!(decoded, Decoded::ImageDataFlushed)
            || (consumed == 0 && region.filled == filled)
            || at == bytes.len();
        if finished {
            rows.unfilter_up_to(region.filled, true)?;
            break;
        }
        // Rows wholly below `available` are inflated and the inflater no
        // longer reads them.
        rows.unfilter_up_to(region.available, false)?;
    }
    // As the general decoder: the file must go on up to the closing
    // chunk's type (its checksum alone may be missing).
    loop {
        let (consumed, decoded) = decoder.update(&bytes[at..], None).ok()?;
        at += consumed;
        match decoded {
            Decoded::ChunkBegin(_, png::chunk::IEND) => break,
            _ if consumed == 0 || at == bytes.len() => return None,
            _ => {}
        }
    }
    rows.into_rgb()
}

/// The image's rows, filtered (a filter byte and `width * bpp` bytes
/// each), unfiltered and packed to RGB as they come.
struct Rows {
    buffer: Vec<u8>,
    width: usize,
    height: usize,
    bpp: usize,
    /// Rows unfiltered so far; all but the last of them are packed.
    unfiltered: usize,
}

impl Rows {
    /// `None` when the buffer's size overflows (the caller's budget has
    /// already bounded the image).
    fn new(width: usize, height: usize, bpp: usize) -> Option<Rows> {
        let stride = width.checked_mul(bpp)?.checked_add(1)?;
        Some(Rows {
            buffer: vec![0; stride.checked_mul(height)?],
            width,
            height,
            bpp,
            unfiltered: 0,
        })
    }

    fn stride(&self) -> usize {
        self.width * self.bpp + 1
    }

    /// Unfilters the rows lying wholly below byte `end`; unless `last`
    /// (no more rows will come), a Paeth row waits until the wavefront's
    /// four are there. `None` on an unknown filter type.
    fn unfilter_up_to(&mut self, end: usize, last: bool) -> Option<()> {
        let stride = self.stride();
        let ready = (end / stride).min(self.height);
        while self.unfiltered < ready {
            let y = self.unfiltered;
            let run = self.paeth_run(y, ready);
            let more_coming = !last && ready < self.height;
            if run > 0 && run < wavefront::ROWS && more_coming {
                break;
            }
            if run == wavefront::ROWS {
                wavefront::paeth(&mut self.buffer, y, stride, self.bpp);
            } else {
                let (above, row) = self.buffer.split_at_mut(y * stride);
                let previous = y.checked_sub(1).map(|_| &above[above.len() - stride + 1..]);
                unfilter_row(row[0], previous, &mut row[1..stride], self.bpp)?;
            }
            let done = if run == wavefront::ROWS { run } else { 1 };
            self.unfiltered += done;
            // Every row but the newest is no longer anyone's row above.
            for packed in y.saturating_sub(1)..self.unfiltered - 1 {
                self.pack(packed);
            }
        }
        Some(())
    }

    /// How many Paeth rows from `y` on (up to [`wavefront::ROWS`], before
    /// `ready`) the wavefront can take.
    fn paeth_run(&self, y: usize, ready: usize) -> usize {
        if !wavefront::available() {
            return 0;
        }
        let stride = self.stride();
        (y..ready)
            .take(wavefront::ROWS)
            .take_while(|&r| self.buffer[r * stride] == PAETH)
            .count()
    }

    /// Moves row `y`'s pixels, as RGB, to their place in the final image,
    /// which lies at or before where the row is now.
    fn pack(&mut self, y: usize) {
        let (stride, bpp) = (self.stride(), self.bpp);
        let from = y * stride + 1;
        let to = y * self.width * 3;
        if bpp == 3 {
            self.buffer.copy_within(from..from + self.width * 3, to);
            return;
        }
        // Forwards pixel by pixel: each write lands at or before the bytes
        // still to be read.
        let buffer = &mut self.buffer[to..from + self.width * bpp];
        let offset = from - to;
        // Four pixels at a time (one 16-byte load, one 12-byte store),
        // then one by one.
        let quads = self.width / 4;
        for q in 0..quads {
            let (source, target) = (offset + q * 16, q * 12);
            let p: [u8; 16] = buffer[source..source + 16].try_into().expect("16 bytes");
            let rgb = [
                p[0], p[1], p[2], p[4], p[5], p[6], p[8], p[9], p[10], p[12], p[13], p[14],
            ];
            buffer[target..target + 12].copy_from_slice(&rgb);
        }
        for x in quads * 4..self.width {
            let (source, target) = (offset + x * bpp, x * 3);
            let [r, g, b] = [buffer[source], buffer[source + 1], buffer[source + 2]];
            buffer[target..target + 3].copy_from_slice(&[r, g, b]);
        }
    }

    fn into_rgb(mut self) -> Option<RgbImage> {
        if self.unfiltered < self.height {
            return None;
        }
        self.pack(self.height - 1);
        self.buffer.truncate(self.width * self.height * 3);
        RgbImage::from_raw(self.width as u32, self.height as u32, self.buffer)
    }
}

/// Undoes one row's `filter` in place, `previous` being the unfiltered row
/// above (none for the first row, which counts as zeros).
fn unfilter_row(filter: u8, previous: Option<&[u8]>, row: &mut [u8], bpp: usize) -> Option<()> {
    match bpp {
        3 => unfilter_pixels::<3>(filter, previous, row),
        _ => unfilter_pixels::<4>(filter, previous, row),
    }
}

/// [`unfilter_row`] for `BPP`-byte pixels, a pixel at a time so each
/// pixel's bytes go through in parallel.
fn unfilter_pixels<const BPP: usize>(
    filter: u8,
    previous: Option<&[u8]>,
    row: &mut [u8],
) -> Option<()> {
    let pixels = row.chunks_exact_mut(BPP);
    match (filter, previous) {
        (NONE, _) | (UP, None) => {}
        (SUB, _) | (PAETH, None) => {
            // Paeth over a zero row picks the left neighbour, as Sub does.
            let mut left = [0u8; BPP];
            for pixel in pixels {
                for (x, a) in pixel.iter_mut().zip(&mut left) {
                    *x = x.wrapping_add(*a);
                    *a = *x;
                }
            }
        }
        (UP, Some(above)) => {
            for (x, b) in row.iter_mut().zip(above) {
                *x = x.wrapping_add(*b);
            }
        }
        (AVERAGE, above) => {
            let mut left = [0u8; BPP];
            for (i, pixel) in pixels.enumerate() {
                for (j, (x, a)) in pixel.iter_mut().zip(&mut left).enumerate() {
                    let b = above.map_or(0, |above| above[i * BPP + j]);
                    *x = x.wrapping_add(((u16::from(*a) + u16::from(b)) / 2) as u8);
                    *a = *x;
                }
            }
        }
        (PAETH, Some(above)) => {
            let (mut left, mut upper_left) = ([0u8; BPP], [0u8; BPP]);
            for (pixel, upper) in pixels.zip(above.chunks_exact(BPP)) {
                for j in 0..BPP {
                    pixel[j] = pixel[j].wrapping_add(paeth(left[j], upper[j], upper_left[j]));
                }
                left.copy_from_slice(pixel);
                upper_left.copy_from_slice(upper);
            }
        }
        _ => return None,
    }
    Some(())
}

/// The PNG specification's Paeth predictor: of the left (`a`), upper (`b`)
/// and upper-left (`c`) bytes, the nearest to `a + b - c`, ties going to
/// `a`, then `b`.
fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let (a16, b16, c16) = (i16::from(a), i16::from(b), i16::from(c));
    let pa = (b16 - c16).abs();
    let pb = (a16 - c16).abs();
    let pc = (a16 + b16 - 2 * c16).abs();
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

#[cfg(target_arch = "x86_64")]
mod wavefront {
    //! Four Paeth rows of three- or four-byte pixels at once, in AVX2: row
    //! `k` of the four in the `k`-th 64-bit lane (its pixel's bytes
    //! widened to 16 bits; the fourth junk for RGB, and never stored), a
    //! pixel behind row `k - 1`, so the pixels above-left and above it
    //! were computed by the lane below one and two steps earlier.

    use std::arch::x86_64::*;

    pub const ROWS: usize = 4;

    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx2")
    }

    /// Unfilters rows `y..y + 4` of `buffer` (rows of `stride` bytes, a
    /// filter byte first), all Paeth, the row above `y` (if any) being
    /// unfiltered. Panics unless AVX2 is there, `bpp` is 3 or 4 and the
    /// rows exist.
    pub fn paeth(buffer: &mut [u8], y: usize, stride: usize, bpp: usize) {
        assert!(available() && (stride - 1).is_multiple_of(bpp));
        assert!(buffer.len() >= (y + ROWS) * stride);
        // SAFETY: AVX2 is there and the rows (and the one above) lie in
        // `buffer` (asserted).
        unsafe {
            match bpp {
                3 => paeth_rows::<3>(buffer, y, stride),
                4 => paeth_rows::<4>(buffer, y, stride),
                _ => panic!("no wavefront for {bpp}-byte pixels"),
            }
        }
    }

    /// Pixel at `at` as the low `BPP` bytes of a u32 (the others junk).
    #[inline]
    fn load<const BPP: usize>(buffer: &[u8], at: usize) -> u32 {
        match buffer.get(at..at + 4) {
            Some(bytes) => u32::from_le_bytes(bytes.try_into().expect("4 bytes")),
            // The image's very last pixel, with no byte after it.
            None => {
                let mut bytes = [0; 4];
                bytes[..BPP].copy_from_slice(&buffer[at..at + BPP]);
                u32::from_le_bytes(bytes)
            }
        }
    }

    #[target_feature(enable = "avx2")]
    fn paeth_rows<const BPP: usize>(buffer: &mut [u8], y: usize, stride: usize) {
        let width = (stride - 1) / BPP;
        let at = |row: usize, x: usize| row * stride + 1 + x * BPP;
        let widen = |v: u32| _mm256_cvtepu8_epi16(_mm_cvtsi32_si128(v as i32));
        let low_bytes = _mm256_set1_epi16(0xff);
        // Lane k: what row k computed one step ago (`current`) and two
        // steps ago (`earlier`); zero before its first pixel.
        let mut current = _mm256_setzero_si256();
        let mut earlier = _mm256_setzero_si256();
        for t in 0..width + ROWS - 1 {
            // Each row's left neighbour is what it computed last; its upper
            // and upper-left come from the row above (the lane below, one
            // lane up), row 0's from the unfiltered row above the four.
            let above = |x: Option<usize>| match (y.checked_sub(1), x) {
                (Some(row), Some(x)) if x < width => load::<BPP>(buffer, at(row, x)),
                _ => 0,
            };
            let up_one = |v: __m256i| _mm256_permute4x64_epi64::<0b10_01_00_00>(v);
            let a = current;
            let b = _mm256_blend_epi32::<0b11>(up_one(current), widen(above(Some(t))));
            let c = _mm256_blend_epi32::<0b11>(up_one(earlier), widen(above(t.checked_sub(1))));
            let filtered: [u32; ROWS] = std::array::from_fn(|k| match t.checked_sub(k) {
                Some(x) if x < width => load::<BPP>(buffer, at(y + k, x)),
                _ => 0,
            });
            // SAFETY: `filtered` is 16 bytes.
            let filtered = unsafe { _mm_loadu_si128(filtered.as_ptr().cast()) };
            let filtered = _mm256_cvtepu8_epi16(filtered);
            let pa = _mm256_abs_epi16(_mm256_sub_epi16(b, c));
            let pb = _mm256_abs_epi16(_mm256_sub_epi16(a, c));
            let pc = _mm256_abs_epi16(_mm256_add_epi16(
                _mm256_sub_epi16(b, c),
                _mm256_sub_epi16(a, c),
            ));
            let not_a = _mm256_or_si256(_mm256_cmpgt_epi16(pa, pb), _mm256_cmpgt_epi16(pa, pc));
            let b_or_c = _mm256_blendv_epi8(b, c, _mm256_cmpgt_epi16(pb, pc));
            let predicted = _mm256_blendv_epi8(a, b_or_c, not_a);
            let value = _mm256_and_si256(_mm256_add_epi16(filtered, predicted), low_bytes);
            // Lanes before their row's first pixel stay zero (their inputs
            // were all zero), so later rows see zeros left of pixel 0.
            earlier = current;
            current = value;
            let bytes = _mm_packus_epi16(
                _mm256_castsi256_si128(value),
                _mm256_extracti128_si256::<1>(value),
            );
            let mut out = [0u8; 4 * ROWS];
            // SAFETY: `out` is 16 bytes.
            unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), bytes) };
            for (k, pixel) in out.chunks_exact(4).enumerate() {
                if let Some(x) = t.checked_sub(k).filter(|&x| x < width) {
                    buffer[at(y + k, x)..][..BPP].copy_from_slice(&pixel[..BPP]);
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod wavefront {
    pub const ROWS: usize = 4;

    pub fn available() -> bool {
        false
    }

    pub fn paeth(_: &mut [u8], _: usize, _: usize, _: usize) {
        unreachable!("never available")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{general_decode, xorshift};

    /// A PNG of `width` x `height` 8-bit pixels of `color` whose rows carry
    /// `filters` (one per row) over seeded bytes: any bytes are valid
    /// filtered data, so every filter and every run of them is reachable.
    fn png_with_filters(width: u32, height: u32, color: u8, filters: &[u8], seed: u32) -> Vec<u8> {
        let bpp = if color == 6 { 4 } else { 3 };
        let stride = width as usize * bpp + 1;
        let mut raw: Vec<u8> = xorshift(seed)
            .take(stride * height as usize)
            .map(|x| x as u8)
            .collect();
        for (row, filter) in raw.chunks_exact_mut(stride).zip(filters) {
            row[0] = *filter;
        }
        let mut ihdr = Vec::new();
        ihdr.extend(width.to_be_bytes());
        ihdr.extend(height.to_be_bytes());
        ihdr.extend([8, color, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        for (kind, data) in [
            (b"IHDR", ihdr),
            (b"IDAT", fdeflate::compress_to_vec(&raw)),
            (b"IEND", Vec::new()),
        ] {
            png.extend((data.len() as u32).to_be_bytes());
            let mut chunk = kind.to_vec();
            chunk.extend(&data);
            png.extend(&chunk);
            png.extend(crc32fast::hash(&chunk).to_be_bytes());
        }
        png
    }

    /// Seeded row filters, Paeth more often than not so runs of every
    /// length (and a Paeth first row) occur.
    fn filters(height: u32, seed: u32) -> Vec<u8> {
        xorshift(seed)
            .take(height as usize)
            .map(|x| match x % 10 {
                0..=5 => PAETH,
                n => (n - 6) as u8,
            })
            .collect()
    }

    #[test]
    fn every_filter_and_run_matches_the_png_crate() {
        for color in [2, 6] {
            for (i, (width, height)) in [
                (1, 1),
                (1, 9),
                (2, 5),
                (3, 7),
                (5, 4),
                (17, 13),
                (64, 33),
                (700, 60),
            ]
            .into_iter()
            .enumerate()
            {
                let seed = 11 + i as u32;
                for filters in [vec![PAETH; height as usize], filters(height, seed)] {
                    let png = png_with_filters(width, height, color, &filters, seed);
                    let want = general_decode(&png, image::ImageFormat::Png);
                    let got = decode(&png, width, height).expect("decodes");
                    assert!(
                        got == want,
                        "colour {color}, {width}x{height}, filters {filters:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn damage_and_other_layouts_are_left_to_the_general_decoder() {
        let (width, height) = (9, 6);
        let good = png_with_filters(width, height, 6, &[PAETH; 6], 3);
        assert!(decode(&good, width, height).is_some());
        // A filter type that does not exist.
        let bad_filter = png_with_filters(width, height, 6, &[PAETH, PAETH, 5, 0, 0, 0], 3);
        assert!(decode(&bad_filter, width, height).is_none());
        // Cut inside the image data.
        assert!(decode(&good[..good.len() - 40], width, height).is_none());
        // Dimensions other than the caller's.
        assert!(decode(&good, width + 1, height).is_none());
        // Grayscale (colour type 0): not this path's.
        let mut gray = Vec::new();
        let mut encoder = png::Encoder::new(&mut gray, 4, 4);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        encoder
            .write_header()
            .unwrap()
            .write_image_data(&[7; 16])
            .unwrap();
        assert!(decode(&gray, 4, 4).is_none());
    }
}
