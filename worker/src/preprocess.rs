//! RGB pixels to the model's input tensor, exactly per the model contract:
//! shorter side to `resize_shorter` (bilinear), center crop, normalise, NCHW.

use std::borrow::Cow;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

use crate::manifest::ModelManifest;

/// Resizes, crops and normalises `image` into a `[3, size, size]` planar
/// buffer (the batch dimension of 1 is implicit).
pub fn preprocess(image: &RgbImage, manifest: &ModelManifest) -> Vec<f32> {
    let size = manifest.input_size as usize;
    let resized = resize_shorter_side(image, manifest.resize_shorter);
    let (width, height) = resized.dimensions();
    let left = (width as usize - size) / 2;
    let top = (height as usize - size) / 2;
    let stride = width as usize * 3;
    let raw = resized.as_raw();

    let plane = size * size;
    let mut tensor = vec![0f32; 3 * plane];
    let (red, rest) = tensor.split_at_mut(plane);
    let (green, blue) = rest.split_at_mut(plane);
    let scale = manifest.std.map(|s| 1.0 / s);
    let shift = [0, 1, 2].map(|c| -manifest.mean[c] * scale[c]);
    for y in 0..size {
        let start = (top + y) * stride + left * 3;
        let row = &raw[start..start + size * 3];
        let out = y * size..(y + 1) * size;
        // One pass per output row, de-interleaving RGB into the three planes
        // with a multiply-add (the division and subtraction folded in).
        for (((pixel, r), g), b) in row
            .chunks_exact(3)
            .zip(&mut red[out.clone()])
            .zip(&mut green[out.clone()])
            .zip(&mut blue[out])
        {
            *r = f32::from(pixel[0]) * scale[0] + shift[0];
            *g = f32::from(pixel[1]) * scale[1] + shift[1];
            *b = f32::from(pixel[2]) * scale[2] + shift[2];
        }
    }
    tensor
}

/// The most elongated aspect ratio resized whole; longer images are first
/// cut to their central part, which is all the center crop keeps anyway.
/// Without this a 1x100000 strip would be scaled to 256x25600000.
const MAX_ASPECT: u32 = 4;

/// Bilinear (triangle, antialiased when shrinking, as Pillow and the image
/// crate do) with fast_image_resize's SIMD kernels, reading the source in
/// place: no copy for the elongated-image crop, none when no resize is needed.
fn resize_shorter_side(image: &RgbImage, shorter: u32) -> Cow<'_, RgbImage> {
    let (width, height) = image.dimensions();
    let short = width.min(height);
    let long = width.max(height);
    // The source region that is resized: all of it, or its central part.
    let (crop_left, crop_top, crop_width, crop_height) = if long > short.saturating_mul(MAX_ASPECT)
    {
        let keep = short * MAX_ASPECT;
        if width > height {
            ((width - keep) / 2, 0, keep, height)
        } else {
            (0, (height - keep) / 2, width, keep)
        }
    } else {
        (0, 0, width, height)
    };
    // Same rounding as torchvision's Resize(int): the longer side is truncated.
    let (new_width, new_height) = if crop_width <= crop_height {
        (
            shorter,
            (u64::from(crop_height) * u64::from(shorter) / u64::from(crop_width)) as u32,
        )
    } else {
        (
            (u64::from(crop_width) * u64::from(shorter) / u64::from(crop_height)) as u32,
            shorter,
        )
    };
    if (new_width, new_height) == (width, height) {
        return Cow::Borrowed(image);
    }
    let source = ImageRef::new(width, height, image.as_raw(), PixelType::U8x3)
        .expect("an RgbImage's buffer is width * height * 3 bytes");
    let mut target = Image::new(new_width, new_height, PixelType::U8x3);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(
            f64::from(crop_left),
            f64::from(crop_top),
            f64::from(crop_width),
            f64::from(crop_height),
        );
    Resizer::new()
        .resize(&source, &mut target, &options)
        .expect("same pixel type on both sides and a crop inside the source");
    Cow::Owned(
        RgbImage::from_raw(new_width, new_height, target.into_vec())
            .expect("the target buffer is new_width * new_height * 3 bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> ModelManifest {
        ModelManifest {
            name: "test".into(),
            file: "m.onnx".into(),
            labels: "l.txt".into(),
            input_name: "input".into(),
            input_size: 4,
            resize_shorter: 6,
            mean: [127.0, 127.0, 127.0],
            std: [128.0, 128.0, 128.0],
            output_is_logits: true,
        }
    }

    #[test]
    fn normalises_planar_per_contract() {
        let image = RgbImage::from_fn(6, 6, |_, _| image::Rgb([255, 127, 0]));
        let tensor = preprocess(&image, &manifest());
        assert_eq!(tensor.len(), 3 * 16);
        assert!(tensor[..16].iter().all(|v| (*v - 1.0).abs() < 1e-6));
        assert!(tensor[16..32].iter().all(|v| v.abs() < 1e-6));
        assert!(tensor[32..]
            .iter()
            .all(|v| (*v + 127.0 / 128.0).abs() < 1e-6));
    }

    #[test]
    fn crops_the_center() {
        // A 6x6 image whose only bright pixels sit in the 4x4 centre.
        let image = RgbImage::from_fn(6, 6, |x, y| {
            let inside = (1..5).contains(&x) && (1..5).contains(&y);
            image::Rgb(if inside { [255; 3] } else { [0; 3] })
        });
        let tensor = preprocess(&image, &manifest());
        assert!(tensor.iter().all(|v| (*v - 1.0).abs() < 1e-6));
    }

    #[test]
    fn extreme_strips_stay_small() {
        let strip = RgbImage::new(1, 100_000);
        let resized = resize_shorter_side(&strip, 256);
        assert_eq!(resized.dimensions(), (256, 1024));
    }

    #[test]
    fn small_images_are_scaled_up() {
        let image = RgbImage::new(10, 20);
        assert_eq!(resize_shorter_side(&image, 256).dimensions(), (256, 512));
    }
}
