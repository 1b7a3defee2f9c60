//! Decoding limits: truncated uploads are refused in every format, and the
//! memory an image needs is checked from its header before decoding.

use image::codecs::jpeg::JpegEncoder;
use image::{ImageFormat, RgbImage};
use imagefleet_worker::decode::{
    decode_rgb_within, DecodeLimits, DEFAULT_MAX_DECODE_BYTES, WORKER_MEMORY_BOUND,
};
use imagefleet_worker::{gif_frames, png_rows, tiff_strips, ClassifyError};

use super::{classifier, repo_root};

/// Every fixture: one per format and layout an upload may use.
pub const FIXTURES: &[&str] = &[
    "baseline.jpg",
    "progressive.jpg",
    "cmyk.jpg",
    "gray.png",
    "gray16.png",
    "rgba.png",
    "palette.png",
    "lossy.webp",
    "lossless.webp",
    "plain.gif",
    "plain.bmp",
    "plain.tiff",
    "lzw.tiff",
];

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo_root().join("worker/tests/fixtures").join(name)).unwrap()
}

/// A 1200x900 JPEG: big enough for the reduced-scale path (shorter side at
/// least twice the model's 256), made here rather than stored.
fn big_jpeg() -> Vec<u8> {
    let image = RgbImage::from_fn(1200, 900, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x ^ y) % 239) as u8])
    });
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&image)
        .unwrap();
    out
}

fn decode(bytes: &[u8], min_shorter: Option<u32>) -> Result<RgbImage, ClassifyError> {
    decode_rgb_within(bytes, DecodeLimits::default(), min_shorter)
}

#[test]
fn truncated_uploads_are_refused_in_every_format() {
    let mut files: Vec<(String, Vec<u8>)> = FIXTURES
        .iter()
        .map(|name| (name.to_string(), fixture(name)))
        .collect();
    files.push(("1200x900 JPEG".into(), big_jpeg()));
    for (name, bytes) in &files {
        assert!(decode(bytes, Some(256)).is_ok(), "{name} whole");
        for percent in [10, 50, 90, 99] {
            let cut = &bytes[..bytes.len() * percent / 100];
            // Both paths: full size, and reduced scale for big JPEGs.
            for min_shorter in [None, Some(256)] {
                match decode(cut, min_shorter) {
                    Err(ClassifyError::Undecodable(_)) => {}
                    other => panic!(
                        "{name} cut to {percent}%: {:?}",
                        other.map(|i| i.dimensions())
                    ),
                }
            }
        }
    }
}

#[test]
fn the_first_tenth_of_a_jpeg_gets_undecodable_not_a_label() {
    // The issue's case: 200 "broom" for the first 10% of a JPEG.
    for jpeg in [fixture("baseline.jpg"), big_jpeg()] {
        let error = classifier()
            .classify(&jpeg[..jpeg.len() / 10])
            .expect_err("a tenth of a JPEG must not be classified");
        assert_eq!(error.kind(), "undecodable", "{error}");
        assert!(error.to_string().contains("truncated"), "{error}");
    }
}

/// Our LZW and PNG paths on files from another encoder (Pillow, libtiff)
/// give the general decoder's pixels, and do take them.
#[test]
fn files_from_pillow_decode_like_the_general_decoder() {
    for (name, format) in [
        ("lzw.tiff", ImageFormat::Tiff),
        ("plain.gif", ImageFormat::Gif),
        ("rgba.png", ImageFormat::Png),
    ] {
        let bytes = fixture(name);
        let ours = match format {
            ImageFormat::Tiff => tiff_strips::decode(&bytes, 200, 150),
            ImageFormat::Png => png_rows::decode(&bytes, 200, 150),
            _ => gif_frames::decode(&bytes, 200, 150),
        }
        .unwrap_or_else(|| panic!("{name} not taken by the LZW path"));
        let general = image::load_from_memory_with_format(&bytes, format)
            .unwrap()
            .into_rgb8();
        assert!(ours == general, "{name}: pixels differ");
    }
}

/// The damage still accepted, as README "Security and limits" says: bytes
/// missing only after the last pixel. PNG: the checksum of the closing IEND
/// chunk; GIF: the trailer byte and the block terminator after the last
/// frame's data. Every pixel is there, so the label is the whole image's.
#[test]
fn only_damage_after_the_last_pixel_is_accepted() {
    for (name, cuts) in [("rgba.png", 1..=4), ("plain.gif", 1..=3)] {
        let bytes = fixture(name);
        let whole = decode(&bytes, None).unwrap();
        for cut in cuts.clone() {
            let damaged = decode(&bytes[..bytes.len() - cut], None)
                .unwrap_or_else(|e| panic!("{name} less {cut} bytes: {e}"));
            assert_eq!(damaged, whole, "{name} less {cut} bytes");
        }
        let more = cuts.end() + 1;
        assert!(
            decode(&bytes[..bytes.len() - more], None).is_err(),
            "{name} less {more} bytes"
        );
    }
    // Everything else is refused as soon as one byte is missing.
    for name in FIXTURES
        .iter()
        .filter(|n| !n.ends_with(".png") && !n.ends_with(".gif"))
    {
        let bytes = fixture(name);
        assert!(decode(&bytes[..bytes.len() - 1], None).is_err(), "{name}");
    }
}

/// A PNG header for `width` x `height` with the given bit depth and colour
/// type, an empty compressed stream: enough for the decoder to report its
/// layout, which is all the memory check reads.
pub fn png_header(width: u32, height: u32, depth: u8, color: u8) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[depth, color, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [
        (b"IHDR", ihdr),
        (b"IDAT", vec![0x78, 0x9c]),
        (b"IEND", Vec::new()),
    ] {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(&data);
        out.extend_from_slice(&chunk);
        out.extend_from_slice(&super::samples::crc32(&chunk).to_be_bytes());
    }
    out
}

#[test]
fn the_issues_16_bit_png_is_refused_from_its_header() {
    // 7000x7000 16-bit RGBA: 49 megapixels, under the pixel budget, but 8
    // bytes a pixel plus the 8-bit copy is 515 MiB; it took a worker to
    // 607 MB before.
    let png = png_header(7000, 7000, 16, 6);
    match classifier().classify(&png) {
        Err(error @ ClassifyError::TooMuchMemory { .. }) => {
            assert_eq!(error.kind(), "too_many_pixels");
            let text = error.to_string();
            assert!(text.contains("16-bit RGBA"), "{text}");
            assert!(text.contains("needs about 515 MiB"), "{text}");
        }
        other => panic!("expected TooMuchMemory, got {other:?}"),
    }
    // The same picture in 8-bit RGB fits: 3 bytes a pixel is 140 MiB.
    let rgb8 = png_header(7000, 7000, 8, 2);
    assert!(matches!(
        decode(&rgb8, Some(256)),
        Err(ClassifyError::Undecodable(_))
    ));
}

#[test]
fn the_decode_budget_leaves_room_for_the_model_and_the_upload() {
    // Measured: a worker holding the model and nothing else peaks at about
    // 75 MB (VmHWM of `imagefleet classify` on a small image); the web
    // tier's upload limit is 20 MiB.
    let model = 80 * 1024 * 1024;
    let upload = 20 * 1024 * 1024;
    assert!(DEFAULT_MAX_DECODE_BYTES + model + upload <= WORKER_MEMORY_BOUND);
    // The decoders get the same number as their own allocation limit: an
    // image whose header passes cannot allocate past it either.
    let tight = DecodeLimits {
        max_pixels: u64::MAX,
        max_bytes: 100_000,
    };
    let gray16 = fixture("gray16.png"); // 200x150: 30,000 pixels
    match decode_rgb_within(&gray16, tight, None) {
        Err(ClassifyError::TooMuchMemory { needed, .. }) => {
            // 2 bytes native + 3 for the 8-bit RGB copy, per pixel.
            assert_eq!(needed, 30_000 * 5);
        }
        other => panic!("{:?}", other.map(|i| i.dimensions())),
    }
}

#[test]
fn big_baseline_jpegs_are_budgeted_at_their_reduced_scale() {
    let jpeg = big_jpeg();
    assert_eq!(image::guess_format(&jpeg).unwrap(), ImageFormat::Jpeg);
    // At full size 1200x900 needs 9 bytes a pixel (3 component planes, the
    // RGB pixels, room for a rotated copy): 9.7 MB. At half scale, the
    // smallest whose shorter side (450) reaches 256, a quarter of that.
    let limits = |max_bytes| DecodeLimits {
        max_pixels: u64::MAX,
        max_bytes,
    };
    assert!(decode_rgb_within(&jpeg, limits(4_000_000), Some(256)).is_ok());
    assert!(matches!(
        decode_rgb_within(&jpeg, limits(4_000_000), None),
        Err(ClassifyError::TooMuchMemory { .. })
    ));
    let image = decode_rgb_within(&jpeg, limits(4_000_000), Some(256)).unwrap();
    assert!(image.width().min(image.height()) >= 256);
}

/// CMYK JPEGs take the reduced-scale path too, with the general decoder's
/// colours (zune-jpeg's CMYK to RGB): Pillow's 200x150 fixture asked for a
/// shorter side of 64 comes out at half scale, like the full decode
/// shrunk: 2.7 levels apart on average, where the YCbCr fixture measures
/// 3.0 the same way and misread inks (K taken uninverted) 99.
#[test]
fn cmyk_jpegs_shrink_while_decoding_in_the_general_decoders_colours() {
    let cmyk = fixture("cmyk.jpg");
    let full = decode(&cmyk, None).unwrap();
    assert_eq!(full.dimensions(), (200, 150));
    let shrunk = decode(&cmyk, Some(64)).unwrap();
    assert_eq!(shrunk.dimensions(), (100, 75), "decoded at half scale");
    let reference = image::imageops::resize(&full, 100, 75, image::imageops::FilterType::Triangle);
    assert!(mean_difference(&shrunk, &reference) < 4.0);
}

/// EXIF data saying `orientation`: a big-endian TIFF header, one IFD
/// entry: tag 0x0112 (orientation), type SHORT, count 1, the value
/// left-aligned in its 4 bytes.
fn exif_orientation(orientation: u16) -> Vec<u8> {
    let mut exif = b"MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01".to_vec();
    exif.extend_from_slice(&orientation.to_be_bytes());
    exif.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    exif
}

/// `png` with an eXIf chunk (EXIF orientation `orientation`) after IHDR.
fn with_exif_orientation(png: &[u8], orientation: u16) -> Vec<u8> {
    let exif = exif_orientation(orientation);
    let mut chunk = b"eXIf".to_vec();
    chunk.extend_from_slice(&exif);
    // Signature (8) + IHDR (4 length + 4 type + 13 data + 4 CRC).
    let after_ihdr = 8 + 25;
    let mut out = png[..after_ihdr].to_vec();
    out.extend_from_slice(&(exif.len() as u32).to_be_bytes());
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&super::samples::crc32(&chunk).to_be_bytes());
    out.extend_from_slice(&png[after_ihdr..]);
    out
}

#[test]
fn exif_rotation_is_applied_after_the_conversion_to_rgb() {
    // 8-bit RGBA and 16-bit gray: converted first, then turned.
    for name in ["rgba.png", "gray16.png"] {
        let png = fixture(name);
        let upright = decode(&png, Some(256)).unwrap();
        let turned = decode(&with_exif_orientation(&png, 6), Some(256)).unwrap();
        assert_eq!(turned.dimensions(), (150, 200), "{name}");
        assert_eq!(turned, image::imageops::rotate90(&upright), "{name}");
    }
}

/// `jpeg` with an APP1 Exif segment (EXIF orientation `orientation`)
/// right after SOI.
fn jpeg_with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&exif_orientation(orientation));
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&(payload.len() as u16 + 2).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// JPEGs shrunk while decoding go through our decoder (baseline at 1/8
/// and 1/4, progressive at 1/8) and keep their EXIF turn.
#[test]
fn reduced_jpegs_are_turned_as_their_exif_says() {
    for (name, min_shorter, size) in [
        ("baseline.jpg", 16, (25, 19)),
        ("baseline.jpg", 32, (50, 38)),
        ("progressive.jpg", 16, (25, 19)),
    ] {
        let jpeg = fixture(name);
        let upright = decode(&jpeg, Some(min_shorter)).unwrap();
        assert_eq!(upright.dimensions(), size, "{name} for {min_shorter}");
        let turned = decode(&jpeg_with_exif_orientation(&jpeg, 6), Some(min_shorter)).unwrap();
        assert_eq!(turned, image::imageops::rotate90(&upright), "{name}");
    }
}

/// `image` as a lossy WebP, encoded by libwebp.
fn lossy_webp(image: &RgbImage) -> Vec<u8> {
    let (width, height) = image.dimensions();
    let mut out = std::ptr::null_mut();
    // SAFETY: the pixels are width x height RGB with that stride; libwebp
    // allocates `out`, copied and freed here.
    unsafe {
        let len = libwebp_sys::WebPEncodeRGB(
            image.as_raw().as_ptr(),
            width as i32,
            height as i32,
            width as i32 * 3,
            85.0,
            &mut out,
        );
        assert!(len > 0, "libwebp encodes");
        let bytes = std::slice::from_raw_parts(out, len).to_vec();
        libwebp_sys::WebPFree(out.cast());
        bytes
    }
}

#[test]
fn big_webps_shrink_while_decoding_and_keep_their_picture() {
    let cat = image::open(repo_root().join("tests/samples/chelsea.jpg"))
        .unwrap()
        .to_rgb8();
    // A phone-sized photo: three times the sample on each side.
    let big = image::imageops::resize(&cat, 1353, 900, image::imageops::FilterType::CatmullRom);
    let webp = lossy_webp(&big);
    let full = decode(&webp, None).unwrap();
    assert_eq!(full.dimensions(), (1353, 900));
    let shrunk = decode(&webp, Some(256)).unwrap();
    assert_eq!(
        shrunk.dimensions(),
        (385, 256),
        "shorter side at the target"
    );
    // The same picture as another decoder's (image-webp), full size and
    // scaled down afterwards.
    let other = image::load_from_memory_with_format(&webp, ImageFormat::WebP)
        .unwrap()
        .to_rgb8();
    assert!(mean_difference(&full, &other) < 2.0);
    let reference =
        image::imageops::resize(&other, 385, 256, image::imageops::FilterType::Triangle);
    assert!(mean_difference(&shrunk, &reference) < 3.0);
    let labels = classifier().classify(&webp).unwrap();
    assert!(
        ["tiger cat", "Egyptian cat", "tabby"].contains(&labels.top[0].label.as_str()),
        "{:?}",
        labels.top[0]
    );
    // Below twice the target nothing shrinks.
    let small = lossy_webp(&cat);
    assert_eq!(
        decode(&small, Some(256)).unwrap().dimensions(),
        cat.dimensions()
    );
}

/// Mean absolute difference per channel of two images of one size.
fn mean_difference(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    let mean = sum as f64 / a.as_raw().len() as f64;
    eprintln!("mean difference {mean:.2} per channel");
    mean
}
