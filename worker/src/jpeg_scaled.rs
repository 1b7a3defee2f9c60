//! Big JPEGs decoded at 1/2, 1/4 or 1/8 scale straight from the DCT
//! coefficients (the trick Pillow's `draft` and libjpeg use): a 12-megapixel
//! photo bound for a 256-pixel input never exists at full size, which saves
//! most of the IDCT, colour conversion, memory and resize work.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, RgbImage};
use jpeg_decoder::{CodingProcess, Decoder, ImageInfo, PixelFormat};

use crate::jpeg_dc_scans::without_ac_scans;
use crate::jpeg_reduced;

/// By how much [`decode_scaled`] shrinks each side of a `width` x `height`
/// JPEG (1, 2, 4 or 8): jpeg-decoder's choice of IDCT size for a shorter
/// side of at least `min_shorter`. 1 where the general decoder is used.
pub fn scale_denominator(width: u32, height: u32, min_shorter: u32) -> u32 {
    let shorter = width.min(height);
    if shorter < min_shorter.saturating_mul(2) {
        return 1;
    }
    // jpeg-decoder's output side at IDCT size `s` (of 8) is ceil(side * s / 8).
    [1, 2, 4]
        .into_iter()
        .find(|s| (u64::from(shorter) * s).div_ceil(8) >= u64::from(min_shorter))
        .map_or(1, |s| (8 / s) as u32)
}

/// Decodes `bytes` (a JPEG of `width` x `height`) so that its shorter side
/// stays at least `min_shorter`, with EXIF orientation applied. `None` when
/// no reduction is possible or the file is something this path leaves to the
/// general decoder (16-bit, or anything jpeg-decoder rejects), so the
/// caller falls back and reports errors the usual way.
pub fn decode_scaled(
    bytes: &[u8],
    width: u32,
    height: u32,
    min_shorter: u32,
    max_alloc: u64,
) -> Option<RgbImage> {
    // Under 2x the target nothing can be skipped; the general decoder is
    // faster at full scale.
    if width.min(height) < min_shorter.saturating_mul(2) {
        return None;
    }
    // jpeg-decoder picks the smallest scale reaching the request on *either*
    // axis, so only the shorter axis is constrained.
    let target = u16::try_from(min_shorter).ok()?;
    let request = if width <= height {
        (target, u16::MAX)
    } else {
        (u16::MAX, target)
    };
    let (decoder, info, size) = open(bytes, max_alloc, request)?;
    if !matches!(
        info.pixel_format,
        PixelFormat::RGB24 | PixelFormat::L8 | PixelFormat::CMYK32
    ) {
        return None;
    }
    // The IDCT size jpeg-decoder picked: pixels per block side.
    let scale = 8 / scale_denominator(width, height, min_shorter);
    let eighth = scale == 1;
    // Our decoder gives jpeg-decoder's pixels for most JPEGs
    // (crate::jpeg_reduced), without its costs; the size check guards
    // against the two disagreeing on the scale.
    let own = jpeg_reduced::decode(bytes, scale as usize).filter(|own| {
        (own.width, own.height) == (u32::from(size.0), u32::from(size.1))
            && usize::from(own.channels) == info.pixel_format.pixel_bytes()
    });
    // EXIF as read with the header (it comes before the frame), or after
    // a whole decode, which also finds it anywhere else.
    let mut exif = decoder.exif_data().map(<[u8]>::to_vec);
    let (pixels, (out_w, out_h)) = match own {
        Some(own) => (own.pixels, size),
        None => {
            // Else, at 1/8 scale, a progressive JPEG gives jpeg-decoder
            // the same pixels without its AC scans (crate::jpeg_dc_scans).
            let dc_scans = (eighth && info.coding_process == CodingProcess::DctProgressive)
                .then(|| without_ac_scans(bytes))
                .flatten();
            let (mut decoder, size) = match &dc_scans {
                Some(dc_scans) => {
                    let (decoder, _, size) = open(dc_scans, max_alloc, request)?;
                    (decoder, size)
                }
                None => (decoder, size),
            };
            let pixels = decoder.decode().ok()?;
            exif = decoder.exif_data().map(<[u8]>::to_vec);
            (pixels, size)
        }
    };
    let (out_w, out_h) = (u32::from(out_w), u32::from(out_h));
    if out_w.min(out_h) < min_shorter {
        return None;
    }
    let mut image = match info.pixel_format {
        PixelFormat::RGB24 => DynamicImage::ImageRgb8(RgbImage::from_raw(out_w, out_h, pixels)?),
        PixelFormat::CMYK32 => {
            DynamicImage::ImageRgb8(RgbImage::from_raw(out_w, out_h, cmyk_to_rgb(&pixels))?)
        }
        _ => DynamicImage::ImageLuma8(GrayImage::from_raw(out_w, out_h, pixels)?),
    };
    if let Some(orientation) = exif.as_deref().and_then(Orientation::from_exif_chunk) {
        image.apply_orientation(orientation);
    }
    Some(match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.into_rgb8(),
    })
}

/// A jpeg-decoder with its header read and its scale set: the header's
/// facts and the output size.
type Opened<'a> = (Decoder<Cursor<&'a [u8]>>, ImageInfo, (u16, u16));

/// [`Opened`] for `bytes`, scaled for `request` (width, height).
fn open(bytes: &[u8], max_alloc: u64, (request_w, request_h): (u16, u16)) -> Option<Opened<'_>> {
    let mut decoder = Decoder::new(Cursor::new(bytes));
    decoder.set_max_decoding_buffer_size(usize::try_from(max_alloc).unwrap_or(usize::MAX));
    decoder.read_info().ok()?;
    let info = decoder.info()?;
    let size = decoder.scale(request_w, request_h).ok()?;
    Some((decoder, info, size))
}

/// jpeg-decoder's CMYK (ink amounts: it undoes Adobe's inverted samples,
/// and turns YCCK into CMY plus K) to RGB the way the general decoder
/// (zune-jpeg) does, so a big CMYK photo gets the colours a small one
/// does: each of R, G and B is the inverted ink times the inverted K,
/// over 255, with zune-jpeg's rounding.
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let times = |a: u8, b: u8| {
        let t = i32::from(a) * i32::from(b) + 128;
        ((t + (t >> 8)) >> 8) as u8
    };
    let mut rgb = Vec::with_capacity(cmyk.len() / 4 * 3);
    for pixel in cmyk.chunks_exact(4) {
        let white = 255 - pixel[3];
        rgb.extend_from_slice(&[
            times(255 - pixel[0], white),
            times(255 - pixel[1], white),
            times(255 - pixel[2], white),
        ]);
    }
    rgb
}
