//! The embedded service end to end, through the real binary: HTTP upload ->
//! SQLite queue -> worker processes -> directory buckets -> HTTP answer.

use std::time::Duration;

use crate::support::{
    bucket_keys, get_json, sample, upload, upload_concurrently, wait_for, Sampler, Server,
};
use imagefleet::queue::QueueDepth;
use imagefleet::services::Services;

/// The controller grows the fleet from zero for the burst and shrinks it
/// back to zero once the queue is empty.
#[test]
fn hundred_concurrent_uploads_all_get_labels() {
    // No scale-in delay: the test waits for the fleet to shrink to zero.
    let mut server = Server::start(&[
        "serve",
        "--interval-ms",
        "300",
        "--max-instances",
        "4",
        "--scale-in-delay",
        "0",
    ]);
    let status_url = server.url("/status");
    let fleet_size = {
        let url = status_url.clone();
        Sampler::start(move || {
            get_json(&url)["controller"]["instances"]
                .as_array()
                .map_or(0, Vec::len)
        })
    };
    assert_eq!(
        get_json(&status_url)["controller"]["instances"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    upload_concurrently(&server.url("/"), 100, Duration::from_secs(120));

    assert_eq!(bucket_keys(&server.data_dir, "output").len(), 100);
    let services = Services::local(&server.data_dir).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let depths = || {
        runtime.block_on(async {
            (
                services.requests.depth().await.unwrap(),
                services.results.depth().await.unwrap(),
                services.dead_letters.depth().await.unwrap(),
            )
        })
    };
    // A worker deletes the request and then the input just after the
    // answer goes out.
    let (requests, results, dead) = wait_for(
        "the last requests and result messages deleted",
        Duration::from_secs(10),
        || {
            let depths = depths();
            let empty = QueueDepth::default();
            (depths.0 == empty && depths.1 == empty).then_some(depths)
        },
    );
    wait_for("every input deleted", Duration::from_secs(10), || {
        bucket_keys(&server.data_dir, "input")
            .is_empty()
            .then_some(())
    });
    assert_eq!(requests, QueueDepth::default());
    assert_eq!(results, QueueDepth::default());
    assert_eq!(dead, QueueDepth::default());

    // Scale-in: the idle fleet goes back to zero.
    wait_for(
        "the fleet to scale back to zero",
        Duration::from_secs(30),
        || {
            let status = get_json(&status_url);
            status["controller"]["instances"]
                .as_array()
                .unwrap()
                .is_empty()
                .then_some(())
        },
    );
    let peak = fleet_size.finish().into_iter().max().unwrap();
    assert!((1..=4).contains(&peak), "peak instances {peak}, cap 4");

    assert!(server.stop().success());
}

#[test]
fn http_contract_and_errors() {
    let server = Server::start(&["serve", "--workers", "1", "--max-upload-mib", "1"]);
    let client = reqwest::blocking::Client::new();

    // Every accepted field name and both paths; JSON on request.
    for (path, field) in [("/", "myfile"), ("/upload", "file"), ("/upload", "image")] {
        let response = upload(
            &client,
            &server.url(path),
            field,
            "coffee.png",
            sample("coffee.png"),
            false,
        );
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert_eq!(response.text().unwrap(), "espresso");
    }
    let response = upload(
        &client,
        &server.url("/"),
        "myfile",
        "dir/camera.png",
        sample("camera.png"),
        true,
    );
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().unwrap();
    assert_eq!(body["label"], "tripod");
    assert_eq!(body["file_name"], "camera.png");
    assert_eq!(body["status"], "done");
    assert_eq!(body["top5"].as_array().unwrap().len(), 5);
    assert!(body["probability"].as_f64().unwrap() > 0.9);
    assert!(body["timings"]["inference_ms"].as_f64().unwrap() > 0.0);
    assert!(body["timings"]["total_ms"].as_f64().unwrap() > 0.0);
    let id = body["id"].as_str().unwrap().to_owned();
    // The result is kept in the output bucket.
    let stored: serde_json::Value = client
        .get(server.url(&format!("/jobs/{id}")))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(stored["label"], "tripod");

    // Async flow: 202 with an id, then the result.
    let response = upload(
        &client,
        &server.url("/jobs"),
        "myfile",
        "chelsea.jpg",
        sample("chelsea.jpg"),
        false,
    );
    assert_eq!(response.status(), 202);
    let id = response.json::<serde_json::Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut status = serde_json::Value::Null;
    for _ in 0..300 {
        status = client
            .get(server.url(&format!("/jobs/{id}")))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if status["status"] != "pending" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status["status"], "done", "{status}");

    // Errors: the right status and a message that says what is wrong.
    let no_file = client
        .post(server.url("/"))
        .multipart(reqwest::blocking::multipart::Form::new().text("other", "x"))
        .send()
        .unwrap();
    assert_eq!(no_file.status(), 400);
    assert!(no_file.text().unwrap().contains("myfile"));

    let not_multipart = client.post(server.url("/")).body("raw").send().unwrap();
    assert_eq!(not_multipart.status(), 415);

    let empty = upload(
        &client,
        &server.url("/"),
        "myfile",
        "empty.jpg",
        Vec::new(),
        false,
    );
    assert_eq!(empty.status(), 400);

    let text = upload(
        &client,
        &server.url("/"),
        "myfile",
        "notes.jpg",
        b"just some text".to_vec(),
        true,
    );
    assert_eq!(text.status(), 415);
    assert_eq!(
        text.json::<serde_json::Value>().unwrap()["error"],
        "unsupported_format"
    );

    let mut corrupt = sample("coffee.png")[..64].to_vec();
    corrupt.extend_from_slice(&[0u8; 512]);
    let corrupt = upload(
        &client,
        &server.url("/"),
        "myfile",
        "bad.png",
        corrupt,
        true,
    );
    assert_eq!(corrupt.status(), 422);
    let body: serde_json::Value = corrupt.json().unwrap();
    assert_eq!(body["error"], "undecodable");
    assert!(body["id"].is_string(), "a failed job keeps its id: {body}");

    assert_eq!(oversized_upload_status(&server, 2 * 1024 * 1024), 413);

    assert_eq!(
        client
            .get(server.url("/jobs/not-a-uuid"))
            .send()
            .unwrap()
            .status(),
        400
    );
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(
        client
            .get(server.url(&format!("/jobs/{unknown}")))
            .send()
            .unwrap()
            .status(),
        404
    );

    // Refused uploads leave nothing queued.
    let health: serde_json::Value = client
        .get(server.url("/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["queue"]["visible"], 0);
}

/// Sends a multipart upload of `size` bytes over a raw socket and returns the
/// status line's code. The server answers 413 before reading the whole body,
/// which HTTP client libraries report as a broken pipe instead of the
/// response; a writer thread lets us read the answer like a browser would.
fn oversized_upload_status(server: &Server, size: usize) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let boundary = "imagefleetboundary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"myfile\"; filename=\"big.png\"\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let length = head.len() + size + tail.len();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {length}\r\n\r\n{head}",
        server.addr
    );
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(request.as_bytes());
        // A PNG's signature, so the size is what is refused.
        let mut body = vec![0x89; size];
        body[..8].copy_from_slice(b"\x89PNG\r\n\x1a\n");
        let _ = writer.write_all(&body);
        let _ = writer.write_all(tail.as_bytes());
    });
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
        }
    }
    drop(stream);
    let _ = sender.join();
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}
