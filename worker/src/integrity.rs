//! Whether an upload holds a whole image, checked from its structure before
//! decoding. Some decoders fill missing data with grey instead of failing:
//! both JPEG decoders (zune-jpeg through the image crate, and jpeg-decoder
//! on the reduced-scale path) returned a picture for the first 10% of a
//! file, which was then classified. PNG, GIF, BMP, TIFF and WebP decoders
//! fail on missing pixel data themselves; a WebP is also checked against the
//! length its RIFF header declares.

use image::ImageFormat;

/// What the marker walk learned about a JPEG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegLayout {
    /// Progressive (SOF2 and the like): the decoder keeps every DCT
    /// coefficient of the image in memory until the last scan.
    pub progressive: bool,
    /// Colour components of the frame (1 gray, 3 YCbCr, 4 CMYK).
    pub components: u8,
}

/// Refuses an upload whose structure shows it is cut short. `Ok` carries
/// the JPEG layout for JPEGs.
pub fn check_complete(format: ImageFormat, bytes: &[u8]) -> Result<Option<JpegLayout>, String> {
    match format {
        ImageFormat::Jpeg => jpeg_layout(bytes).map(Some),
        ImageFormat::WebP => riff_complete(bytes).map(|()| None),
        _ => Ok(None),
    }
}

const TRUNCATED: &str = "the file is truncated: it ends before the image data does";

/// Walks the JPEG's segments from SOI to EOI, skipping each by its length
/// (so a thumbnail inside EXIF, with its own EOI, is skipped whole) and
/// each scan's entropy-coded data up to the next marker. Data after EOI
/// (some cameras append more) is ignored.
pub fn jpeg_layout(bytes: &[u8]) -> Result<JpegLayout, String> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err("not a JPEG: no start-of-image marker".into());
    }
    let mut layout: Option<JpegLayout> = None;
    let mut scans = 0usize;
    let mut at = 2usize;
    loop {
        // A marker: 0xFF, optional fill bytes 0xFF, then the code. Stray
        // bytes before it are skipped, as libjpeg does (with a warning):
        // some encoders leave padding between segments.
        at += bytes
            .get(at..)
            .and_then(|rest| rest.iter().position(|&b| b == 0xFF))
            .ok_or(TRUNCATED)?;
        while *bytes.get(at).ok_or(TRUNCATED)? == 0xFF {
            at += 1;
        }
        let marker = bytes[at];
        at += 1;
        match marker {
            0xD9 => break,
            // Standalone markers: restart markers and TEM carry no length.
            0xD0..=0xD7 | 0x01 => continue,
            0x00 => return Err(format!("corrupt JPEG: stray 0xFF00 at byte {}", at - 2)),
            _ => {}
        }
        let length = bytes
            .get(at..at + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            .ok_or(TRUNCATED)?;
        if length < 2 {
            return Err(format!(
                "corrupt JPEG: segment length {length} at byte {at}"
            ));
        }
        let segment = bytes.get(at + 2..at + length).ok_or(TRUNCATED)?;
        at += length;
        match marker {
            // Start of frame; 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) share
            // the range but are not frames.
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                let components = *segment.get(5).ok_or("corrupt JPEG: short frame header")?;
                layout = Some(JpegLayout {
                    // SOF2, SOF6, SOF10, SOF14: progressive.
                    progressive: matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE),
                    components,
                });
            }
            0xDA => {
                scans += 1;
                at = end_of_entropy_data(bytes, at)?;
            }
            _ => {}
        }
    }
    match layout {
        Some(layout) if scans > 0 => Ok(layout),
        Some(_) => Err("corrupt JPEG: no image data (no scan before end of image)".into()),
        None => Err("corrupt JPEG: no frame header".into()),
    }
}

/// The offset of the marker that ends the entropy-coded data starting at
/// `at`: a 0xFF not followed by 0x00 (a stuffed byte) or a restart marker.
fn end_of_entropy_data(bytes: &[u8], mut at: usize) -> Result<usize, String> {
    loop {
        let next = bytes
            .get(at..)
            .and_then(|rest| rest.iter().position(|&b| b == 0xFF))
            .ok_or(TRUNCATED)?;
        at += next;
        match *bytes.get(at + 1).ok_or(TRUNCATED)? {
            0x00 | 0xD0..=0xD7 => at += 2,
            // Fill bytes before a marker.
            0xFF => at += 1,
            _ => return Ok(at),
        }
    }
}

/// A WebP is a RIFF file whose header states its length; the decoder
/// accepted files missing their last bytes.
fn riff_complete(bytes: &[u8]) -> Result<(), String> {
    let declared = bytes
        .get(4..8)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(TRUNCATED)?;
    // The size counts everything after the 8-byte RIFF header; odd sizes
    // are padded to even in the file.
    let needed = 8 + u64::from(declared);
    if (bytes.len() as u64) < needed {
        return Err(format!(
            "the file is truncated: its header declares {needed} bytes, it has {}",
            bytes.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(marker: u8, data: &[u8]) -> Vec<u8> {
        let mut out = vec![0xFF, marker];
        out.extend_from_slice(&((data.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(data);
        out
    }

    /// SOI, an APP1 holding a whole thumbnail JPEG (SOI..EOI), a frame
    /// header, one scan with stuffed bytes and a restart marker, EOI.
    fn tiny_jpeg(frame: u8) -> Vec<u8> {
        let mut jpeg = vec![0xFF, 0xD8];
        jpeg.extend(segment(0xE1, &[b'E', b'x', 0xFF, 0xD8, 0xFF, 0xD9]));
        jpeg.extend(segment(
            frame,
            &[8, 0, 16, 0, 16, 3, 1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0],
        ));
        jpeg.extend(segment(0xDA, &[1, 1, 0, 0, 63, 0]));
        jpeg.extend([0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56]);
        jpeg.extend([0xFF, 0xD9]);
        jpeg
    }

    #[test]
    fn a_whole_jpeg_passes_and_every_shorter_prefix_fails() {
        let jpeg = tiny_jpeg(0xC0);
        assert_eq!(
            jpeg_layout(&jpeg),
            Ok(JpegLayout {
                progressive: false,
                components: 3
            })
        );
        assert!(jpeg_layout(&tiny_jpeg(0xC2)).unwrap().progressive);
        // The thumbnail's EOI inside APP1 does not end the walk early.
        for cut in 0..jpeg.len() {
            assert!(jpeg_layout(&jpeg[..cut]).is_err(), "prefix of {cut} bytes");
        }
        // Padding between segments is skipped; bytes after EOI are ignored.
        let mut padded = jpeg[..2].to_vec();
        padded.extend_from_slice(&[0, 0]);
        padded.extend_from_slice(&jpeg[2..]);
        assert!(jpeg_layout(&padded).is_ok());
        let mut trailing = jpeg.clone();
        trailing.extend_from_slice(b"trailing data a camera added");
        assert!(jpeg_layout(&trailing).is_ok());
    }

    #[test]
    fn a_riff_shorter_than_declared_fails() {
        let mut webp = b"RIFF\x0c\x00\x00\x00WEBPVP8 \x00\x00\x00\x00".to_vec();
        assert!(riff_complete(&webp).is_ok());
        webp.pop();
        assert!(riff_complete(&webp).is_err());
    }
}
