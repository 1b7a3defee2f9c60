//! Upload bytes to 8-bit RGB pixels, within a pixel budget.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use crate::error::ClassifyError;
use crate::jpeg_scaled::decode_scaled;

/// The formats the service accepts; anything else is refused before decoding.
pub const SUPPORTED_FORMATS: &[ImageFormat] = &[
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::WebP,
    ImageFormat::Gif,
    ImageFormat::Bmp,
    ImageFormat::Tiff,
];

/// Default pixel budget: 50 megapixels covers any camera photo while keeping
/// one decode under ~200 MB of memory.
pub const DEFAULT_MAX_PIXELS: u64 = 50_000_000;

/// Recognises the format from the leading bytes (never from a file name or a
/// client's content type, which can lie).
pub fn sniff_format(bytes: &[u8]) -> Result<ImageFormat, ClassifyError> {
    if bytes.is_empty() {
        return Err(ClassifyError::Empty);
    }
    match image::guess_format(bytes) {
        Ok(format) if SUPPORTED_FORMATS.contains(&format) => Ok(format),
        _ => Err(ClassifyError::UnsupportedFormat),
    }
}

/// The MIME type of a supported format, for stored objects.
pub fn mime_type(format: ImageFormat) -> &'static str {
    format.to_mime_type()
}

/// Decodes any supported image to 8-bit RGB: gray is replicated, alpha is
/// dropped, 16-bit is scaled down, CMYK is converted, EXIF orientation is
/// applied (so phone photos are upright), and only the first frame of an
/// animation is used.
pub fn decode_rgb(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, ClassifyError> {
    decode_rgb_at_least(bytes, max_pixels, None)
}

/// Like [`decode_rgb`], but the result only needs a shorter side of
/// `min_shorter` pixels: large JPEGs are then decoded at a reduced scale
/// (see [`crate::jpeg_scaled`]), other images at full size.
pub fn decode_rgb_at_least(
    bytes: &[u8],
    max_pixels: u64,
    min_shorter: Option<u32>,
) -> Result<RgbImage, ClassifyError> {
    let format = sniff_format(bytes)?;
    let undecodable = |e: image::ImageError| ClassifyError::Undecodable(e.to_string());

    let reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder = reader.into_decoder().map_err(undecodable)?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(ClassifyError::Undecodable(format!(
            "image has no pixels ({width}x{height})"
        )));
    }
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(ClassifyError::TooManyPixels {
            width,
            height,
            max_pixels,
        });
    }
    // 16-bit RGBA is the widest layout a decoder produces: 8 bytes per pixel,
    // plus the same again for conversions.
    let max_alloc = max_pixels.saturating_mul(16);
    if let (ImageFormat::Jpeg, Some(min_shorter)) = (format, min_shorter) {
        if let Some(rgb) = decode_scaled(bytes, width, height, min_shorter, max_alloc) {
            return Ok(rgb);
        }
    }
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_alloc);
    decoder.set_limits(limits).map_err(undecodable)?;
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder).map_err(undecodable)?;
    if let Some(orientation) = orientation {
        image.apply_orientation(orientation);
    }
    Ok(into_rgb8(image))
}

/// `DynamicImage::into_rgb8`, with the common 8-bit layouts converted by
/// plain byte copies: the image crate routes them through a colour-space
/// aware float conversion (`roundf` per channel) that showed up in a busy
/// worker's profile on grayscale PNGs (docs/performance.md). The results
/// are identical (tested).
fn into_rgb8(image: DynamicImage) -> RgbImage {
    let (width, height) = (image.width(), image.height());
    let expand = |raw: &[u8], channels: usize, gray: bool| -> RgbImage {
        let mut rgb = Vec::with_capacity(raw.len() / channels * 3);
        for pixel in raw.chunks_exact(channels) {
            if gray {
                rgb.extend_from_slice(&[pixel[0]; 3]);
            } else {
                rgb.extend_from_slice(&pixel[..3]);
            }
        }
        RgbImage::from_raw(width, height, rgb).expect("3 bytes per pixel")
    };
    match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageLuma8(gray) => expand(gray.as_raw(), 1, true),
        DynamicImage::ImageLumaA8(gray) => expand(gray.as_raw(), 2, true),
        DynamicImage::ImageRgba8(rgba) => expand(rgba.as_raw(), 4, false),
        other => other.into_rgb8(),
    }
}

#[cfg(test)]
mod tests {
    use image::{GrayAlphaImage, GrayImage, RgbaImage};

    use super::*;

    /// Every byte value in every channel position, and odd dimensions.
    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 256) as u8).collect()
    }

    #[test]
    fn fast_conversions_match_the_image_crate() {
        let (w, h) = (37, 11);
        let images = [
            DynamicImage::ImageLuma8(GrayImage::from_raw(w, h, bytes(37 * 11)).unwrap()),
            DynamicImage::ImageLumaA8(GrayAlphaImage::from_raw(w, h, bytes(37 * 11 * 2)).unwrap()),
            DynamicImage::ImageRgba8(RgbaImage::from_raw(w, h, bytes(37 * 11 * 4)).unwrap()),
        ];
        for image in images {
            let color = image.color();
            assert_eq!(into_rgb8(image.clone()), image.into_rgb8(), "{color:?}");
        }
    }
}
