//! The common LZW TIFF (strips of 8-bit gray, RGB or RGBA pixels, with or
//! without the horizontal predictor) decoded strip by strip with our LZW
//! decoder ([`crate::lzw`]) straight into the RGB image. The tiff crate
//! decodes those strips with weezl 0.1, a third slower, into a buffer of
//! its own, which the image crate then copies and converts again
//! (docs/performance.md, 2026-11-30). Anything else (tiles, planes, other
//! compressions or depths, a strip that does not decode whole) goes back to
//! the general decoder, which reports errors the usual way.

use std::io::Cursor;
use std::ops::Range;

use image::RgbImage;
use tiff::decoder::Decoder;
use tiff::tags::Tag;

use crate::lzw::{Dialect, LzwDecoder};

/// TIFF tag values this path accepts.
const COMPRESSION_LZW: u16 = 5;
const PHOTOMETRIC_BLACK_IS_ZERO: u16 = 1;
const PHOTOMETRIC_RGB: u16 = 2;
const PREDICTOR_NONE: u16 = 1;
const PREDICTOR_HORIZONTAL: u16 = 2;

/// How the strips of a TIFF this path decodes are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layout {
    width: usize,
    height: usize,
    /// 1 (gray), 3 (RGB) or 4 (RGB and an extra sample, dropped).
    samples: usize,
    horizontal_predictor: bool,
    rows_per_strip: usize,
    /// Where each strip's compressed bytes are in the file.
    strips: Vec<Range<usize>>,
}

/// Decodes `bytes`, a TIFF of `width` x `height`, to RGB before any turn
/// its orientation asks for; `None` when the file is not one this path
/// handles or does not decode whole.
pub fn decode(bytes: &[u8], width: u32, height: u32) -> Option<RgbImage> {
    let layout = layout(bytes)?;
    if (layout.width, layout.height) != (width as usize, height as usize) {
        return None;
    }
    let row_in = layout.width * layout.samples;
    let mut rgb = vec![0u8; layout.width * layout.height * 3];
    let mut lzw = LzwDecoder::new();
    let mut rows_done = 0;
    for strip in &layout.strips {
        let rows = layout.rows_per_strip.min(layout.height - rows_done);
        if rows == 0 {
            break;
        }
        let data = lzw
            .decode(Dialect::Tiff, &bytes[strip.clone()], rows * row_in)
            .ok()?;
        if data.len() != rows * row_in {
            return None;
        }
        let out_rows = &mut rgb[rows_done * layout.width * 3..][..rows * layout.width * 3];
        for (row, out) in data
            .chunks_exact(row_in)
            .zip(out_rows.chunks_exact_mut(layout.width * 3))
        {
            write_row(row, layout.samples, layout.horizontal_predictor, out);
        }
        rows_done += rows;
    }
    if rows_done != layout.height {
        return None;
    }
    RgbImage::from_raw(width, height, rgb)
}

/// One row of `samples`-sample pixels (differences from the pixel to the
/// left when `predicted`) into 8-bit RGB.
fn write_row(row: &[u8], samples: usize, predicted: bool, out: &mut [u8]) {
    if samples == 3 && !predicted {
        // The common case is already RGB.
        out.copy_from_slice(row);
        return;
    }
    let mut previous = [0u8; 4];
    for (pixel, rgb) in row.chunks_exact(samples).zip(out.chunks_exact_mut(3)) {
        let mut value = [0u8; 4];
        for s in 0..samples {
            value[s] = if predicted {
                pixel[s].wrapping_add(previous[s])
            } else {
                pixel[s]
            };
        }
        previous = value;
        if samples == 1 {
            rgb.fill(value[0]);
        } else {
            rgb.copy_from_slice(&value[..3]);
        }
    }
}

/// The strip layout of the first image in `bytes`, if it is one this path
/// decodes.
fn layout(bytes: &[u8]) -> Option<Layout> {
    let mut decoder = Decoder::new(Cursor::new(bytes)).ok()?;
    let mut tag = |tag: Tag| decoder.find_tag_unsigned::<u32>(tag).ok();
    let compression = tag(Tag::Compression)??;
    let photometric = tag(Tag::PhotometricInterpretation)??;
    let samples = tag(Tag::SamplesPerPixel)?.unwrap_or(1) as usize;
    let predictor = tag(Tag::Predictor)?.unwrap_or(u32::from(PREDICTOR_NONE));
    let planar = tag(Tag::PlanarConfiguration)?.unwrap_or(1);
    let fill_order = tag(Tag::FillOrder)?.unwrap_or(1);
    let tiled = tag(Tag::TileWidth)?.is_some();
    let (width, height) = decoder.dimensions().ok()?;
    let rows_per_strip = decoder
        .find_tag_unsigned::<u32>(Tag::RowsPerStrip)
        .ok()?
        .unwrap_or(height)
        .min(height);
    let depths = decoder
        .find_tag_unsigned_vec::<u16>(Tag::BitsPerSample)
        .ok()??;
    // One per sample; 1 (unsigned integers) when absent.
    let formats = decoder
        .find_tag_unsigned_vec::<u16>(Tag::SampleFormat)
        .ok()?
        .unwrap_or_default();
    let color_fits = match photometric as u16 {
        PHOTOMETRIC_BLACK_IS_ZERO => samples == 1,
        PHOTOMETRIC_RGB => matches!(samples, 3 | 4),
        _ => false,
    };
    let handled = compression == u32::from(COMPRESSION_LZW)
        && color_fits
        && (predictor == u32::from(PREDICTOR_NONE) || predictor == u32::from(PREDICTOR_HORIZONTAL))
        && planar == 1
        && fill_order == 1
        && formats.iter().all(|&f| f == 1)
        && !tiled
        && depths.len() == samples
        && depths.iter().all(|&d| d == 8)
        && width > 0
        && rows_per_strip > 0;
    if !handled {
        return None;
    }
    let offsets = decoder
        .find_tag_unsigned_vec::<u64>(Tag::StripOffsets)
        .ok()??;
    let counts = decoder
        .find_tag_unsigned_vec::<u64>(Tag::StripByteCounts)
        .ok()??;
    let needed = height.div_ceil(rows_per_strip) as usize;
    if offsets.len() < needed || counts.len() < needed {
        return None;
    }
    let strips = offsets
        .iter()
        .zip(&counts)
        .take(needed)
        .map(|(&offset, &count)| {
            let start = usize::try_from(offset).ok()?;
            let end = start.checked_add(usize::try_from(count).ok()?)?;
            (end <= bytes.len()).then_some(start..end)
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Layout {
        width: width as usize,
        height: height as usize,
        samples,
        horizontal_predictor: predictor == u32::from(PREDICTOR_HORIZONTAL),
        rows_per_strip: rows_per_strip as usize,
        strips,
    })
}

#[cfg(test)]
mod tests {
    use image::{ImageDecoder, ImageFormat, ImageReader};
    use tiff::encoder::{colortype, Compression, Predictor, TiffEncoder};

    use super::*;
    use crate::test_support::{general_decode, xorshift};

    /// Pixels with gradients (which the predictor shrinks) and noise.
    fn pixels(len: usize, seed: u32) -> Vec<u8> {
        (0..len)
            .zip(xorshift(seed))
            .map(|(i, state)| {
                if i % 7 < 4 {
                    (i / 5) as u8
                } else {
                    (state >> 11) as u8
                }
            })
            .collect()
    }

    fn encode<C: colortype::ColorType<Inner = u8>>(
        width: u32,
        height: u32,
        rows_per_strip: u32,
        predictor: Predictor,
        compression: Compression,
    ) -> Vec<u8> {
        let data = pixels(
            width as usize * height as usize * C::BITS_PER_SAMPLE.len(),
            width,
        );
        let mut file = Cursor::new(Vec::new());
        let mut encoder = TiffEncoder::new(&mut file)
            .expect("encoder")
            .with_compression(compression)
            .with_predictor(predictor);
        let mut image = encoder.new_image::<C>(width, height).expect("image");
        image
            .rows_per_strip(rows_per_strip)
            .expect("rows per strip");
        image.write_data(&data).expect("writes");
        file.into_inner()
    }

    fn dimensions(bytes: &[u8]) -> (u32, u32) {
        ImageReader::with_format(Cursor::new(bytes), ImageFormat::Tiff)
            .into_decoder()
            .expect("decoder")
            .dimensions()
    }

    #[test]
    fn matches_the_general_decoder_on_every_layout_it_takes() {
        for (width, height, rows) in [(1, 1, 1), (17, 9, 4), (64, 33, 64), (301, 47, 5)] {
            for predictor in [Predictor::None, Predictor::Horizontal] {
                let files = [
                    encode::<colortype::RGB8>(width, height, rows, predictor, Compression::Lzw),
                    encode::<colortype::RGBA8>(width, height, rows, predictor, Compression::Lzw),
                    encode::<colortype::Gray8>(width, height, rows, predictor, Compression::Lzw),
                ];
                for (kind, bytes) in ["rgb", "rgba", "gray"].iter().zip(&files) {
                    let got = decode(bytes, width, height)
                        .unwrap_or_else(|| panic!("{kind} {width}x{height} {predictor:?} taken"));
                    assert!(
                        got == general_decode(bytes, ImageFormat::Tiff),
                        "{kind} {width}x{height} rows {rows} {predictor:?}: pixels differ"
                    );
                }
            }
        }
    }

    #[test]
    fn leaves_other_tiffs_to_the_general_decoder() {
        let uncompressed =
            encode::<colortype::RGB8>(20, 10, 3, Predictor::None, Compression::Uncompressed);
        let sixteen_bit = {
            let data: Vec<u16> = (0..20 * 10 * 3).map(|i| i as u16 * 97).collect();
            let mut file = Cursor::new(Vec::new());
            TiffEncoder::new(&mut file)
                .expect("encoder")
                .with_compression(Compression::Lzw)
                .write_image::<colortype::RGB16>(20, 10, &data)
                .expect("writes");
            file.into_inner()
        };
        for bytes in [uncompressed, sixteen_bit] {
            assert_eq!(dimensions(&bytes), (20, 10));
            assert!(decode(&bytes, 20, 10).is_none());
        }
    }

    #[test]
    fn a_strip_cut_short_goes_back_to_the_general_decoder() {
        let bytes = encode::<colortype::RGB8>(64, 64, 64, Predictor::None, Compression::Lzw);
        let strips = layout(&bytes).expect("taken").strips;
        assert_eq!(strips.len(), 1);
        // Garbage in place of the strip's second half.
        let mut broken = bytes.clone();
        let half = strips[0].start + strips[0].len() / 2;
        broken[half..strips[0].end].fill(0xFF);
        assert!(decode(&broken, 64, 64).is_none());
        assert!(decode(&bytes, 64, 64).is_some());
    }
}
