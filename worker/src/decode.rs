//! Upload bytes to 8-bit RGB pixels, within a pixel budget and a memory
//! budget, refusing truncated files.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{ColorType, DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use crate::error::ClassifyError;
use crate::integrity::{check_complete, JpegLayout};
use crate::jpeg_scaled::{decode_scaled, scale_denominator};
use crate::{gif_frames, png_rows, tiff_strips, webp_scaled};

/// The formats the service accepts; anything else is refused before decoding.
pub const SUPPORTED_FORMATS: &[ImageFormat] = &[
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::WebP,
    ImageFormat::Gif,
    ImageFormat::Bmp,
    ImageFormat::Tiff,
];

/// Default pixel budget: 50 megapixels covers any camera photo. The memory
/// budget below is the tighter limit for most layouts.
pub const DEFAULT_MAX_PIXELS: u64 = 50_000_000;

const MIB: u64 = 1024 * 1024;

/// What a worker may use at most while it classifies one image, all in:
/// the model and runtime (about 75 MB resident, measured with
/// `imagefleet classify`), the upload itself (at most 20 MiB, the web
/// tier's default limit) and the decode budget below.
pub const WORKER_MEMORY_BOUND: u64 = 256 * MIB;

/// Default memory budget for decoding one image: what its pixels, the
/// decoder's working memory and the conversion to 8-bit RGB may take
/// together, estimated from the header before anything is decoded.
pub const DEFAULT_MAX_DECODE_BYTES: u64 = 150 * MIB;

/// The limits one decode runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Width times height.
    pub max_pixels: u64,
    /// Estimated peak bytes of the decode (see [`decode_cost`]); also the
    /// decoders' own allocation limit.
    pub max_bytes: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_pixels: DEFAULT_MAX_PIXELS,
            max_bytes: DEFAULT_MAX_DECODE_BYTES,
        }
    }
}

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
    let limits = DecodeLimits {
        max_pixels,
        ..DecodeLimits::default()
    };
    decode_rgb_within(bytes, limits, min_shorter)
}

/// [`decode_rgb_at_least`] under explicit limits: the entry point the
/// classifier uses. Refuses, before decoding, an image with more pixels
/// than `limits.max_pixels` or whose decode would need more than
/// `limits.max_bytes` ([`ClassifyError::TooManyPixels`],
/// [`ClassifyError::TooMuchMemory`]), and a file cut short
/// ([`ClassifyError::Undecodable`]).
pub fn decode_rgb_within(
    bytes: &[u8],
    limits: DecodeLimits,
    min_shorter: Option<u32>,
) -> Result<RgbImage, ClassifyError> {
    let format = sniff_format(bytes)?;
    let jpeg = check_complete(format, bytes).map_err(ClassifyError::Undecodable)?;
    let undecodable = |e: image::ImageError| ClassifyError::Undecodable(e.to_string());

    let reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder = reader.into_decoder().map_err(undecodable)?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(ClassifyError::Undecodable(format!(
            "image has no pixels ({width}x{height})"
        )));
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ClassifyError::TooManyPixels {
            width,
            height,
            max_pixels: limits.max_pixels,
        });
    }
    let color = decoder.color_type();
    let orientation = decoder.orientation().ok();
    let rotates = orientation.is_some_and(rotates);
    let within_budget = |cost: DecodeCost| {
        if cost.bytes > limits.max_bytes {
            Err(ClassifyError::TooMuchMemory {
                width,
                height,
                layout: cost.layout,
                needed: cost.bytes,
                max_bytes: limits.max_bytes,
            })
        } else {
            Ok(())
        }
    };
    let header = Header {
        format,
        color,
        jpeg,
        width,
        height,
        rotates,
    };
    let full = decode_cost(&header, None);
    if let (Some(layout), Some(min_shorter)) = (jpeg, min_shorter) {
        let scaled = decode_cost(&header, Some(min_shorter));
        if scaled.bytes < full.bytes && scaled_path_applies(layout) {
            within_budget(scaled)?;
            if let Some(rgb) = decode_scaled(bytes, width, height, min_shorter, limits.max_bytes) {
                return Ok(rgb);
            }
        }
    }
    // At full size: the whole estimate must fit.
    within_budget(full)?;
    // Still WebP without a turn: libwebp, shrinking as it decodes.
    if format == ImageFormat::WebP && orientation.is_none_or(|o| o == Orientation::NoTransforms) {
        if let Some(rgb) = webp_scaled::decode(bytes, width, height, min_shorter) {
            return Ok(rgb);
        }
    }
    // LZW TIFF strips and GIF frames: our LZW decoder, straight into RGB.
    // 8-bit RGB(A) PNGs: our unfiltering, straight into RGB.
    let own = match format {
        ImageFormat::Tiff => tiff_strips::decode(bytes, width, height),
        ImageFormat::Gif => gif_frames::decode(bytes, width, height),
        ImageFormat::Png => png_rows::decode(bytes, width, height),
        _ => None,
    };
    if let Some(rgb) = own {
        return Ok(orient(rgb, orientation));
    }
    let mut decoder_limits = Limits::default();
    decoder_limits.max_alloc = Some(limits.max_bytes);
    decoder.set_limits(decoder_limits).map_err(undecodable)?;
    let image = DynamicImage::from_decoder(decoder).map_err(undecodable)?;
    // To 8-bit RGB first, then turn: a rotation copies the image, and a
    // copy of the 8-bit RGB one is the smaller (3 bytes a pixel, where a
    // 16-bit RGBA copy took 8).
    Ok(orient(into_rgb8(image), orientation))
}

/// `rgb` turned as its EXIF orientation asks.
fn orient(rgb: RgbImage, orientation: Option<Orientation>) -> RgbImage {
    match orientation {
        Some(orientation) => {
            let mut turned = DynamicImage::ImageRgb8(rgb);
            turned.apply_orientation(orientation);
            match turned {
                DynamicImage::ImageRgb8(rgb) => rgb,
                other => other.into_rgb8(),
            }
        }
        None => rgb,
    }
}

/// Whether [`decode_scaled`] handles this JPEG (8-bit gray, YCbCr, CMYK or
/// YCCK).
fn scaled_path_applies(layout: JpegLayout) -> bool {
    matches!(layout.components, 1 | 3 | 4)
}

/// An estimate of a decode's peak memory, and the layout it assumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeCost {
    pub bytes: u64,
    /// E.g. "16-bit RGBA PNG".
    pub layout: String,
}

/// What the header says, all a cost estimate needs.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub format: ImageFormat,
    /// The decoder's native output (16-bit stays 16-bit).
    pub color: ColorType,
    pub jpeg: Option<JpegLayout>,
    pub width: u32,
    pub height: u32,
    /// EXIF orientation turns the image by 90 degrees: one more copy.
    pub rotates: bool,
}

fn rotates(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// The peak memory of decoding an image to 8-bit RGB, from its header
/// alone: the decoded pixels at their native depth, the conversion to 8-bit
/// RGB (3 more bytes a pixel while both exist, none for 8-bit RGB), a
/// rotation of the RGB image (6 bytes a pixel while both exist), and the
/// format's working memory. Checked against measured peaks (VmHWM of
/// `imagefleet classify` on 7000x7000 images, less the model and the file;
/// bytes a pixel, measured vs estimated): 16-bit RGBA PNG 10.8 vs 11,
/// 8-bit RGB PNG 3.0 vs 3, BMP 3.0 vs 3, progressive JPEG at 1/8 scale 6.1
/// vs 6.1, TIFF 5.8 vs 6, GIF 6.8 vs 8, lossless WebP 6.8 vs 7, lossy WebP
/// 4.4 vs 7. `min_shorter`: a JPEG decoded at reduced scale (see
/// [`crate::jpeg_scaled`]).
pub fn decode_cost(header: &Header, min_shorter: Option<u32>) -> DecodeCost {
    let Header {
        format,
        color,
        jpeg,
        width,
        height,
        rotates,
    } = *header;
    let depth = u64::from(color.bytes_per_pixel());
    // Native pixels plus the 8-bit RGB copy, or the rotation's two RGB
    // images, whichever is more.
    let convert = if color == ColorType::Rgb8 { 0 } else { 3 };
    let pixel_bytes = (depth + convert).max(if rotates { 6 } else { 0 });
    let pixels = u64::from(width) * u64::from(height);
    let layout = format!("{} {format:?}", describe(color));
    let per_pixel = |extra: u64| DecodeCost {
        bytes: pixels.saturating_mul(pixel_bytes + extra),
        layout: layout.clone(),
    };
    match (format, jpeg) {
        (ImageFormat::Jpeg, Some(jpeg)) => {
            // Progressive: every DCT coefficient (2 bytes a sample, and
            // without subsampling a sample per component and pixel) is held
            // until the last scan, whatever the output scale.
            let components = u64::from(jpeg.components);
            let coefficients = if jpeg.progressive {
                pixels.saturating_mul(2 * components)
            } else {
                0
            };
            let scale = u64::from(min_shorter.map_or(1, |m| scale_denominator(width, height, m)));
            let out = u64::from(width).div_ceil(scale) * u64::from(height).div_ceil(scale);
            // At the output scale: one plane per component besides the
            // pixels and their copies.
            let output = out.saturating_mul(components + pixel_bytes.max(6));
            let mut layout = layout.clone();
            if jpeg.progressive {
                layout.insert_str(0, "progressive ");
            }
            if scale > 1 {
                layout.push_str(&format!(" at 1/{scale} scale"));
            }
            DecodeCost {
                bytes: coefficients.saturating_add(output),
                layout,
            }
        }
        // The tiff crate decodes strips into a buffer of their own first.
        (ImageFormat::Tiff, _) => per_pixel(depth),
        // The gif crate keeps the frame's palette indices beside its RGBA.
        (ImageFormat::Gif, _) => per_pixel(1),
        // image-webp decodes lossless images to 4-byte ARGB (lossy ones to
        // YUV planes) before the output layout.
        (ImageFormat::WebP, _) => per_pixel(4),
        _ => per_pixel(0),
    }
}

fn describe(color: ColorType) -> &'static str {
    match color {
        ColorType::L8 => "8-bit gray",
        ColorType::La8 => "8-bit gray+alpha",
        ColorType::Rgb8 => "8-bit RGB",
        ColorType::Rgba8 => "8-bit RGBA",
        ColorType::L16 => "16-bit gray",
        ColorType::La16 => "16-bit gray+alpha",
        ColorType::Rgb16 => "16-bit RGB",
        ColorType::Rgba16 => "16-bit RGBA",
        ColorType::Rgb32F => "32-bit float RGB",
        ColorType::Rgba32F => "32-bit float RGBA",
        _ => "other",
    }
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
