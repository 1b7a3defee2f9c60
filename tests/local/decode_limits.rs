//! What a client sees when a worker refuses to decode an upload: a cut-off
//! JPEG is 422 `undecodable` (it was 200 "broom"), and a small PNG that
//! would decode to 515 MiB is 413 `too_many_pixels`.

use crate::support::{sample, upload, Server};

/// A PNG of `width` x `height` at 16-bit RGBA: a valid header and an empty
/// compressed stream, which is all the worker reads before refusing it.
fn png_16_bit_rgba_header(width: u32, height: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
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
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[16, 6, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [
        (b"IHDR", ihdr),
        (b"IDAT", vec![0x78, 0x9c]),
        (b"IEND", Vec::new()),
    ] {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(&data);
        out.extend_from_slice(&chunk);
        out.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    out
}

#[test]
fn truncated_and_too_costly_images_are_refused_over_http() {
    let server = Server::start(&["serve", "--workers", "1"]);
    let client = reqwest::blocking::Client::new();

    let jpeg = sample("chelsea.jpg");
    let response = upload(
        &client,
        &server.url("/"),
        "myfile",
        "chelsea.jpg",
        jpeg[..jpeg.len() / 10].to_vec(),
        true,
    );
    assert_eq!(response.status(), 422);
    let body: serde_json::Value = response.json().unwrap();
    assert_eq!(body["error"], "undecodable", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("truncated"),
        "{body}"
    );

    let response = upload(
        &client,
        &server.url("/"),
        "myfile",
        "big.png",
        png_16_bit_rgba_header(7000, 7000),
        true,
    );
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().unwrap();
    assert_eq!(body["error"], "too_many_pixels", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("16-bit RGBA"),
        "{body}"
    );
}
