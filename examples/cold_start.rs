//! The cold first label: how long one upload to `imagefleet serve` with its
//! defaults takes while the fleet is idle at zero workers (no worker
//! process, no model loaded). Each round starts a server on a new data dir,
//! lets it idle past its first tick (1 to 2.6 s, a different point of the
//! tick interval each round), uploads one sample photo and times the answer;
//! with `--after-idle`, it then waits until the fleet is back at zero (the
//! 30 s scale-in delay, then a stop) and times a second upload.
//!
//!     cargo build && cargo run --example cold_start -- --rounds 5 --after-idle
//!
//! `--binary PATH` measures another build (default: target/debug/imagefleet,
//! beside this example); `--image FILE` another photo; anything after `--`
//! goes to `serve` (e.g. `-- --interval-ms 60000`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (ours, serve_args) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (&args[..], &[][..]),
    };
    let option = |name: &str| {
        ours.iter()
            .position(|a| a == name)
            .and_then(|i| ours.get(i + 1).cloned())
    };
    let rounds: usize = option("--rounds").map_or(5, |n| n.parse().expect("--rounds N"));
    let after_idle = ours.iter().any(|a| a == "--after-idle");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let binary = option("--binary").map_or_else(
        || {
            // target/debug/examples/cold_start -> target/debug/imagefleet
            let exe = std::env::current_exe().unwrap();
            exe.parent().unwrap().parent().unwrap().join("imagefleet")
        },
        PathBuf::from,
    );
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build` first, or pass --binary PATH",
        binary.display()
    );
    let image =
        option("--image").map_or_else(|| root.join("tests/samples/chelsea.jpg"), PathBuf::from);
    let bytes = std::fs::read(&image).unwrap();
    println!(
        "imagefleet: {}; serve {}; image {}",
        binary.display(),
        serve_args.join(" "),
        image.display()
    );

    let mut cold = Vec::new();
    let mut idle = Vec::new();
    for round in 1..=rounds {
        let data = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let mut server = Server(
            Command::new(&binary)
                .current_dir(&root)
                .arg("serve")
                .args(serve_args)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .arg("--data-dir")
                .arg(data.path())
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("starting imagefleet serve"),
        );
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        wait(Duration::from_secs(60), "healthy", || {
            client
                .get(format!("{url}/healthz"))
                .send()
                .is_ok_and(|r| r.status().is_success())
        });
        // Idle: the first tick has found nothing to do. 1 to 2.6 s, so the
        // upload falls at a different point of the default 2 s tick each
        // round.
        std::thread::sleep(Duration::from_millis(
            1000 + (400 * (round as u64 - 1)) % 2000,
        ));
        let first = label(&client, &url, &bytes);
        print!(
            "round {round}: cold first label {:.3} s",
            first.as_secs_f64()
        );
        cold.push(first);
        if after_idle {
            wait(Duration::from_secs(300), "an idle fleet", || {
                let status: serde_json::Value = client
                    .get(format!("{url}/status"))
                    .send()
                    .and_then(|r| r.json())
                    .unwrap_or_default();
                // Every worker started has been stopped, and is gone.
                let controller = &status["controller"];
                let (launched, terminated) = (
                    controller["activity"]["launched"].as_u64().unwrap_or(0),
                    controller["activity"]["terminated"].as_u64().unwrap_or(0),
                );
                launched >= 1
                    && terminated >= launched
                    && controller["instances"]
                        .as_array()
                        .is_some_and(Vec::is_empty)
            });
            let again = label(&client, &url, &bytes);
            print!(", after idle {:.3} s", again.as_secs_f64());
            idle.push(again);
        }
        println!();
        server.stop();
    }
    println!("cold first label: median {}", median(&mut cold));
    if after_idle {
        println!("first label after idle: median {}", median(&mut idle));
    }
}

fn label(client: &reqwest::blocking::Client, url: &str, bytes: &[u8]) -> Duration {
    let part = reqwest::blocking::multipart::Part::bytes(bytes.to_vec()).file_name("photo.jpg");
    let form = reqwest::blocking::multipart::Form::new().part("myfile", part);
    let started = Instant::now();
    let response = client
        .post(format!("{url}/"))
        .multipart(form)
        .send()
        .expect("upload");
    let took = started.elapsed();
    let status = response.status();
    let text = response.text().unwrap_or_default();
    assert!(status.is_success(), "{status}: {text}");
    took
}

fn wait(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "not {what} after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn median(values: &mut [Duration]) -> String {
    values.sort();
    let m = values[values.len() / 2];
    let all: Vec<String> = values
        .iter()
        .map(|v| format!("{:.3}", v.as_secs_f64()))
        .collect();
    format!("{:.3} s (of {} s)", m.as_secs_f64(), all.join(", "))
}

/// The server, stopped with SIGTERM (it stops its workers) when done.
struct Server(Child);

impl Server {
    fn stop(&mut self) {
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}
