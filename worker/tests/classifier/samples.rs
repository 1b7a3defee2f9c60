//! The real model on real photos: the sample images get labels their
//! reference accepts, and every upload format decodes to the same picture.

use imagefleet_worker::{Classifier, ClassifyError};

use super::{classifier, manifest, repo_root};

/// (file, accepted labels, reference probability of the reference top-1)
fn expected() -> Vec<(String, Vec<String>, f32)> {
    let csv = std::fs::read_to_string(repo_root().join("tests/samples/expected.csv")).unwrap();
    csv.lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let accept = fields[2].split('|').map(str::to_owned).collect();
            (fields[0].to_owned(), accept, fields[3].parse().unwrap())
        })
        .collect()
}

#[test]
fn sample_photos_match_the_reference() {
    let expected = expected();
    assert_eq!(expected.len(), 3);
    for (file, accept, reference_probability) in expected {
        let bytes = std::fs::read(repo_root().join("tests/samples").join(&file)).unwrap();
        let result = classifier().classify(&bytes).unwrap();
        let best = result.best();
        assert!(
            accept.contains(&best.label),
            "{file}: got {} ({}), accepted {accept:?}",
            best.label,
            best.probability
        );
        if accept.len() == 1 {
            // Confident images: our probability is close to onnxruntime's.
            assert!(
                (best.probability - reference_probability).abs() < 0.05,
                "{file}: probability {} vs reference {reference_probability}",
                best.probability
            );
        }
        assert_eq!(result.top.len(), 5);
        assert!(result
            .top
            .windows(2)
            .all(|w| w[0].probability >= w[1].probability));
    }
}

#[test]
fn every_upload_format_decodes_and_classifies() {
    for file in super::decoding::FIXTURES {
        let bytes = super::decoding::fixture(file);
        let result = classifier()
            .classify(&bytes)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!((result.width, result.height), (200, 150), "{file}");
        let labels: Vec<&str> = result.top.iter().map(|p| p.label.as_str()).collect();
        // The photo is an espresso cup; gray versions lose the colour cue but
        // keep the cup.
        assert!(
            labels
                .iter()
                .any(|l| ["espresso", "cup", "coffee mug"].contains(l)),
            "{file}: top 5 {labels:?}"
        );
    }
}

#[test]
fn bad_uploads_get_typed_errors() {
    let c = classifier();
    assert!(matches!(c.classify(b""), Err(ClassifyError::Empty)));
    assert!(matches!(
        c.classify(b"hello, this is text"),
        Err(ClassifyError::UnsupportedFormat)
    ));
    let jpeg = std::fs::read(repo_root().join("worker/tests/fixtures/baseline.jpg")).unwrap();
    // A truncated body is refused, not classified from grey rows.
    let truncated = &jpeg[..jpeg.len() / 3];
    assert!(matches!(
        c.classify(truncated),
        Err(ClassifyError::Undecodable(_))
    ));
    let header_only = &jpeg[..200];
    assert!(matches!(
        c.classify(header_only),
        Err(ClassifyError::Undecodable(_))
    ));
}

#[test]
fn pixel_budget_is_checked_before_decoding() {
    // A valid PNG header claiming 100000x100000 pixels: refused from the
    // header alone, without allocating 30 GB.
    // 8-bit RGB: the decoder reports dimensions before the data.
    let huge = super::decoding::png_header(100_000, 100_000, 8, 2);
    let c = Classifier::load(&manifest())
        .unwrap()
        .with_max_pixels(1_000_000);
    match c.classify(&huge) {
        Err(ClassifyError::TooManyPixels { width, height, .. }) => {
            assert_eq!((width, height), (100_000, 100_000))
        }
        other => panic!("expected TooManyPixels, got {other:?}"),
    }
}

pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
