//! End-to-end throughput of the embedded pipeline: `imagefleet serve` with a
//! fixed fleet, 100 concurrent uploads of the sample photos per round (as
//! the classic workload generator sends them), several rounds; prints the
//! median images per second and latency per worker count. With
//! `--compare-ort-server PYTHON` the same rounds also go to
//! worker/bench/ort_server.py (one Python process with onnxruntime, the
//! baseline to beat) and the ratio is printed.
//!
//!     cargo bench --bench pipeline [-- --workers 1,2,4 --rounds 5 \
//!         --compare-ort-server /tmp/ortvenv/bin/python]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let option = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let workers: Vec<usize> = option("--workers")
        .unwrap_or_else(|| "1,2,3,4".into())
        .split(',')
        .map(|w| w.parse().expect("--workers takes numbers like 1,2,4"))
        .collect();
    let rounds: usize = option("--rounds").map_or(5, |r| r.parse().unwrap());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let samples: Vec<PathBuf> = ["chelsea.jpg", "coffee.png", "camera.png"]
        .iter()
        .map(|f| root.join("tests/samples").join(f))
        .collect();

    println!("end-to-end: 100 concurrent uploads per round, {rounds} rounds, median of rounds");
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "server", "images/s", "p50 ms", "p90 ms"
    );
    let mut best: Option<f64> = None;
    for &n in &workers {
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_imagefleet"));
        command
            .args(["serve", "--workers", &n.to_string(), "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data.path())
            .env("RUST_LOG", "warn");
        let rate = measure(
            &format!("imagefleet, {n} workers"),
            command,
            port,
            n,
            rounds,
            &samples,
        );
        best = Some(best.map_or(rate, |b: f64| b.max(rate)));
    }
    if let Some(python) = option("--compare-ort-server") {
        let port = free_port();
        let mut command = Command::new(python);
        command
            .arg(root.join("worker/bench/ort_server.py"))
            .args(["--port", &port.to_string()]);
        let rate = measure("python + onnxruntime", command, port, 2, rounds, &samples);
        if let Some(best) = best {
            println!(
                "best imagefleet / python + onnxruntime: {:.2}x",
                best / rate
            );
        }
    }
}

/// Starts the server, warms it up, runs the rounds, prints one row and
/// returns the median images per second.
fn measure(
    name: &str,
    mut command: Command,
    port: u16,
    warm_up_clients: usize,
    rounds: usize,
    samples: &[PathBuf],
) -> f64 {
    let url = format!("http://127.0.0.1:{port}/");
    let mut server = command.stdin(Stdio::null()).spawn().unwrap();
    wait_ready(&url, warm_up_clients, &samples[0]);
    let mut rates = Vec::new();
    let mut p50s = Vec::new();
    let mut p90s = Vec::new();
    for _ in 0..rounds {
        let summary = run_load(&url, 100, 100, samples);
        rates.push(summary["images_per_s"].as_f64().unwrap());
        p50s.push(summary["latency_ms"]["p50"].as_f64().unwrap());
        p90s.push(summary["latency_ms"]["p90"].as_f64().unwrap());
    }
    let rate = median(rates);
    println!(
        "{name:<28} {rate:>10.1} {:>10.0} {:>10.0}",
        median(p50s),
        median(p90s)
    );
    stop(&mut server);
    rate
}

/// `imagefleet load --json`; panics unless every upload got a label.
fn run_load(url: &str, clients: usize, requests: usize, files: &[PathBuf]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_imagefleet"))
        .args(["load", "--json", "--url", url])
        .args(["--clients", &clients.to_string()])
        .args(["--requests", &requests.to_string()])
        .args(files)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "load failed:\n{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("load printed {text:?}: {e}"))
}

/// Waits until the server answers, then sends a few uploads per worker so
/// every worker has loaded the model before the clock starts.
fn wait_ready(url: &str, workers: usize, sample: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = reqwest::blocking::Client::new();
    while client.get(format!("{url}healthz")).send().is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    run_load(url, workers, workers * 4, &[sample.to_owned()]);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn stop(server: &mut Child) {
    unsafe {
        libc::kill(server.id() as i32, libc::SIGTERM);
    }
    server.wait().unwrap();
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
