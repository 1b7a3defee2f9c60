//! Big JPEGs at 1/2, 1/4 or 1/8 scale from their low-frequency
//! coefficients alone, the same pixels jpeg-decoder gives at that scale,
//! without its machinery.
//!
//! At 1/`8 / s` scale every 8x8 block becomes `s` x `s` pixels, computed
//! from its top-left `s` x `s` coefficients (at 1/8, the DC alone).
//! jpeg-decoder still keeps all 64 coefficients of every block, hands each
//! component's rows to a thread of its own through a channel (a fifth of a
//! big JPEG's decode on one core is that hand-off), and for a progressive
//! JPEG decodes every AC scan. Here the Huffman decoder keeps only the
//! coefficients the scale needs and walks past the rest, a progressive
//! JPEG's AC scans are skipped whole (at 1/8 only), and the IDCT writes
//! straight into the component planes. IDCT, upsampling and colour
//! conversion are jpeg-decoder's own formulas, so the output is the same to
//! the bit (tested against it).
//!
//! Only the common cases: 8-bit Huffman-coded baseline frames, or
//! progressive ones at 1/8; gray, YCbCr or CMYK (as jpeg-decoder tells them
//! apart); sampling factors of 1 or 2. Anything else (RGB, YCCK, ...), and
//! any stream this decoder finds malformed, gives `None`, and the caller
//! uses jpeg-decoder.

use std::num::Wrapping;

use crate::jpeg_segments::{segments, Segment, EOI, SOS};

/// A decoded image: `channels` bytes per pixel (gray, RGB, or CMYK as
/// jpeg-decoder gives it: inverted), rows packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reduced {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub pixels: Vec<u8>,
}

/// Decodes `jpeg` with `scale` (1, 2 or 4) pixels per block side, each
/// side `ceil(side * scale / 8)`: jpeg-decoder's IDCT size. `None` as the
/// module docs say.
pub fn decode(jpeg: &[u8], scale: usize) -> Option<Reduced> {
    if !matches!(scale, 1 | 2 | 4) {
        return None;
    }
    let mut decoder = Decoder {
        scale,
        ..Decoder::default()
    };
    // `run` succeeds only at EOI.
    decoder.run(jpeg)?;
    decoder.image()
}

#[derive(Debug, Clone)]
struct Component {
    id: u8,
    h: usize,
    v: usize,
    quant: usize,
    /// Pixels at the decoder's scale: jpeg-decoder's `size`.
    width: usize,
    height: usize,
    /// Blocks the component itself covers (what a scan of it alone codes).
    blocks_across: usize,
    blocks_down: usize,
    /// Blocks per row and rows of blocks, padded to whole MCUs.
    blocks_w: usize,
    blocks_h: usize,
    /// The top-left `scale` x `scale` coefficients of each block, in
    /// natural order, as jpeg-decoder stores them (i16).
    coefficients: Vec<i16>,
}

#[derive(Debug, Default)]
struct Decoder {
    width: usize,
    height: usize,
    progressive: bool,
    components: Vec<Component>,
    mcus_x: usize,
    mcus_y: usize,
    /// Pixels per block side.
    scale: usize,
    /// Quantisation tables in natural order.
    quant: [Option<[u16; 64]>; 4],
    dc_tables: [Option<Huffman>; 4],
    ac_tables: [Option<Huffman>; 4],
    restart_interval: usize,
    /// An Adobe segment's colour transform byte.
    adobe: Option<u8>,
    jfif: bool,
}

impl Decoder {
    fn run(&mut self, jpeg: &[u8]) -> Option<()> {
        for segment in segments(jpeg)? {
            let Segment {
                code, body, data, ..
            } = segment.ok()?;
            match code {
                EOI => return Some(()),
                0xC0..=0xC2 => self.frame(body, code == 0xC2)?,
                // Any other frame kind (lossless, arithmetic, hierarchical).
                0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return None,
                0xC4 => self.huffman_tables(body)?,
                0xDB => self.quantisation_tables(body)?,
                0xDD => {
                    self.restart_interval =
                        usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]))
                }
                0xE0 if body.starts_with(b"JFIF\0") => self.jfif = true,
                0xEE if body.len() >= 12 && body.starts_with(b"Adobe\0") => {
                    self.adobe = Some(body[11]);
                }
                SOS => self.scan(body, data)?,
                _ => {}
            }
        }
        None
    }

    fn frame(&mut self, body: &[u8], progressive: bool) -> Option<()> {
        // Above 1/8 a progressive JPEG needs its AC scans: left to
        // jpeg-decoder.
        if !self.components.is_empty() || *body.first()? != 8 || (progressive && self.scale > 1) {
            return None;
        }
        self.progressive = progressive;
        self.height = usize::from(u16::from_be_bytes([*body.get(1)?, *body.get(2)?]));
        self.width = usize::from(u16::from_be_bytes([*body.get(3)?, *body.get(4)?]));
        let count = usize::from(*body.get(5)?);
        if self.width == 0 || self.height == 0 || !matches!(count, 1 | 3 | 4) {
            return None;
        }
        let mut components = Vec::with_capacity(count);
        for c in body.get(6..6 + 3 * count)?.chunks_exact(3) {
            let (h, v) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
            if !matches!(h, 1 | 2) || !matches!(v, 1 | 2) || c[2] > 3 {
                return None;
            }
            components.push(Component {
                id: c[0],
                h,
                v,
                quant: usize::from(c[2]),
                width: 0,
                height: 0,
                blocks_across: 0,
                blocks_down: 0,
                blocks_w: 0,
                blocks_h: 0,
                coefficients: Vec::new(),
            });
        }
        let h_max = components.iter().map(|c| c.h).max()?;
        let v_max = components.iter().map(|c| c.v).max()?;
        // jpeg-decoder's component sizes at this IDCT size.
        self.mcus_x = self.width.div_ceil(h_max * 8);
        self.mcus_y = self.height.div_ceil(v_max * 8);
        let scale = self.scale;
        for c in &mut components {
            c.width = (self.width * c.h * scale).div_ceil(h_max * 8);
            c.height = (self.height * c.v * scale).div_ceil(v_max * 8);
            c.blocks_across = (self.width * c.h).div_ceil(h_max * 8);
            c.blocks_down = (self.height * c.v).div_ceil(v_max * 8);
            c.blocks_w = self.mcus_x * c.h;
            c.blocks_h = self.mcus_y * c.v;
            c.coefficients = vec![0; c.blocks_w * c.blocks_h * scale * scale];
        }
        self.components = components;
        Some(())
    }

    fn quantisation_tables(&mut self, mut body: &[u8]) -> Option<()> {
        while let Some(&pq_tq) = body.first() {
            let (precision, table) = (pq_tq >> 4, usize::from(pq_tq & 15));
            if table > 3 {
                return None;
            }
            let bytes = match precision {
                0 => 1,
                1 => 2,
                _ => return None,
            };
            let values = body.get(1..1 + 64 * bytes)?;
            let mut natural = [0u16; 64];
            for (zigzag, value) in values.chunks_exact(bytes).enumerate() {
                natural[usize::from(UNZIGZAG[zigzag])] = match value {
                    [byte] => u16::from(*byte),
                    _ => u16::from_be_bytes([value[0], value[1]]),
                };
            }
            self.quant[table] = Some(natural);
            body = &body[1 + 64 * bytes..];
        }
        Some(())
    }

    fn huffman_tables(&mut self, mut body: &[u8]) -> Option<()> {
        while let Some(&tc_th) = body.first() {
            let (class, index) = (tc_th >> 4, usize::from(tc_th & 15));
            if class > 1 || index > 3 {
                return None;
            }
            let counts: [u8; 16] = body.get(1..17)?.try_into().ok()?;
            let total: usize = counts.iter().map(|&n| usize::from(n)).sum();
            let symbols = body.get(17..17 + total)?;
            let table = Huffman::new(&counts, symbols)?;
            if class == 0 {
                self.dc_tables[index] = Some(table);
            } else {
                self.ac_tables[index] = Some(table);
            }
            body = &body[17 + total..];
        }
        Some(())
    }

    fn scan(&mut self, header: &[u8], data: &[u8]) -> Option<()> {
        if self.components.is_empty() {
            return None;
        }
        let count = usize::from(*header.first()?);
        let selectors = header.get(1..1 + 2 * count)?;
        let &[ss, se, ahl] = header.get(1 + 2 * count..4 + 2 * count)? else {
            return None;
        };
        let (ah, al) = (ahl >> 4, ahl & 15);
        if self.progressive && ss > 0 {
            // An AC scan: nothing at 1/8 scale (the only one progressive
            // frames are decoded at) reads it.
            return Some(());
        }
        if !self.progressive && (ss != 0 || se != 63 || ahl != 0) {
            return None;
        }
        if self.progressive && (se != 0 || al > 13) {
            return None;
        }
        let mut members = Vec::with_capacity(count);
        for pair in selectors.chunks_exact(2) {
            let index = self.components.iter().position(|c| c.id == pair[0])?;
            let (dc, ac) = (usize::from(pair[1] >> 4), usize::from(pair[1] & 15));
            if dc > 3 || ac > 3 || members.iter().any(|m: &Member| m.index == index) {
                return None;
            }
            let refining = self.progressive && ah > 0;
            let dc_table = if refining {
                None
            } else {
                Some(self.dc_tables[dc].clone()?)
            };
            let ac_table = if self.progressive {
                None
            } else {
                Some(self.ac_tables[ac].clone()?)
            };
            members.push(Member {
                index,
                dc_table,
                ac_table,
                predictor: 0,
            });
        }
        if members.is_empty() {
            return None;
        }
        let mode = match (self.progressive, ah) {
            (false, _) => Mode::Baseline,
            (true, 0) => Mode::DcFirst { al },
            (true, _) => Mode::DcRefine { al },
        };
        ScanDecoder {
            components: &mut self.components,
            members,
            mode,
            bits: Bits::new(data),
            restart_interval: self.restart_interval,
            scale: self.scale,
        }
        .run(self.mcus_x, self.mcus_y)
    }

    fn image(&self) -> Option<Reduced> {
        if self.components.is_empty() {
            return None;
        }
        let scale = self.scale;
        let planes: Vec<Vec<u8>> = self
            .components
            .iter()
            .map(|c| Some(idct_plane(c, self.quant[c.quant].as_ref()?, scale)))
            .collect::<Option<_>>()?;
        let (width, height) = (
            (self.width * scale).div_ceil(8),
            (self.height * scale).div_ceil(8),
        );
        let pixels = if self.components.len() == 1 {
            let c = &self.components[0];
            let mut gray = Vec::with_capacity(c.width * c.height);
            for row in planes[0].chunks_exact(c.blocks_w * scale).take(c.height) {
                gray.extend_from_slice(&row[..c.width]);
            }
            gray
        } else {
            let color = self.color()?;
            upsample_and_convert(&self.components, &planes, (width, height), scale, color)
        };
        Some(Reduced {
            width: u32::try_from(width).ok()?,
            height: u32::try_from(height).ok()?,
            channels: u8::try_from(self.components.len()).ok()?,
            pixels,
        })
    }
}

impl Decoder {
    /// How jpeg-decoder reads the components (`determine_color_transform`),
    /// for the readings this decoder converts; `None` for the others.
    fn color(&self) -> Option<Color> {
        let ids: Vec<u8> = self.components.iter().map(|c| c.id).collect();
        match ids[..] {
            [1, 2, 3] => return Some(Color::YCbCr),
            [1, 34, 35] | [82, 71, 66] | [114, 103, 98] => return None,
            [_, _, _] if self.jfif => return Some(Color::YCbCr),
            _ => {}
        }
        match (self.adobe, ids.len()) {
            (Some(0) | None, 4) => Some(Color::Cmyk),
            (Some(1) | None, 3) => Some(Color::YCbCr),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Color {
    YCbCr,
    /// Four components, each inverted on the way out.
    Cmyk,
}

/// Natural-order position of each zigzag index.
const UNZIGZAG: [u8; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// The component's plane: each block's kept coefficients through
/// jpeg-decoder's IDCT of that size, `scale` x `scale` pixels a block,
/// rows `blocks_w * scale` long.
fn idct_plane(c: &Component, quant: &[u16; 64], scale: usize) -> Vec<u8> {
    if scale == 1 {
        let q = Wrapping(i32::from(quant[0]));
        return c
            .coefficients
            .iter()
            .map(|&dc| idct_1x1(Wrapping(i32::from(dc)) * q))
            .collect();
    }
    let stride = c.blocks_w * scale;
    let mut plane = vec![0u8; stride * c.blocks_h * scale];
    // Dequantised: coefficient (row, column) of the kept square.
    let q = |r: usize, col: usize| Wrapping(i32::from(quant[r * 8 + col]));
    let mut blocks = c.coefficients.chunks_exact(scale * scale);
    for block_row in plane.chunks_exact_mut(stride * scale) {
        for x in (0..stride).step_by(scale) {
            let Some(kept) = blocks.next() else {
                break;
            };
            let s = |r: usize, col: usize| Wrapping(i32::from(kept[r * scale + col])) * q(r, col);
            if scale == 2 {
                idct_2x2(s, &mut block_row[x..], stride);
            } else {
                idct_4x4(s, &mut block_row[x..], stride);
            }
        }
    }
    plane
}

/// jpeg-decoder's `dequantize_and_idct_block_1x1`.
fn idct_1x1(s0: Wrapping<i32>) -> u8 {
    clamp((s0 + Wrapping(128 * 8)) / Wrapping(8))
}

/// jpeg-decoder's `dequantize_and_idct_block_2x2`; `s(r, c)` is the
/// dequantised coefficient.
fn idct_2x2(s: impl Fn(usize, usize) -> Wrapping<i32>, out: &mut [u8], stride: usize) {
    const SCALE_BITS: usize = 3;
    let (x0, x2) = (s(0, 0) + s(1, 0), s(0, 0) - s(1, 0));
    let (x1, x3) = (s(0, 1) + s(1, 1), s(0, 1) - s(1, 1));
    let round = Wrapping(1 << (SCALE_BITS - 1)) + Wrapping(128 << SCALE_BITS);
    let (x0, x2) = (x0 + round, x2 + round);
    out[0] = clamp((x0 + x1) >> SCALE_BITS);
    out[1] = clamp((x0 - x1) >> SCALE_BITS);
    out[stride] = clamp((x2 + x3) >> SCALE_BITS);
    out[stride + 1] = clamp((x2 - x3) >> SCALE_BITS);
}

/// jpeg-decoder's `dequantize_and_idct_block_4x4`.
fn idct_4x4(s: impl Fn(usize, usize) -> Wrapping<i32>, out: &mut [u8], stride: usize) {
    const CONST_BITS: usize = 12;
    const PASS1_BITS: usize = 2;
    const FINAL_BITS: usize = CONST_BITS + PASS1_BITS + 3;
    // jpeg-decoder's stbi_f2f(x), (x * 4096 + 0.5) as i32, of 0.541196100,
    // -1.847759065 and 0.765366865.
    let (c0, c1, c2) = (Wrapping(2217), Wrapping(-7567), Wrapping(3135));
    let mut temp = [Wrapping(0i32); 16];
    for i in 0..4 {
        let (s0, s1, s2, s3) = (s(0, i), s(1, i), s(2, i), s(3, i));
        let x0 = (s0 + s2) << PASS1_BITS;
        let x2 = (s0 - s2) << PASS1_BITS;
        let p1 = (s1 + s3) * c0;
        let t0 = (p1 + s3 * c1 + Wrapping(512)) >> (CONST_BITS - PASS1_BITS);
        let t2 = (p1 + s1 * c2 + Wrapping(512)) >> (CONST_BITS - PASS1_BITS);
        temp[i] = x0 + t2;
        temp[i + 12] = x0 - t2;
        temp[i + 4] = x2 + t0;
        temp[i + 8] = x2 - t0;
    }
    for i in 0..4 {
        let (s0, s1, s2, s3) = (
            temp[i * 4],
            temp[i * 4 + 1],
            temp[i * 4 + 2],
            temp[i * 4 + 3],
        );
        let x0 = (s0 + s2) << CONST_BITS;
        let x2 = (s0 - s2) << CONST_BITS;
        let p1 = (s1 + s3) * c0;
        let t0 = p1 + s3 * c1;
        let t2 = p1 + s1 * c2;
        let round = Wrapping(1 << (FINAL_BITS - 1)) + Wrapping(128 << FINAL_BITS);
        let (x0, x2) = (x0 + round, x2 + round);
        let row = &mut out[i * stride..][..4];
        row[0] = clamp((x0 + t2) >> FINAL_BITS);
        row[3] = clamp((x0 - t2) >> FINAL_BITS);
        row[1] = clamp((x2 + t0) >> FINAL_BITS);
        row[2] = clamp((x2 - t0) >> FINAL_BITS);
    }
}

/// jpeg-decoder's `stbi_clamp`.
fn clamp(x: Wrapping<i32>) -> u8 {
    x.0.clamp(0, 255) as u8
}

/// Every output row: each component upsampled (jpeg-decoder's upsamplers,
/// chosen as it chooses them), then converted to RGB, or CMYK inverted.
fn upsample_and_convert(
    components: &[Component],
    planes: &[Vec<u8>],
    (width, height): (usize, usize),
    scale: usize,
    color: Color,
) -> Vec<u8> {
    let h_max = components.iter().map(|c| c.h).max().unwrap_or(1);
    let v_max = components.iter().map(|c| c.v).max().unwrap_or(1);
    let line = components.iter().map(|c| c.width).max().unwrap_or(0) * h_max;
    let mut lines = vec![vec![0u8; line]; components.len()];
    let channels = components.len();
    let mut pixels = vec![0u8; width * height * channels];
    #[cfg(target_arch = "x86_64")]
    let ssse3 = std::arch::is_x86_feature_detected!("ssse3");
    #[cfg(not(target_arch = "x86_64"))]
    let ssse3 = false;
    for (row, out) in pixels.chunks_exact_mut(width * channels).enumerate() {
        for ((c, plane), buffer) in components.iter().zip(planes).zip(&mut lines) {
            let h1 = c.h == h_max || width == 1;
            let v1 = c.v == v_max || height == 1;
            let (h2, v2) = (c.h * 2 == h_max, c.v * 2 == v_max);
            let input = Plane {
                data: plane,
                width: c.width,
                height: c.height,
                stride: c.blocks_w * scale,
            };
            match (h1, v1, h2, v2) {
                (true, true, _, _) => input.h1v1(row, width, buffer),
                (false, true, true, _) => input.h2v1(row, buffer),
                (true, false, _, true) => input.h1v2(row, width, buffer),
                (false, false, true, true) => input.h2v2(row, buffer),
                _ => input.nearest(row, h_max / c.h, v_max / c.v, buffer),
            }
        }
        if color == Color::Cmyk {
            for (x, pixel) in out.chunks_exact_mut(4).enumerate() {
                for (value, line) in pixel.iter_mut().zip(&lines) {
                    *value = 255 - line[x];
                }
            }
            continue;
        }
        // jpeg-decoder converts all but the last 8 to 15 pixels of a row
        // with its SSSE3 routine where the CPU has it, the rest with its
        // scalar one; they round differently.
        let vector_pixels = if ssse3 {
            (width / 8).saturating_sub(1) * 8
        } else {
            0
        };
        for (x, pixel) in out.chunks_exact_mut(3).enumerate() {
            let (y, cb, cr) = (lines[0][x], lines[1][x], lines[2][x]);
            pixel.copy_from_slice(&if x < vector_pixels {
                ycbcr_to_rgb_ssse3(y, cb, cr)
            } else {
                ycbcr_to_rgb(y, cb, cr)
            });
        }
    }
    pixels
}

/// jpeg-decoder's SSSE3 YCbCr to RGB, one pixel: 16-bit lanes with 6
/// fraction bits, saturating adds and `mulhrs`.
fn ycbcr_to_rgb_ssse3(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    const SHIFT: i32 = 6;
    let sat = |v: i32| v.clamp(i32::from(i16::MIN), i32::from(i16::MAX));
    let mulhrs = |a: i32, b: i32| (a * b + (1 << 14)) >> 15;
    let y = sat((i32::from(y) << SHIFT) + ((1 << SHIFT) >> 1));
    let cb = sat((i32::from(cb) << SHIFT) - (128 << SHIFT));
    let cr = sat((i32::from(cr) << SHIFT) - (128 << SHIFT));
    let cr_140200 = sat(mulhrs(cr, 13173) + cr);
    let cb_034414 = mulhrs(cb, 11276);
    let cr_071414 = mulhrs(cr, 23401);
    let cb_177200 = sat(mulhrs(cb, 25297) + cb);
    let r = sat(y + cr_140200);
    let g = sat(y - sat(cb_034414 + cr_071414));
    let b = sat(y + cb_177200);
    [r, g, b].map(|v| (v >> SHIFT).clamp(0, 255) as u8)
}

struct Plane<'a> {
    data: &'a [u8],
    width: usize,
    height: usize,
    stride: usize,
}

impl Plane<'_> {
    fn row(&self, y: usize) -> &[u8] {
        &self.data[y * self.stride..]
    }

    fn h1v1(&self, row: usize, out_width: usize, out: &mut [u8]) {
        out[..out_width].copy_from_slice(&self.row(row)[..out_width]);
    }

    fn h2v1(&self, row: usize, out: &mut [u8]) {
        let input = self.row(row);
        let w = self.width;
        if w == 1 {
            out[0] = input[0];
            out[1] = input[0];
            return;
        }
        let at = |i: usize| u32::from(input[i]);
        out[0] = input[0];
        out[1] = ((at(0) * 3 + at(1) + 2) >> 2) as u8;
        for i in 1..w - 1 {
            let sample = 3 * at(i) + 2;
            out[i * 2] = ((sample + at(i - 1)) >> 2) as u8;
            out[i * 2 + 1] = ((sample + at(i + 1)) >> 2) as u8;
        }
        out[(w - 1) * 2] = ((at(w - 1) * 3 + at(w - 2) + 2) >> 2) as u8;
        out[(w - 1) * 2 + 1] = input[w - 1];
    }

    /// The rows a vertically doubled output row blends: jpeg-decoder's
    /// float arithmetic, kept as it is so the rows chosen are its rows.
    fn near_far(&self, row: usize) -> (&[u8], &[u8]) {
        let row_near = row as f32 / 2.0;
        let row_far = (row_near + row_near.fract() * 3.0 - 0.25).min((self.height - 1) as f32);
        (self.row(row_near as usize), self.row(row_far as usize))
    }

    fn h1v2(&self, row: usize, out_width: usize, out: &mut [u8]) {
        let (near, far) = self.near_far(row);
        for ((o, n), f) in out[..out_width]
            .iter_mut()
            .zip(&near[..out_width])
            .zip(&far[..out_width])
        {
            *o = ((3 * u32::from(*n) + u32::from(*f) + 2) >> 2) as u8;
        }
    }

    fn h2v2(&self, row: usize, out: &mut [u8]) {
        let (near, far) = self.near_far(row);
        let w = self.width;
        let t = |i: usize| 3 * u32::from(near[i]) + u32::from(far[i]);
        if w == 1 {
            let value = ((t(0) + 2) >> 2) as u8;
            out[0] = value;
            out[1] = value;
            return;
        }
        let mut t1 = t(0);
        out[0] = ((t1 + 2) >> 2) as u8;
        for i in 1..w {
            let t0 = t1;
            t1 = t(i);
            out[i * 2 - 1] = ((3 * t0 + t1 + 8) >> 4) as u8;
            out[i * 2] = ((3 * t1 + t0 + 8) >> 4) as u8;
        }
        out[w * 2 - 1] = ((t1 + 2) >> 2) as u8;
    }

    fn nearest(&self, row: usize, h_scale: usize, v_scale: usize, out: &mut [u8]) {
        let input = &self.row(row / v_scale)[..self.width];
        for (chunk, value) in out.chunks_mut(h_scale).zip(input) {
            chunk.fill(*value);
        }
    }
}

/// jpeg-decoder's fixed-point YCbCr to RGB.
fn ycbcr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    const SHIFT: i32 = 20;
    const HALF: i32 = 1 << (SHIFT - 1);
    let fixed = |x: f32| (x * (1 << SHIFT) as f32 + 0.5) as i32;
    let clamp = |v: i32| (v >> SHIFT).clamp(0, 255) as u8;
    let y = i32::from(y) * (1 << SHIFT) + HALF;
    let (cb, cr) = (i32::from(cb) - 128, i32::from(cr) - 128);
    [
        clamp(y + fixed(1.40200) * cr),
        clamp(y - fixed(0.34414) * cb - fixed(0.71414) * cr),
        clamp(y + fixed(1.77200) * cb),
    ]
}

/// What a scan does to each block it codes.
#[derive(Clone, Copy)]
enum Mode {
    /// DC and AC of each block (the AC only walked past).
    Baseline,
    /// A progressive DC scan's first bits.
    DcFirst { al: u8 },
    /// One more bit of each DC coefficient.
    DcRefine { al: u8 },
}

struct Member {
    index: usize,
    dc_table: Option<Huffman>,
    ac_table: Option<Huffman>,
    predictor: i16,
}

struct ScanDecoder<'a> {
    components: &'a mut [Component],
    members: Vec<Member>,
    mode: Mode,
    bits: Bits<'a>,
    restart_interval: usize,
    /// Pixels per block side.
    scale: usize,
}

impl ScanDecoder<'_> {
    fn run(self, mcus_x: usize, mcus_y: usize) -> Option<()> {
        // The scale a constant in each copy: at 1/8 the block loop keeps
        // nothing past the DC and stores one value.
        match self.scale {
            1 => self.run_at::<1>(mcus_x, mcus_y),
            2 => self.run_at::<2>(mcus_x, mcus_y),
            _ => self.run_at::<4>(mcus_x, mcus_y),
        }
    }

    fn run_at<const S: usize>(mut self, mcus_x: usize, mcus_y: usize) -> Option<()> {
        // One component alone is coded block by block over its own extent
        // (no MCU padding); several are interleaved MCU by MCU.
        let (units_x, units_y) = if self.members.len() == 1 {
            let c = &self.components[self.members[0].index];
            (c.blocks_across, c.blocks_down)
        } else {
            (mcus_x, mcus_y)
        };
        let units = units_x * units_y;
        for unit in 0..units {
            if self.restart_interval > 0 && unit > 0 && unit % self.restart_interval == 0 {
                self.bits.restart()?;
                for m in &mut self.members {
                    m.predictor = 0;
                }
            }
            let (ux, uy) = (unit % units_x, unit / units_x);
            if self.members.len() == 1 {
                self.block::<S>(0, uy, ux)?;
            } else {
                for m in 0..self.members.len() {
                    let c = &self.components[self.members[m].index];
                    let (h, v) = (c.h, c.v);
                    for by in 0..v {
                        for bx in 0..h {
                            self.block::<S>(m, uy * v + by, ux * h + bx)?;
                        }
                    }
                }
            }
        }
        Some(())
    }

    #[inline(always)]
    fn block<const S: usize>(&mut self, member: usize, by: usize, bx: usize) -> Option<()> {
        let m = &mut self.members[member];
        let c = &mut self.components[m.index];
        let first = (by * c.blocks_w + bx) * S * S;
        let kept = c.coefficients.get_mut(first..first + S * S)?;
        match self.mode {
            Mode::DcRefine { al } => {
                if self.bits.bits(1)? == 1 {
                    kept[0] |= 1 << al;
                }
                return Some(());
            }
            Mode::Baseline | Mode::DcFirst { .. } => {
                let size = self.bits.decode(m.dc_table.as_ref()?)?;
                if size > 11 {
                    return None;
                }
                let diff = self.bits.receive_extend(size)?;
                m.predictor = m.predictor.wrapping_add(diff);
                let al = match self.mode {
                    Mode::DcFirst { al } => al,
                    _ => 0,
                };
                kept[0] = m.predictor << al;
            }
        }
        let Some(ac) = &m.ac_table else {
            return Some(());
        };
        // The coefficients the scale keeps, one by one, up to the last of
        // them in zigzag order.
        let last_kept = match S {
            1 => 0,
            2 => 4,
            _ => 24,
        };
        let mut k = 1;
        while k <= last_kept {
            let rs = self.bits.decode(ac)?;
            let (run, size) = (usize::from(rs >> 4), rs & 15);
            if size == 0 {
                match run {
                    15 => k += 16,
                    // End of block; a run of them only in progressive
                    // scans, which jpeg-decoder would carry over.
                    0 => return Some(()),
                    _ => return None,
                }
                continue;
            }
            k += run;
            if k >= 64 {
                return Some(());
            }
            let value = self.bits.receive_extend(size)?;
            let natural = usize::from(UNZIGZAG[k]);
            let (row, column) = (natural / 8, natural % 8);
            if row < S && column < S {
                kept[row * S + column] = value;
            }
            k += 1;
        }
        // The rest walked past, most codes with their value bits at once
        // (`Huffman::skips`).
        while k < 64 {
            self.bits.ensure(16);
            let skip = ac.skips[self.bits.peek(SKIP_LOOKAHEAD)];
            if skip != 0 {
                self.bits.consume(u32::from(skip & 15));
                if skip & SKIP_END != 0 {
                    break;
                }
                k += usize::from(skip >> 4 & 31);
                continue;
            }
            let rs = self.bits.decode(ac)?;
            let (run, size) = (usize::from(rs >> 4), rs & 15);
            if size == 0 {
                match run {
                    15 => k += 16,
                    0 => break,
                    _ => return None,
                }
                continue;
            }
            k += run;
            if k >= 64 {
                break;
            }
            self.bits.skip(size)?;
            k += 1;
        }
        Some(())
    }
}

/// A canonical Huffman table: a 9-bit lookahead for the short codes, the
/// code ranges per length for the rest.
#[derive(Debug, Clone)]
struct Huffman {
    /// `(length << 8) | symbol` for codes of up to LOOKAHEAD bits, 0 for
    /// longer ones.
    fast: Box<[u16; 1 << LOOKAHEAD]>,
    /// Per length 1..=16: the largest code (exclusive end), and the index of
    /// its first symbol minus its first code.
    max_code: [i32; 18],
    offset: [i32; 17],
    symbols: Vec<u8>,
    /// For walking past AC coefficients: for the next SKIP_LOOKAHEAD
    /// bits, when a code and its value bits fit in them, the bits to drop
    /// (low 4 bits) and the coefficients passed (next 5; 16 for a run of
    /// zeros), or SKIP_END for the end of the block; 0 otherwise.
    skips: Box<[u16; 1 << SKIP_LOOKAHEAD]>,
}

const LOOKAHEAD: u32 = 9;
const SKIP_LOOKAHEAD: u32 = 11;
const SKIP_END: u16 = 1 << 9;

impl Huffman {
    fn new(counts: &[u8; 16], symbols: &[u8]) -> Option<Huffman> {
        let mut fast = Box::new([0u16; 1 << LOOKAHEAD]);
        let mut skips = Box::new([0u16; 1 << SKIP_LOOKAHEAD]);
        let mut max_code = [-1i32; 18];
        let mut offset = [0i32; 17];
        let mut code = 0i32;
        let mut k = 0usize;
        for len in 1..=16 {
            let n = usize::from(counts[len - 1]);
            offset[len] = k as i32 - code;
            for _ in 0..n {
                // More codes of this length than it has: not a prefix code.
                if code >= 1 << len {
                    return None;
                }
                let symbol = symbols[k];
                if len as u32 <= LOOKAHEAD {
                    let shift = LOOKAHEAD - len as u32;
                    let first = (code as usize) << shift;
                    for entry in &mut fast[first..first + (1 << shift)] {
                        *entry = ((len as u16) << 8) | u16::from(symbol);
                    }
                }
                let (run, size) = (u16::from(symbol >> 4), u16::from(symbol & 15));
                let skip = match (run, size) {
                    (0, 0) => Some((len as u16, SKIP_END)),
                    (15, 0) => Some((len as u16, 16 << 4)),
                    (_, 0) => None,
                    _ => Some((len as u16 + size, (run + 1) << 4)),
                };
                if let Some((bits, what)) =
                    skip.filter(|&(bits, _)| u32::from(bits) <= SKIP_LOOKAHEAD)
                {
                    let shift = SKIP_LOOKAHEAD - len as u32;
                    let first = (code as usize) << shift;
                    for entry in &mut skips[first..first + (1 << shift)] {
                        *entry = bits | what;
                    }
                }
                code += 1;
                k += 1;
            }
            max_code[len] = code;
            code <<= 1;
        }
        max_code[17] = i32::MAX;
        Some(Huffman {
            fast,
            max_code,
            offset,
            symbols: symbols.to_vec(),
            skips,
        })
    }
}

/// The entropy-coded bits of one scan: stuffed zeros removed, restart
/// markers taken at restarts, zeros past the end (like the decoders we
/// match, which pad a scan cut short).
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
    acc: u64,
    count: u32,
    /// A marker (or the end) was reached: only zeros come in.
    stopped: bool,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits {
            data,
            at: 0,
            acc: 0,
            count: 0,
            stopped: false,
        }
    }

    /// At least `n` (up to 57) bits in `acc`.
    #[inline(always)]
    fn ensure(&mut self, n: u32) {
        if self.count < n {
            self.refill();
        }
    }

    /// The next `n` bits, not consumed (`ensure` them first).
    #[inline(always)]
    fn peek(&self, n: u32) -> usize {
        (self.acc >> (64 - n)) as usize
    }

    #[inline(always)]
    fn consume(&mut self, n: u32) {
        self.acc <<= n;
        self.count -= n;
    }

    #[inline]
    fn refill(&mut self) {
        // Whole bytes at once while none of the next eight is 0xFF (a
        // stuffed byte or a marker).
        if !self.stopped && self.count <= 56 {
            if let Some(next) = self.data.get(self.at..self.at + 8) {
                let word = u64::from_be_bytes(next.try_into().expect("eight bytes"));
                let inverted = !word;
                let has_ff = inverted.wrapping_sub(0x0101_0101_0101_0101)
                    & !inverted
                    & 0x8080_8080_8080_8080;
                if has_ff == 0 {
                    let bytes = (64 - self.count) / 8;
                    let bits = bytes * 8;
                    self.acc |= (word >> (64 - bits)) << (64 - bits - self.count);
                    self.at += bytes as usize;
                    self.count += bits;
                    return;
                }
            }
        }
        while self.count <= 56 {
            let mut byte = 0;
            if !self.stopped {
                match self.data.get(self.at) {
                    Some(0xFF) => {
                        if self.data.get(self.at + 1) == Some(&0) {
                            byte = 0xFF;
                            self.at += 2;
                        } else {
                            self.stopped = true;
                        }
                    }
                    Some(&b) => {
                        byte = b;
                        self.at += 1;
                    }
                    None => self.stopped = true,
                }
            }
            self.acc |= u64::from(byte) << (56 - self.count);
            self.count += 8;
        }
    }

    #[inline]
    fn bits(&mut self, n: u8) -> Option<i32> {
        if n == 0 {
            return Some(0);
        }
        if self.count < u32::from(n) {
            self.refill();
        }
        let value = (self.acc >> (64 - u32::from(n))) as i32;
        self.acc <<= n;
        self.count -= u32::from(n);
        Some(value)
    }

    #[inline]
    fn skip(&mut self, n: u8) -> Option<()> {
        self.bits(n).map(|_| ())
    }

    #[inline]
    fn receive_extend(&mut self, size: u8) -> Option<i16> {
        if size == 0 {
            return Some(0);
        }
        let value = self.bits(size)?;
        let value = if value < 1 << (size - 1) {
            value - (1 << size) + 1
        } else {
            value
        };
        Some(value as i16)
    }

    #[inline(always)]
    fn decode(&mut self, table: &Huffman) -> Option<u8> {
        if self.count < 16 {
            self.refill();
        }
        let look = (self.acc >> (64 - LOOKAHEAD)) as usize;
        let entry = table.fast[look];
        if entry != 0 {
            let len = (entry >> 8) as u8;
            self.acc <<= len;
            self.count -= u32::from(len);
            return Some(entry as u8);
        }
        // Longer codes, one more bit at a time.
        let mut code = (self.acc >> (64 - LOOKAHEAD)) as i32;
        let mut len = LOOKAHEAD as usize;
        while code >= table.max_code[len] {
            len += 1;
            if len > 16 {
                return None;
            }
            code = (self.acc >> (64 - len)) as i32;
        }
        self.acc <<= len;
        self.count -= len as u32;
        table
            .symbols
            .get(usize::try_from(code + table.offset[len]).ok()?)
            .copied()
    }

    /// At a restart: drop the bits left of this interval (the padding of
    /// its last byte, which may not have been read yet), then the RSTn
    /// marker that must follow.
    fn restart(&mut self) -> Option<()> {
        if self.data.get(self.at) != Some(&0xFF) {
            self.at += 1;
        }
        if self.data.get(self.at) != Some(&0xFF)
            || !matches!(self.data.get(self.at + 1), Some(0xD0..=0xD7))
        {
            return None;
        }
        self.at += 2;
        self.acc = 0;
        self.count = 0;
        self.stopped = false;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{fixture, jpeg_decoder_scaled};

    /// jpeg-decoder at IDCT size `scale`: what [`decode`] must give.
    fn reference(jpeg: &[u8], scale: u16) -> Reduced {
        let (pixels, (width, height)) = jpeg_decoder_scaled(jpeg, scale);
        Reduced {
            width: u32::from(width),
            height: u32::from(height),
            channels: (pixels.len() / (usize::from(width) * usize::from(height))) as u8,
            pixels,
        }
    }

    /// Every layout this decoder takes, against jpeg-decoder, to the bit,
    /// at every scale it takes: baseline 4:2:0, 4:2:2 with restart
    /// markers, 4:4:0; progressive 4:2:0, 4:4:4 with restart markers, gray
    /// (1/8 only); Adobe CMYK, baseline and progressive.
    #[test]
    fn reduced_pixels_match_jpeg_decoder() {
        for (name, scale) in [
            "baseline.jpg",
            "baseline-422-restarts.jpg",
            "baseline-440.jpg",
            "cmyk.jpg",
        ]
        .into_iter()
        .flat_map(|name| [1, 2, 4].map(|scale| (name, scale)))
        .chain([
            ("progressive.jpg", 1),
            ("progressive-restarts.jpg", 1),
            ("progressive-gray.jpg", 1),
            ("progressive-cmyk.jpg", 1),
        ]) {
            let jpeg = fixture(name);
            let want = reference(&jpeg, scale);
            let got = decode(&jpeg, usize::from(scale))
                .unwrap_or_else(|| panic!("{name} at {scale}: not decoded"));
            assert_eq!(
                (got.width, got.height, got.channels),
                (want.width, want.height, want.channels),
                "{name} at {scale}"
            );
            let differ = got
                .pixels
                .iter()
                .zip(&want.pixels)
                .filter(|(g, w)| g != w)
                .count();
            assert_eq!(
                differ,
                0,
                "{name} at {scale}: {differ} of {} bytes differ",
                want.pixels.len()
            );
        }
    }

    /// Damaged tables and headers give `None`, never a panic: three
    /// one-bit codes, a DHT cut short, a frame of zero width.
    #[test]
    fn broken_tables_are_refused() {
        assert!(Huffman::new(
            &[3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[1, 2, 3]
        )
        .is_none());
        assert!(Huffman::new(
            &[0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[1, 2, 3]
        )
        .is_some());
        let jpeg = fixture("baseline.jpg");
        let dht = jpeg.windows(2).position(|w| w == [0xFF, 0xC4]).unwrap();
        let mut short = jpeg.clone();
        short[dht + 3] = 10;
        assert_eq!(decode(&short, 1), None);
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        let mut flat = jpeg.clone();
        flat[sof + 7..sof + 9].copy_from_slice(&[0, 0]);
        assert_eq!(decode(&flat, 1), None);
        // Every byte flipped in turn: no panic, whatever the answer.
        for at in 0..jpeg.len() {
            let mut flipped = jpeg.clone();
            flipped[at] ^= 0x5A;
            let _ = decode(&flipped, 1);
            let _ = decode(&flipped, 4);
        }
    }

    #[test]
    fn what_it_does_not_take_is_left_to_jpeg_decoder() {
        // YCCK (the CMYK fixture relabelled: Adobe transform 2), other
        // formats, damage.
        let mut ycck = fixture("cmyk.jpg");
        let adobe = ycck.windows(6).position(|w| w == b"Adobe\0").unwrap();
        ycck[adobe + 11] = 2;
        assert_eq!(reference(&ycck, 1).channels, 4, "jpeg-decoder takes it");
        assert_eq!(decode(&ycck, 1), None);
        assert_eq!(decode(&fixture("rgba.png"), 1), None);
        // Progressive above 1/8, and scales jpeg-decoder has no IDCT for.
        assert_eq!(decode(&fixture("progressive.jpg"), 2), None);
        assert_eq!(decode(&fixture("baseline.jpg"), 3), None);
        let jpeg = fixture("baseline.jpg");
        for cut in [2, 100, jpeg.len() / 2, jpeg.len() - 1] {
            assert_eq!(decode(&jpeg[..cut], 1), None, "cut at {cut}");
        }
    }
}
