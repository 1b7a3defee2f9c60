//! Still WebP images decoded by libwebp, shrunk while they decode: a
//! 12-megapixel WebP bound for a 256-pixel input goes from the decoder's
//! rows straight into a small RGB image (libwebp's area-averaging
//! rescaler), never existing at full size as RGB. libwebp's SSE2 lossy
//! decoder also runs about 1.5x faster than image-webp's
//! (docs/performance.md, 2026-11-30). Animations and anything libwebp
//! refuses go back to the general decoder, which reports the error.

use image::RgbImage;
use libwebp_sys::{VP8StatusCode, WebPDecode, WebPDecoderConfig, WebPFreeDecBuffer, WEBP_CSP_MODE};

/// The output size for a `width` x `height` image whose shorter side must
/// stay at least `min_shorter`: the image itself under 2x that, else scaled
/// so its shorter side is `min_shorter`, aspect kept.
pub fn scaled_size(width: u32, height: u32, min_shorter: Option<u32>) -> (u32, u32) {
    let shorter = width.min(height);
    let Some(target) = min_shorter.filter(|t| *t > 0 && shorter >= t.saturating_mul(2)) else {
        return (width, height);
    };
    let scale = |side: u32| {
        let scaled =
            (u64::from(side) * u64::from(target) + u64::from(shorter) / 2) / u64::from(shorter);
        u32::try_from(scaled.max(u64::from(target))).unwrap_or(side)
    };
    if width <= height {
        (target, scale(height))
    } else {
        (scale(width), target)
    }
}

/// Decodes a still WebP of `width` x `height` to 8-bit RGB (alpha dropped,
/// as the general path does) at [`scaled_size`]. `None`: an animation, or
/// bytes libwebp will not decode; the caller falls back.
pub fn decode(bytes: &[u8], width: u32, height: u32, min_shorter: Option<u32>) -> Option<RgbImage> {
    let mut config = WebPDecoderConfig::new().ok()?;
    // SAFETY: `bytes` outlives the call; `config.input` is plain data.
    let status =
        unsafe { libwebp_sys::WebPGetFeatures(bytes.as_ptr(), bytes.len(), &mut config.input) };
    if status != VP8StatusCode::VP8_STATUS_OK
        || config.input.has_animation != 0
        || (config.input.width, config.input.height) != (width as i32, height as i32)
    {
        return None;
    }
    let (out_w, out_h) = scaled_size(width, height, min_shorter);
    if (out_w, out_h) != (width, height) {
        config.options.use_scaling = 1;
        config.options.scaled_width = i32::try_from(out_w).ok()?;
        config.options.scaled_height = i32::try_from(out_h).ok()?;
    }
    let stride = usize::try_from(out_w).ok()?.checked_mul(3)?;
    let mut pixels = vec![0u8; stride.checked_mul(usize::try_from(out_h).ok()?)?];
    // Decode into our buffer: no copy, and libwebp allocates only its
    // working rows (a lossless image also its ARGB plane).
    config.output.colorspace = WEBP_CSP_MODE::MODE_RGB;
    config.output.is_external_memory = 1;
    config.output.u.RGBA.rgba = pixels.as_mut_ptr();
    config.output.u.RGBA.stride = i32::try_from(stride).ok()?;
    config.output.u.RGBA.size = pixels.len();
    // SAFETY: the output buffer is `pixels`, of the size and stride given,
    // alive until after WebPFreeDecBuffer (which frees nothing of ours for
    // external memory, only what libwebp allocated itself).
    let status = unsafe {
        let status = WebPDecode(bytes.as_ptr(), bytes.len(), &mut config);
        WebPFreeDecBuffer(&mut config.output);
        status
    };
    if status != VP8StatusCode::VP8_STATUS_OK {
        return None;
    }
    RgbImage::from_raw(out_w, out_h, pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_images_twice_the_target_shrink_and_keep_their_aspect() {
        assert_eq!(scaled_size(400, 300, Some(256)), (400, 300));
        assert_eq!(scaled_size(4000, 3000, None), (4000, 3000));
        assert_eq!(scaled_size(4000, 3000, Some(256)), (341, 256));
        assert_eq!(scaled_size(3000, 4000, Some(256)), (256, 341));
        assert_eq!(scaled_size(512, 512, Some(256)), (256, 256));
        // A panorama keeps its shorter side at the target.
        assert_eq!(scaled_size(20000, 600, Some(256)), (8533, 256));
    }
}
