//! RGB pixels to the model's input tensor, exactly per the model contract:
//! shorter side to `resize_shorter` (bilinear), center crop, normalise, NCHW.

use image::imageops::{self, FilterType};
use image::RgbImage;

use crate::manifest::ModelManifest;

/// Resizes, crops and normalises `image` into a `[3, size, size]` planar
/// buffer (the batch dimension of 1 is implicit).
pub fn preprocess(image: &RgbImage, manifest: &ModelManifest) -> Vec<f32> {
    let size = manifest.input_size;
    let resized = resize_shorter_side(image, manifest.resize_shorter);
    let (width, height) = resized.dimensions();
    let left = (width - size) / 2;
    let top = (height - size) / 2;

    let plane = (size * size) as usize;
    let mut tensor = vec![0f32; 3 * plane];
    let inv_std = manifest.std.map(|s| 1.0 / s);
    for y in 0..size {
        for x in 0..size {
            let pixel = resized.get_pixel(left + x, top + y).0;
            let offset = (y * size + x) as usize;
            for channel in 0..3 {
                tensor[channel * plane + offset] =
                    (f32::from(pixel[channel]) - manifest.mean[channel]) * inv_std[channel];
            }
        }
    }
    tensor
}

/// The most elongated aspect ratio resized whole; longer images are first
/// cut to their central part, which is all the center crop keeps anyway.
/// Without this a 1x100000 strip would be scaled to 256x25600000.
const MAX_ASPECT: u32 = 4;

fn resize_shorter_side(image: &RgbImage, shorter: u32) -> RgbImage {
    let (width, height) = image.dimensions();
    let short = width.min(height);
    let long = width.max(height);
    let image = if long > short.saturating_mul(MAX_ASPECT) {
        let keep = short * MAX_ASPECT;
        let view = if width > height {
            imageops::crop_imm(image, (width - keep) / 2, 0, keep, height)
        } else {
            imageops::crop_imm(image, 0, (height - keep) / 2, width, keep)
        };
        view.to_image()
    } else {
        image.clone()
    };
    let (width, height) = image.dimensions();
    // Same rounding as torchvision's Resize(int): the longer side is truncated.
    let (new_width, new_height) = if width <= height {
        (
            shorter,
            (u64::from(height) * u64::from(shorter) / u64::from(width)) as u32,
        )
    } else {
        (
            (u64::from(width) * u64::from(shorter) / u64::from(height)) as u32,
            shorter,
        )
    };
    if (new_width, new_height) == (width, height) {
        return image;
    }
    imageops::resize(&image, new_width, new_height, FilterType::Triangle)
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
