//! The fast kernels (depthwise, pointwise, stem, and their fusions) change speed, not answers:
//! on every sample photo the logits stay within 1e-4 (relative to the
//! largest logit) of tract's own operators.

use imagefleet_worker::decode::decode_rgb;
use imagefleet_worker::ops::expand::op::Route;
use imagefleet_worker::preprocess::preprocess;
use imagefleet_worker::{Classifier, Kernels};

use super::{classifier, manifest, repo_root};

#[test]
fn fast_kernels_match_plain_tract_on_every_sample() {
    // The shared classifier runs on the fast kernels (the default).
    let fast = classifier();
    let plain = Classifier::load_with_kernels(&manifest(), Kernels::Tract).unwrap();
    // EfficientNet-Lite0 has 16 depthwise convolutions, each followed by ReLU6.
    assert_eq!(fast.fast_depthwise_nodes(), 16);
    assert_eq!(plain.fast_depthwise_nodes(), 0);
    // Three of them (at 112x112 and 56x56) fused with their expansion; on
    // AVX-512, also the eight on 28x28 and 14x14 planes and the four on
    // 7x7.
    let streams = Route::Streamed.is_available();
    assert_eq!(fast.fused_expansion_nodes(), if streams { 15 } else { 3 });
    // ... and one regular convolution, the stem.
    assert_eq!(fast.fast_stem_nodes(), 1);
    assert_eq!(plain.fast_stem_nodes(), 0);
    // On AVX-512, the stem's block and the ten whose projections are on
    // 14x14 planes or larger stream into their projections too.
    assert_eq!(fast.fused_projection_nodes(), if streams { 11 } else { 0 });
    assert_eq!(plain.fused_projection_nodes(), 0);
    // The four 7x7 blocks run whole through the lanes layout.
    assert_eq!(fast.lanes_block_nodes(), if streams { 4 } else { 0 });
    assert_eq!(plain.lanes_block_nodes(), 0);
    // Four pairs of streamed blocks run chained, row by row: the stem's
    // and the first expansion's, and the three whose second block has no
    // residual.
    assert_eq!(fast.chained_nodes(), if streams { 4 } else { 0 });
    assert_eq!(plain.chained_nodes(), 0);

    let samples = repo_root().join("tests/samples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&samples).unwrap() {
        let path = entry.unwrap().path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("jpg" | "png")
        ) {
            continue;
        }
        let image = decode_rgb(&std::fs::read(&path).unwrap(), u64::MAX).unwrap();
        let tensor = preprocess(&image, fast.manifest());
        let got = fast.logits(tensor.clone()).unwrap();
        let want = plain.logits(tensor).unwrap();
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * scale,
                "{}: logit {i} is {g}, plain tract {w} (scale {scale})",
                path.display()
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 3);
}
