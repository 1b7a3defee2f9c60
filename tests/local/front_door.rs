//! A front door that holds: hostile or careless clients (slow uploads,
//! half-sent requests, no credentials, clients that leave) get a quick,
//! clear answer while the service keeps answering everyone else, and
//! nothing is kept forever.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{get_json, repo_root, sample, upload, wait_for, Server};

/// The web tier's resident and peak memory, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Opens a connection and sends a multipart upload's head declaring
/// `declared` bytes, then `sent` bytes of a PNG; the rest never comes.
fn unfinished_upload(addr: SocketAddr, declared: usize, sent: usize) -> TcpStream {
    let preamble = "--XyZ\r\nContent-Disposition: form-data; name=\"myfile\"; filename=\"big.png\"\r\nContent-Type: image/png\r\n\r\n";
    let head = format!(
        "POST / HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {}\r\n\r\n{preamble}",
        preamble.len() + declared + 8
    );
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut body = vec![0u8; sent];
    body[..8].copy_from_slice(b"\x89PNG\r\n\x1a\n");
    stream.write_all(&body).unwrap();
    stream
}

/// 40 clients each sending most of a 19 MB upload and then nothing: the
/// uploads stream to the input bucket's disk, so the web tier's memory
/// stays where it was (it used to hold every byte: 25 MB -> 859 MB).
#[test]
fn slow_big_uploads_do_not_grow_the_web_tier() {
    let server = Server::start(&["serve", "--workers", "0", "--body-stall-secs", "60"]);
    let pid = server.child.id();
    let (before, _) = memory_mib(pid);
    let addr = server.addr;
    let clients: Vec<_> = (0..40)
        .map(|_| std::thread::spawn(move || unfinished_upload(addr, 19_000_000, 8_000_000)))
        .collect();
    let streams: Vec<TcpStream> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    // Every byte sent has been read: it is on disk in the bucket's .tmp.
    let tmp = server.data_dir.join("buckets/input/.tmp");
    wait_for(
        "the uploads to reach the disk",
        Duration::from_secs(60),
        || {
            let stored: u64 = std::fs::read_dir(&tmp)
                .unwrap()
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum();
            (stored >= 40 * 7_900_000).then_some(())
        },
    );
    let (during, peak) = memory_mib(pid);
    println!("web tier: {before:.0} MiB before, {during:.0} MiB with 40 uploads open (peak {peak:.0} MiB)");
    // The documented bound (README, Security and limits): 60 MiB of base
    // and buffers plus 64 KiB per connection and 1 MiB per upload.
    assert!(
        peak < 60.0 + 40.0 * (0.0625 + 1.0),
        "peak {peak:.0} MiB with 40 unfinished uploads"
    );
    assert!(get_json(&server.url("/healthz"))["status"] == "ok");
    drop(streams);
    wait_for(
        "the abandoned uploads to be cleared",
        Duration::from_secs(30),
        || (std::fs::read_dir(&tmp).unwrap().count() == 0).then_some(()),
    );
}

/// 1100 connections that sent half a request each: `/healthz` still
/// answers within a second (a newcomer replaces the oldest connection that
/// has not sent a request), and the server closes them all once the header
/// timeout passes (they used to fill the file-descriptor table for good).
#[test]
fn half_sent_requests_do_not_lock_out_healthz() {
    let server = Server::start(&[
        "serve",
        "--workers",
        "0",
        "--max-connections",
        "256",
        "--header-timeout-secs",
        "2",
    ]);
    let mut half_open = Vec::new();
    for _ in 0..1100 {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream
            .write_all(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Le")
            .unwrap();
        half_open.push(stream);
    }
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let asked = Instant::now();
    let response = client.get(server.url("/healthz")).send().unwrap();
    let took = asked.elapsed();
    assert_eq!(response.status(), 200, "{took:?}");
    println!("/healthz answered in {took:?} beside 1100 half-sent requests");
    let fds = std::fs::read_dir(format!("/proc/{}/fd", server.child.id()))
        .unwrap()
        .count();
    // The cap, plus the files the server keeps open anyway.
    assert!(fds < 256 + 40, "the server holds {fds} descriptors");

    // After the header timeout every one of them has been closed.
    std::thread::sleep(Duration::from_secs(3));
    for stream in &mut half_open {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 512];
        match stream.read(&mut buf) {
            Ok(_) => {} // EOF, or the 408/503 hyper or the cap sent first
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("a half-sent request is still open: {e}"),
        }
    }
}

const TOKEN: &str = "0123456789abcdef-test-token";

/// With a token, every route but /healthz needs it (a bearer header, or the
/// cookie a browser can carry); without one, the service will not listen
/// beyond loopback unless told to.
#[test]
fn a_token_guards_every_route_but_healthz() {
    let server = Server::start(&["serve", "--workers", "1", "--auth-token", TOKEN]);
    let client = reqwest::blocking::Client::new();
    assert_eq!(
        client.get(server.url("/healthz")).send().unwrap().status(),
        200
    );
    let refused = client.get(server.url("/status")).send().unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().contains_key("www-authenticate"));
    // (A small body: the refusal comes before the body is read.)
    let head = sample("coffee.png")[..1024].to_vec();
    let refused = upload(&client, &server.url("/"), "myfile", "c.png", head, false);
    assert_eq!(refused.status(), 401);
    let wrong = client
        .get(server.url("/status"))
        .bearer_auth("0123456789abcdef-test-tokeX")
        .send()
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let bearer = reqwest::blocking::Client::builder()
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {TOKEN}").parse().unwrap(),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .unwrap();
    let answered = upload(
        &bearer,
        &server.url("/"),
        "myfile",
        "c.png",
        sample("coffee.png"),
        false,
    );
    assert_eq!(answered.status(), 200);
    assert_eq!(answered.text().unwrap(), "espresso");
    let with_cookie = client
        .get(server.url("/status"))
        .header("Cookie", format!("theme=dark; imagefleet_token={TOKEN}"))
        .send()
        .unwrap();
    assert_eq!(with_cookie.status(), 200);

    // A browser without it gets a form; the right token becomes its cookie.
    let no_redirects = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = no_redirects
        .get(server.url("/dashboard"))
        .header("Accept", "text/html,application/xhtml+xml")
        .send()
        .unwrap();
    assert_eq!(page.status(), 401);
    assert!(page.text().unwrap().contains(r#"action="/login""#));
    let wrong = no_redirects
        .post(server.url("/login"))
        .form(&[("token", "not-the-token-at-all")])
        .send()
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    let login = no_redirects
        .post(server.url("/login"))
        .form(&[("token", TOKEN)])
        .send()
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let dashboard = client
        .get(server.url("/dashboard"))
        .header("Cookie", cookie)
        .send()
        .unwrap();
    assert_eq!(dashboard.status(), 200);
    // Static assets are the same for everyone.
    assert_eq!(
        client
            .get(server.url("/assets/style.css"))
            .send()
            .unwrap()
            .status(),
        200
    );

    // Exposed without a token: refused, with the reason.
    let exposed = Command::new(env!("CARGO_BIN_EXE_imagefleet"))
        .args(["web", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(&server.data_dir)
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(!exposed.status.success());
    let stderr = String::from_utf8_lossy(&exposed.stderr);
    assert!(stderr.contains("--auth-token"), "{stderr}");
    assert!(stderr.contains("--allow-anonymous"), "{stderr}");
}

/// Finished jobs do not pile up: the input goes once the result is stored,
/// and the result once the retention has passed.
#[test]
fn finished_jobs_expire_after_the_retention() {
    let server = Server::start(&["serve", "--workers", "1", "--retention", "3s"]);
    let form = reqwest::blocking::multipart::Form::new().part(
        "myfile",
        reqwest::blocking::multipart::Part::bytes(sample("coffee.png")).file_name("c.png"),
    );
    let accepted: serde_json::Value = reqwest::blocking::Client::new()
        .post(server.url("/jobs"))
        .multipart(form)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = accepted["id"].as_str().unwrap().to_owned();
    let job_url = server.url(&format!("/jobs/{id}"));
    wait_for("the job done", Duration::from_secs(60), || {
        (get_json(&job_url)["status"] == "done").then_some(())
    });
    let done = Instant::now();
    let input = server.data_dir.join("buckets/input").join(&id);
    wait_for("the input deleted", Duration::from_secs(5), || {
        (!input.exists()).then_some(())
    });
    wait_for("the result expired", Duration::from_secs(15), || {
        let status = reqwest::blocking::get(&job_url).unwrap().status();
        (status == 404).then_some(())
    });
    let lived = done.elapsed();
    assert!(
        lived >= Duration::from_secs(2),
        "expired after only {lived:?}"
    );
    println!("result expired {lived:?} after the job was done");
}

/// A client that gives up halfway through an upload is the client's doing:
/// logged as such, not as a server error, and nothing is left behind.
#[test]
fn a_client_that_leaves_mid_upload_is_logged_as_such() {
    let server = Server::start(&["serve", "--workers", "0"]);
    let stream = unfinished_upload(server.addr, 1_000_000, 100_000);
    std::thread::sleep(Duration::from_millis(300));
    drop(stream);
    wait_for("the log line", Duration::from_secs(10), || {
        (!server.logged("upload ended early").is_empty()).then_some(())
    });
    let alarms: Vec<String> = server
        .logged("ERROR")
        .into_iter()
        .chain(server.logged("WARN"))
        .collect();
    assert!(alarms.is_empty(), "logged as a server problem: {alarms:?}");
    let tmp = server.data_dir.join("buckets/input/.tmp");
    wait_for("the partial upload removed", Duration::from_secs(5), || {
        (std::fs::read_dir(&tmp).unwrap().count() == 0).then_some(())
    });
}
