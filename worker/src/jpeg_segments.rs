//! The marker segments of a JPEG in file order, each scan with its
//! entropy-coded data: the walk both reduced-scale paths make
//! (`jpeg_dc_scans`, `jpeg_reduced`). It checks only the framing (SOI
//! first, lengths inside the file, EOI reached); what a segment says is
//! the caller's business.

/// Start of image, end of image, start of scan.
pub const SOI: u8 = 0xD8;
pub const EOI: u8 = 0xD9;
pub const SOS: u8 = 0xDA;

/// One marker and what belongs to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// The byte after 0xFF.
    pub code: u8,
    /// The marker with its length and body, as in the file (just the
    /// marker for those without a length).
    pub bytes: &'a [u8],
    /// The body after the length.
    pub body: &'a [u8],
    /// A scan's entropy-coded data, up to the next marker; empty for
    /// anything else.
    pub data: &'a [u8],
}

/// The framing is broken: the file ends inside a segment or before EOI, a
/// length is impossible, or bytes stand where a marker must.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// The segments after SOI, up to and including EOI, or `None` if `jpeg`
/// does not start with SOI. After an `Err` the walk ends.
pub fn segments(jpeg: &[u8]) -> Option<Segments<'_>> {
    (jpeg.get(..2)? == [0xFF, SOI]).then_some(Segments {
        jpeg,
        at: 2,
        done: false,
    })
}

pub struct Segments<'a> {
    jpeg: &'a [u8],
    at: usize,
    done: bool,
}

impl<'a> Iterator for Segments<'a> {
    type Item = Result<Segment<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let segment = self.segment();
        self.done = segment.is_none_or(|s| s.code == EOI);
        Some(segment.ok_or(Malformed))
    }
}

impl<'a> Segments<'a> {
    fn segment(&mut self) -> Option<Segment<'a>> {
        let jpeg = self.jpeg;
        // A marker: 0xFF, maybe more 0xFF fill bytes, then its code.
        if *jpeg.get(self.at)? != 0xFF {
            return None;
        }
        while *jpeg.get(self.at + 1)? == 0xFF {
            self.at += 1;
        }
        let start = self.at;
        let code = jpeg[start + 1];
        // Markers without a segment: EOI, restart markers between scans, TEM.
        if matches!(code, EOI | 0x01 | 0xD0..=0xD7) {
            self.at += 2;
            return Some(Segment {
                code,
                bytes: &jpeg[start..start + 2],
                body: &[],
                data: &[],
            });
        }
        let length = usize::from(u16::from_be_bytes([
            *jpeg.get(start + 2)?,
            *jpeg.get(start + 3)?,
        ]));
        if length < 2 {
            return None;
        }
        let end = start + 2 + length;
        let bytes = jpeg.get(start..end)?;
        let data_end = if code == SOS {
            end_of_entropy_coded_data(jpeg, end)?
        } else {
            end
        };
        self.at = data_end;
        Some(Segment {
            code,
            bytes,
            body: &bytes[4..],
            data: &jpeg[end..data_end],
        })
    }
}

/// Where the entropy-coded data starting at `from` ends: the next marker
/// (or the fill bytes before it) other than a stuffed zero (0xFF 0x00) or
/// a restart marker inside the data.
fn end_of_entropy_coded_data(jpeg: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        at += memchr::memchr(0xFF, jpeg.get(at..)?)?;
        match *jpeg.get(at + 1)? {
            0x00 | 0xD0..=0xD7 => at += 1,
            _ => return Some(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SOI, an APP0, a scan whose data holds a stuffed zero and a restart
    /// marker, fill bytes, EOI.
    #[test]
    fn segments_come_in_order_with_their_scan_data() {
        let jpeg = [
            0xFF, SOI, 0xFF, 0xE0, 0, 4, b'J', b'F', 0xFF, SOS, 0, 3, 7, 1, 0xFF, 0x00, 2, 0xFF,
            0xD0, 3, 0xFF, 0xFF, EOI,
        ];
        let walked: Vec<_> = segments(&jpeg).unwrap().collect::<Result<_, _>>().unwrap();
        let codes: Vec<u8> = walked.iter().map(|s| s.code).collect();
        assert_eq!(codes, [0xE0, SOS, EOI]);
        assert_eq!(walked[0].body, b"JF");
        assert_eq!(walked[1].body, [7]);
        assert_eq!(walked[1].data, [1, 0xFF, 0x00, 2, 0xFF, 0xD0, 3]);
        assert_eq!(walked[2].bytes, [0xFF, EOI]);
        // Cut anywhere before EOI, the walk ends in an error.
        for cut in 2..jpeg.len() - 1 {
            let walked: Vec<_> = segments(&jpeg[..cut]).unwrap().collect();
            assert_eq!(walked.last(), Some(&Err(Malformed)), "cut at {cut}");
        }
        assert!(segments(&jpeg[1..]).is_none());
    }
}
