//! Helpers the kernel, patch and decoder tests share.

use std::path::Path;

use tract_onnx::prelude::*;

/// A deterministic stream of pseudo-random 32-bit values (xorshift),
/// without a random-number crate.
pub fn xorshift(seed: u32) -> impl Iterator<Item = u32> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    std::iter::repeat_with(move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    })
}

/// The bit patterns of `values`: what the tests of the bit-identical
/// fusions compare, so that -0.0, NaN payloads and the last ulp count.
pub fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|x| x.to_bits()).collect()
}

/// Deterministic values in [-1, 1).
pub fn values(n: usize, seed: u32) -> Vec<f32> {
    xorshift(seed)
        .take(n)
        .map(|x| (x as f32 / u32::MAX as f32) * 2.0 - 1.0)
        .collect()
}

/// Whether the CPU lacks AVX-512F, saying so: the kernel tests that need
/// it skip themselves then.
#[cfg(target_arch = "x86_64")]
pub fn lacks_avx512f() -> bool {
    let lacks = !std::arch::is_x86_feature_detected!("avx512f");
    if lacks {
        eprintln!("skipping: needs AVX-512F");
    }
    lacks
}

/// `n` values as a block's projection reads them after ReLU6: half of
/// the runs of 7 zero throughout, a third of the other values zero, some
/// of the zeros -0.
pub fn mostly_zeros(n: usize, seed: u32) -> Vec<f32> {
    let mut values = values(n, seed);
    let mut rolls = xorshift(seed + 1);
    for run in values.chunks_mut(7) {
        let whole = rolls.next().unwrap().is_multiple_of(2);
        for value in run.iter_mut() {
            let each = rolls.next().unwrap() % 6;
            if whole || each < 2 {
                *value = if each == 0 { -0.0 } else { 0.0 };
            }
        }
    }
    values
}

/// What the image crate's general decoder makes of `bytes` (a `format`
/// file), as 8-bit RGB: the reference our own decoding paths must match.
pub fn general_decode(bytes: &[u8], format: image::ImageFormat) -> image::RgbImage {
    let decoder = image::ImageReader::with_format(std::io::Cursor::new(bytes), format)
        .into_decoder()
        .expect("decoder");
    image::DynamicImage::from_decoder(decoder)
        .expect("decodes")
        .into_rgb8()
}

/// A file of `worker/tests/fixtures` (made by its `make_fixtures.py`).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// jpeg-decoder's pixels for `jpeg` at IDCT size `scale` (pixels per
/// block side: 1, 2 or 4) and their size: the reference of the
/// reduced-scale JPEG paths.
pub fn jpeg_decoder_scaled(jpeg: &[u8], scale: u16) -> (Vec<u8>, (u16, u16)) {
    let mut decoder = jpeg_decoder::Decoder::new(std::io::Cursor::new(jpeg));
    decoder.read_info().unwrap();
    let info = decoder.info().unwrap();
    let request = |side: u16| (side * scale).div_ceil(8);
    let size = decoder
        .scale(request(info.width), request(info.height))
        .unwrap();
    assert_eq!(size, (request(info.width), request(info.height)));
    (decoder.decode().unwrap(), size)
}

/// The shipped model, decluttered for batch 1: what the patches rewrite.
pub fn efficientnet() -> TypedModel {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/efficientnet-lite0.onnx");
    tract_onnx::onnx()
        .model_for_path(path)
        .and_then(|m| m.with_input_fact(0, f32::fact([1, 3, 224, 224]).into()))
        .and_then(|m| m.into_typed())
        .and_then(|m| m.into_decluttered())
        .unwrap()
}

/// The model's logits on a ramp image after `patch`.
pub fn patched_logits(
    mut model: TypedModel,
    patch: impl FnOnce(&mut TypedModel) -> TractResult<usize>,
) -> Vec<f32> {
    patch(&mut model).unwrap();
    let input: Vec<f32> = (0..3 * 224 * 224)
        .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
        .collect();
    let input = Tensor::from_shape(&[1, 3, 224, 224], &input).unwrap();
    let out = model
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .and_then(|p| p.run(tvec!(input.into_tvalue())))
        .unwrap();
    out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

/// Runs the model with and without `patch` on a ramp image and checks the
/// logits agree within 1e-4 of the largest.
pub fn assert_patch_keeps_logits(patch: fn(&mut TypedModel) -> TractResult<usize>) {
    let want = patched_logits(efficientnet(), |_| Ok(0));
    let got = patched_logits(efficientnet(), patch);
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-4 * scale, "logit {i}: {g} vs {w}");
    }
}
