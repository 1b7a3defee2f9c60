//! LZW decoding for TIFF strips and GIF frames, into a buffer of known size.
//!
//! Every dictionary string is a run of bytes already written to the output:
//! a new entry is the previous code's string plus the first byte of the
//! current one, which follow each other in the output. So an entry is an
//! (offset, length) into the output and decoding a code is one copy from
//! earlier output, with no string table and no reversed writes; symbols
//! too, from the alphabet kept in front of the output, so a code takes one
//! well-predicted branch whether it is a symbol or a string. On the strips
//! of our mixed-format bench set this was about 320 MB/s where weezl 0.1
//! (which the tiff and gif crates use) does 220 and weezl 0.2 does 270,
//! and with the one branch a TIFF's whole decode is another quarter
//! shorter (docs/performance.md, 2026-11-30).

/// The two LZW dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// TIFF: codes packed most significant bit first, 8-bit symbols, and the
    /// code width grows one code early ("early change").
    Tiff,
    /// GIF: codes packed least significant bit first, `min_code_size`-bit
    /// symbols, width grows when the next code needs it.
    Gif { min_code_size: u8 },
}

/// Why a stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LzwError {
    #[error("LZW code {code} is not in the dictionary (next free code {next})")]
    UnknownCode { code: u16, next: u16 },
    #[error("LZW minimum code size {0} is outside 2..=8")]
    BadCodeSize(u8),
}

/// The largest code of any LZW stream (12-bit codes).
const MAX_CODES: usize = 4096;
/// Bytes past the output that a short copy may scribble on.
const SLACK: usize = 16;

/// Decodes LZW streams, keeping its buffers from one stream to the next
/// (a TIFF has one stream per strip).
#[derive(Debug, Default)]
pub struct LzwDecoder {
    /// The alphabet (one byte per symbol), then the output, then
    /// [`SLACK`]: with the alphabet in front, a symbol is a string in the
    /// buffer like any other code's, and every code is one copy.
    buffer: Vec<u8>,
    /// (offset in `buffer`, length) of every code's string.
    entries: Vec<(u32, u32)>,
}

impl LzwDecoder {
    pub fn new() -> Self {
        LzwDecoder::default()
    }

    /// Decodes `input` up to `len` bytes, stopping at the end-of-information
    /// code, at the end of the input, or once `len` bytes are out: a TIFF
    /// strip or GIF frame may carry codes past its pixels, which decoders
    /// ignore. Fewer than `len` bytes means the stream ended early; the
    /// caller decides whether that is an error.
    pub fn decode(
        &mut self,
        dialect: Dialect,
        input: &[u8],
        len: usize,
    ) -> Result<&[u8], LzwError> {
        let symbol_bits = match dialect {
            Dialect::Tiff => 8,
            Dialect::Gif { min_code_size } if (2..=8).contains(&min_code_size) => min_code_size,
            Dialect::Gif { min_code_size } => return Err(LzwError::BadCodeSize(min_code_size)),
        };
        let clear = 1u16 << symbol_bits;
        let end = clear + 1;
        let first_free = clear + 2;
        // TIFF widens one code early: at 511, 1023 and 2047 instead of 512...
        let early = u16::from(dialect == Dialect::Tiff);
        let symbols = usize::from(clear);
        let limit = symbols + len;
        let buffer = &mut self.buffer;
        // Grown, never shrunk or cleared: every output byte is written
        // before it is read, so the last stream's bytes do no harm.
        if buffer.len() < limit + SLACK {
            buffer.resize(limit + SLACK, 0);
        }
        for (s, byte) in buffer[..symbols].iter_mut().enumerate() {
            *byte = s as u8;
        }
        let entries = &mut self.entries;
        entries.resize(MAX_CODES, (0, 0));
        for (s, entry) in entries[..symbols].iter_mut().enumerate() {
            *entry = (s as u32, 1);
        }

        let mut bits = BitReader::new(input, dialect);
        let mut width = u32::from(symbol_bits) + 1;
        let mut next = first_free;
        // The previous code's string in the output, once there is one since
        // the last clear code.
        let mut previous: Option<(usize, usize)> = None;
        let mut here = symbols;
        while here < limit {
            let Some(code) = bits.read(width) else {
                break;
            };
            // Symbols and defined strings alike are one copy from earlier
            // in the buffer, so the common case is one well-predicted
            // branch (a separate one for symbols was taken at random).
            let length = if code < next && code.wrapping_sub(clear) >= 2 {
                let (start, length) = entries[usize::from(code)];
                copy_earlier(
                    buffer,
                    start as usize,
                    here,
                    (length as usize).min(limit - here),
                )
            } else if code == clear {
                width = u32::from(symbol_bits) + 1;
                next = first_free;
                previous = None;
                continue;
            } else if code == end {
                break;
            } else if let (true, Some((start, length))) = (code == next, previous) {
                // The string being defined: the previous one plus its own
                // first byte (the "KwKwK" case), copied forwards byte by byte
                // since it overlaps itself.
                let length = (length + 1).min(limit - here);
                for i in 0..length {
                    buffer[here + i] = buffer[start + i];
                }
                length
            } else {
                return Err(LzwError::UnknownCode { code, next });
            };
            if let Some((start, length)) = previous {
                if usize::from(next) < MAX_CODES {
                    // The previous string and this one's first byte lie next
                    // to each other in the output. Offsets fit in u32 for any
                    // image the decode budget admits.
                    entries[usize::from(next)] = (start as u32, (length + 1) as u32);
                    next += 1;
                    if u32::from(next + early) >= 1 << width && width < 12 {
                        width += 1;
                    }
                }
            }
            previous = Some((here, length));
            here += length;
        }
        Ok(&self.buffer[symbols..here])
    }
}

/// Copies `buffer[start..start + length]` to `buffer[here..]`, where
/// `start + length <= here` and `here + length + SLACK` fits; returns
/// `length`.
#[inline]
fn copy_earlier(buffer: &mut [u8], start: usize, here: usize, length: usize) -> usize {
    // Short strings, the most common on photos: one 16-byte copy whose bytes
    // past `length` the codes that follow overwrite.
    if length <= 16 && start + 16 <= here {
        let chunk: [u8; 16] = buffer[start..start + 16].try_into().expect("16 bytes");
        buffer[here..here + 16].copy_from_slice(&chunk);
    } else {
        let (before, after) = buffer.split_at_mut(here);
        after[..length].copy_from_slice(&before[start..start + length]);
    }
    length
}

/// Codes of `width` bits from a byte stream, in either packing order.
struct BitReader<'a> {
    input: &'a [u8],
    position: usize,
    /// Pending bits: the next code at the top (MSB order) or the bottom
    /// (LSB order).
    buffer: u64,
    count: u32,
    msb_first: bool,
}

impl<'a> BitReader<'a> {
    fn new(input: &'a [u8], dialect: Dialect) -> Self {
        BitReader {
            input,
            position: 0,
            buffer: 0,
            count: 0,
            msb_first: dialect == Dialect::Tiff,
        }
    }

    #[inline]
    fn read(&mut self, width: u32) -> Option<u16> {
        if self.count < width {
            self.refill();
            if self.count < width {
                return None;
            }
        }
        let code = if self.msb_first {
            let code = self.buffer >> (64 - width);
            self.buffer <<= width;
            code
        } else {
            let code = self.buffer & ((1 << width) - 1);
            self.buffer >>= width;
            code
        };
        self.count -= width;
        Some(code as u16)
    }

    #[inline]
    fn refill(&mut self) {
        // Eight bytes at once while they last: the buffer tops up to at
        // least 56 bits, taking whole bytes only (the bits of a byte not
        // taken are taken again, in the same place, next time).
        if let Some(word) = self.input.get(self.position..self.position + 8) {
            let word: [u8; 8] = word.try_into().expect("8 bytes");
            if self.msb_first {
                self.buffer |= u64::from_be_bytes(word) >> self.count;
            } else {
                self.buffer |= u64::from_le_bytes(word) << self.count;
            }
            self.position += ((63 - self.count) / 8) as usize;
            self.count |= 56;
            return;
        }
        while self.count <= 56 {
            let Some(&byte) = self.input.get(self.position) else {
                return;
            };
            self.position += 1;
            if self.msb_first {
                self.buffer |= u64::from(byte) << (56 - self.count);
            } else {
                self.buffer |= u64::from(byte) << self.count;
            }
            self.count += 8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::xorshift;

    /// Bytes that compress: runs, repeats and noise.
    fn sample(len: usize, seed: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut random = xorshift(seed);
        while out.len() < len {
            let state = random.next().expect("endless");
            match state % 4 {
                0 => out.extend(std::iter::repeat_n(
                    (state >> 8) as u8,
                    (state % 9) as usize,
                )),
                1 if out.len() > 40 => {
                    let from = out.len() - 40;
                    out.extend_from_within(from..from + (state % 30) as usize);
                }
                _ => out.push((state >> 16) as u8),
            }
        }
        out.truncate(len);
        out
    }

    fn check(dialect: Dialect, data: &[u8]) {
        let encoded = match dialect {
            Dialect::Tiff => weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8)
                .encode(data)
                .expect("encodes"),
            Dialect::Gif { min_code_size } => {
                weezl::encode::Encoder::new(weezl::BitOrder::Lsb, min_code_size)
                    .encode(data)
                    .expect("encodes")
            }
        };
        let mut decoder = LzwDecoder::new();
        let out = decoder
            .decode(dialect, &encoded, data.len())
            .expect("decodes");
        assert!(out == data, "{dialect:?}: decoded bytes differ");
        // Asked for less than the stream holds, it stops there.
        let half = data.len() / 2;
        let out = decoder.decode(dialect, &encoded, half).expect("decodes");
        assert!(out == &data[..half], "{dialect:?}: first half differs");
    }

    #[test]
    fn decodes_what_weezl_encodes() {
        // Long enough to fill the 12-bit dictionary and clear it again.
        for (i, len) in [0, 1, 2, 3, 100, 5000, 300_000].into_iter().enumerate() {
            let data = sample(len, i as u32 + 1);
            check(Dialect::Tiff, &data);
            check(Dialect::Gif { min_code_size: 8 }, &data);
            let small: Vec<u8> = data.iter().map(|b| b & 3).collect();
            check(Dialect::Gif { min_code_size: 2 }, &small);
            let seven: Vec<u8> = data.iter().map(|b| b & 127).collect();
            check(Dialect::Gif { min_code_size: 7 }, &seven);
        }
    }

    #[test]
    fn refuses_codes_outside_the_dictionary() {
        // 9-bit MSB codes: clear (256), then 300, which is not defined yet.
        let stream = [0b1000_0000, 0b0100_1011, 0b0000_0000, 0];
        let mut decoder = LzwDecoder::new();
        assert_eq!(
            decoder.decode(Dialect::Tiff, &stream, 16),
            Err(LzwError::UnknownCode {
                code: 300,
                next: 258
            })
        );
        assert_eq!(
            decoder.decode(Dialect::Gif { min_code_size: 9 }, &stream, 16),
            Err(LzwError::BadCodeSize(9))
        );
    }

    #[test]
    fn a_truncated_stream_decodes_what_it_holds() {
        let data = sample(10_000, 9);
        let encoded = weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8)
            .encode(&data)
            .expect("encodes");
        let mut decoder = LzwDecoder::new();
        let out = decoder
            .decode(Dialect::Tiff, &encoded[..encoded.len() / 2], data.len())
            .expect("decodes");
        assert!(!out.is_empty() && out.len() < data.len());
        assert!(out == &data[..out.len()]);
    }
}
