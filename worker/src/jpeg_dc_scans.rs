//! A progressive JPEG without its AC scans: what jpeg-decoder needs to
//! decode it at 1/8 scale.
//!
//! At 1/8 scale every 8x8 block becomes one pixel, which jpeg-decoder's
//! IDCT computes from the block's DC coefficient alone. A baseline JPEG
//! interleaves each block's AC coefficients with its DC, so they must be
//! decoded anyway; a progressive one sends them in scans of their own
//! (spectral selection 1..63), which are most of the file and, in
//! jpeg-decoder, most of the time (its bit-by-bit refinement). Left out,
//! the picture is the same to the bit: the components are never
//! "finished", and jpeg-decoder renders unfinished components of a
//! progressive frame from the coefficients it has, through the same IDCT.
//!
//! The walk only copies or drops whole marker segments and scans; it
//! understands nothing else, and anything it does not expect (a baseline
//! frame, a scan before the frame, a truncated segment) gives `None`, so
//! the caller decodes the original bytes as before.

use crate::jpeg_segments::{segments, EOI, SOI, SOS};

/// Progressive DCT with Huffman coding: the only progressive frame
/// jpeg-decoder decodes.
const SOF2: u8 = 0xC2;

/// `jpeg` (a progressive JPEG) with every scan of AC coefficients left
/// out, everything else kept in order: tables, restart intervals, EXIF,
/// the DC scans and their refinements. `None` when `jpeg` is not a
/// progressive JPEG this walk can follow to its end.
pub fn without_ac_scans(jpeg: &[u8]) -> Option<Vec<u8>> {
    let mut kept = Vec::with_capacity(jpeg.len() / 4);
    kept.extend_from_slice(&[0xFF, SOI]);
    let mut progressive = false;
    for segment in segments(jpeg)? {
        let segment = segment.ok()?;
        match segment.code {
            EOI => {
                kept.extend_from_slice(segment.bytes);
                return progressive.then_some(kept);
            }
            // Start of frame (every kind but DHT, JPG and DAC, which share
            // the range).
            code @ 0xC0..=0xCF if !matches!(code, 0xC4 | 0xC8 | 0xCC) => {
                if code != SOF2 {
                    return None;
                }
                progressive = true;
            }
            SOS => {
                if !progressive {
                    return None;
                }
                if first_coefficient(segment.body)? == 0 {
                    kept.extend_from_slice(segment.bytes);
                    kept.extend_from_slice(segment.data);
                }
                continue;
            }
            _ => {}
        }
        kept.extend_from_slice(segment.bytes);
    }
    None
}

/// The first coefficient (spectral selection start) a scan header's body
/// codes: 0 for DC scans, 1..63 for AC ones.
fn first_coefficient(header: &[u8]) -> Option<u8> {
    // Component count, two bytes per component, then Ss, Se, Ah/Al.
    let components = usize::from(*header.first()?);
    header.get(1 + 2 * components).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{fixture, jpeg_decoder_scaled};

    /// jpeg-decoder's pixels for `jpeg` at 1/8 scale.
    fn eighth(jpeg: &[u8]) -> (Vec<u8>, (u16, u16)) {
        jpeg_decoder_scaled(jpeg, 1)
    }

    fn scans(jpeg: &[u8]) -> usize {
        jpeg.windows(2).filter(|w| w == &[0xFF, SOS]).count()
    }

    /// Pillow's progressive JPEGs (make_fixtures.py): 4:2:0 YCbCr; 4:4:4
    /// with restart markers inside the scans and tables between them;
    /// gray; CMYK. Each decodes at 1/8 scale to the same bytes without
    /// its AC scans, which are gone.
    #[test]
    fn dc_scans_alone_give_the_same_eighth_scale_pixels() {
        for name in [
            "progressive.jpg",
            "progressive-restarts.jpg",
            "progressive-gray.jpg",
            "progressive-cmyk.jpg",
        ] {
            let jpeg = fixture(name);
            let dc = without_ac_scans(&jpeg).unwrap_or_else(|| panic!("{name}"));
            assert!(
                dc.len() < jpeg.len() / 2,
                "{name}: {} of {}",
                dc.len(),
                jpeg.len()
            );
            assert!(scans(&dc) < scans(&jpeg), "{name}");
            assert!(scans(&dc) >= 1, "{name}");
            let ((got, got_size), (want, want_size)) = (eighth(&dc), eighth(&jpeg));
            assert_eq!(got_size, want_size, "{name}");
            let differ = got.iter().zip(&want).filter(|(g, w)| g != w).count();
            assert_eq!(differ, 0, "{name}: {differ} of {} bytes differ", want.len());
        }
    }

    #[test]
    fn anything_but_a_whole_progressive_jpeg_is_left_alone() {
        let progressive = fixture("progressive.jpg");
        assert_eq!(without_ac_scans(&fixture("baseline.jpg")), None);
        assert_eq!(without_ac_scans(&fixture("rgba.png")), None);
        assert_eq!(without_ac_scans(b""), None);
        // Cut anywhere, the walk runs out before EOI.
        for cut in [1, 3, 20, progressive.len() / 2, progressive.len() - 1] {
            assert_eq!(without_ac_scans(&progressive[..cut]), None, "cut at {cut}");
        }
        // A segment length running past the end.
        let mut broken = progressive.clone();
        broken[4] = 0xFF;
        assert_eq!(without_ac_scans(&broken), None);
    }
}
