//! The first frame of a GIF decoded by our LZW decoder ([`crate::lzw`])
//! and mapped through its palette straight into RGB. The general path
//! (image and gif crates) decodes with weezl 0.1, expands every pixel to
//! RGBA through the palette and then drops the alpha again: on the gray
//! GIFs of our mixed set 38% of the time went to weezl and 13% to the two
//! expansions (docs/performance.md, 2026-11-30).
//!
//! The result is the general decoder's: the frame placed on the logical
//! screen, black outside it and where an index is past the palette, and
//! transparent pixels in their palette colour (the alpha the general path
//! drops). A frame whose data does not decode whole goes back to the
//! general decoder, which reports errors the usual way.

use std::io::Cursor;

use gif::DecodeOptions;
use image::RgbImage;

use crate::lzw::{Dialect, LzwDecoder};

/// Decodes the first frame of `bytes`, a GIF whose logical screen is
/// `width` x `height`; `None` when it does not decode whole here.
pub fn decode(bytes: &[u8], width: u32, height: u32) -> Option<RgbImage> {
    let mut options = DecodeOptions::new();
    // Hands over the frame's LZW bytes (after its minimum code size)
    // instead of decoding them.
    options.skip_frame_decoding(true);
    let mut decoder = options.read_info(Cursor::new(bytes)).ok()?;
    if (u32::from(decoder.width()), u32::from(decoder.height())) != (width, height) {
        return None;
    }
    let global_palette = decoder.global_palette().map(<[u8]>::to_vec);
    let frame = decoder.read_next_frame().ok()??;
    let (&min_code_size, data) = frame.buffer.split_first()?;
    let palette = frame.palette.as_deref().or(global_palette.as_deref())?;
    let colours = colour_table(palette);
    let frame_width = usize::from(frame.width);
    let frame_height = usize::from(frame.height);
    // The decode budget was checked against the screen; a frame larger than
    // it (up to 65535 x 65535) is the general decoder's to refuse.
    if frame_width * frame_height > width as usize * height as usize {
        return None;
    }
    let mut lzw = LzwDecoder::new();
    let indices = lzw
        .decode(
            Dialect::Gif { min_code_size },
            data,
            frame_width * frame_height,
        )
        .ok()?;
    if indices.len() != frame_width * frame_height {
        return None;
    }

    let (width, height) = (width as usize, height as usize);
    let mut rgb = vec![0u8; width * height * 3];
    let (left, top) = (usize::from(frame.left), usize::from(frame.top));
    // Columns of the frame inside the screen.
    let columns = frame_width.min(width.saturating_sub(left));
    for (row, line) in
        display_rows(frame_height, frame.interlaced).zip(indices.chunks_exact(frame_width))
    {
        let y = top + row;
        if y >= height || columns == 0 {
            continue;
        }
        let out = &mut rgb[(y * width + left) * 3..][..columns * 3];
        for (pixel, &index) in out.chunks_exact_mut(3).zip(&line[..columns]) {
            pixel.copy_from_slice(&colours[usize::from(index)]);
        }
    }
    RgbImage::from_raw(width as u32, height as u32, rgb)
}

/// The RGB of each of the 256 indices; black past the palette's end.
fn colour_table(palette: &[u8]) -> [[u8; 3]; 256] {
    let mut table = [[0u8; 3]; 256];
    for (entry, colour) in table.iter_mut().zip(palette.chunks_exact(3)) {
        entry.copy_from_slice(colour);
    }
    table
}

/// The frame row each decoded row of pixels belongs to: in order, or in
/// GIF's four interlace passes (every 8th row from 0, every 8th from 4,
/// every 4th from 2, every 2nd from 1).
fn display_rows(height: usize, interlaced: bool) -> Box<dyn Iterator<Item = usize>> {
    if interlaced {
        Box::new(
            [(0, 8), (4, 8), (2, 4), (1, 2)]
                .into_iter()
                .flat_map(move |(first, step)| (first..height).step_by(step)),
        )
    } else {
        Box::new(0..height)
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use gif::{Encoder, Frame};
    use image::ImageFormat;

    use super::*;
    use crate::test_support::{general_decode, xorshift};

    /// A `width` x `height` GIF of one frame (at `left`, `top`, of the given
    /// size) with indices from a gradient and noise, some past `colours`.
    fn gif(
        (width, height): (u16, u16),
        (left, top, frame_width, frame_height): (u16, u16, u16, u16),
        colours: usize,
        interlaced: bool,
        transparent: Option<u8>,
    ) -> Vec<u8> {
        let palette: Vec<u8> = (0..colours * 3).map(|i| (i * 37 % 256) as u8).collect();
        let indices: Vec<u8> = (0..usize::from(frame_width) * usize::from(frame_height))
            .zip(xorshift(7))
            .map(|(i, state)| {
                if i % 5 < 3 {
                    (i / 3 % 256) as u8
                } else {
                    (state >> 9) as u8
                }
            })
            .collect();
        let mut bytes = Vec::new();
        {
            let mut encoder = Encoder::new(&mut bytes, width, height, &palette).expect("encoder");
            let frame = Frame {
                left,
                top,
                width: frame_width,
                height: frame_height,
                interlaced,
                transparent,
                buffer: Cow::Owned(indices),
                ..Frame::default()
            };
            encoder.write_frame(&frame).expect("frame");
        }
        bytes
    }

    #[test]
    fn matches_the_general_decoder() {
        for (screen, frame) in [
            ((1, 1), (0, 0, 1, 1)),
            ((37, 23), (0, 0, 37, 23)),
            ((64, 40), (5, 3, 30, 20)),
            ((64, 40), (50, 30, 30, 20)),
            ((20, 20), (0, 4, 20, 16)),
        ] {
            for colours in [2, 100, 256] {
                for interlaced in [false, true] {
                    for transparent in [None, Some(1)] {
                        let bytes = gif(screen, frame, colours, interlaced, transparent);
                        let (width, height) = (u32::from(screen.0), u32::from(screen.1));
                        let got = decode(&bytes, width, height).unwrap_or_else(|| {
                            panic!("{screen:?} {frame:?} {colours} {interlaced} taken")
                        });
                        assert!(
                            got == general_decode(&bytes, ImageFormat::Gif),
                            "{screen:?} frame {frame:?} colours {colours} interlaced \
                             {interlaced} transparent {transparent:?}: pixels differ"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn frames_cut_short_or_larger_than_the_screen_go_back_to_the_general_decoder() {
        let bytes = gif((64, 64), (0, 0, 64, 64), 256, false, None);
        assert!(decode(&bytes, 64, 64).is_some());
        // The last third of the file (LZW data and trailer) gone.
        let cut = &bytes[..bytes.len() * 2 / 3];
        assert!(decode(cut, 64, 64).is_none());
        // More pixels in the frame than on the screen the budget was for.
        let larger = gif((8, 8), (0, 0, 9, 8), 256, false, None);
        assert!(decode(&larger, 8, 8).is_none());
    }
}
