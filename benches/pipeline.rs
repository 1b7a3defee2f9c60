//! End-to-end throughput of the embedded pipeline: `imagefleet serve` with a
//! fixed fleet, 100 concurrent uploads of the sample photos per round (as
//! the classic workload generator sends them), several rounds; prints the
//! median images per second and latency per worker count.
//!
//!     cargo bench --bench pipeline [-- --workers 1,2,4 --rounds 5]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let option = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
            .unwrap_or_else(|| default.to_owned())
    };
    let workers: Vec<usize> = option("--workers", "1,2,3,4")
        .split(',')
        .map(|w| w.parse().expect("--workers takes numbers like 1,2,4"))
        .collect();
    let rounds: usize = option("--rounds", "5").parse().unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let samples: Vec<PathBuf> = ["chelsea.jpg", "coffee.png", "camera.png"]
        .iter()
        .map(|f| root.join("tests/samples").join(f))
        .collect();

    println!("end-to-end: 100 concurrent uploads per round, {rounds} rounds, median of rounds");
    println!(
        "{:>8} {:>12} {:>10} {:>10}",
        "workers", "images/s", "p50 ms", "p90 ms"
    );
    for &n in &workers {
        let data = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/");
        let mut server = Command::new(env!("CARGO_BIN_EXE_imagefleet"))
            .args([
                "serve",
                "--workers",
                &n.to_string(),
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--data-dir")
            .arg(data.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        wait_ready(&url, n);
        let mut rates = Vec::new();
        let mut p50s = Vec::new();
        let mut p90s = Vec::new();
        for _ in 0..rounds {
            let (rate, p50, p90) = load_round(&url, &samples);
            rates.push(rate);
            p50s.push(p50);
            p90s.push(p90);
        }
        println!(
            "{n:>8} {:>12.1} {:>10.0} {:>10.0}",
            median(rates),
            median(p50s),
            median(p90s)
        );
        stop(&mut server);
    }
}

/// Runs `imagefleet load` and reads its summary lines.
fn load_round(url: &str, samples: &[PathBuf]) -> (f64, f64, f64) {
    let out = Command::new(env!("CARGO_BIN_EXE_imagefleet"))
        .args([
            "load",
            "--url",
            url,
            "--clients",
            "100",
            "--requests",
            "100",
        ])
        .args(samples)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "load failed:\n{text}");
    let number_after = |marker: &str| -> f64 {
        let start = text
            .find(marker)
            .unwrap_or_else(|| panic!("no {marker:?} in {text}"))
            + marker.len();
        text[start..]
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let rate = {
        let line = text.lines().next().unwrap();
        let field = line.split(": ").nth(1).unwrap();
        field.split_whitespace().next().unwrap().parse().unwrap()
    };
    (rate, number_after("p50 "), number_after("p90 "))
}

/// Waits until the web tier answers and `workers` workers have loaded the
/// model (one warm-up upload per worker).
fn wait_ready(url: &str, workers: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = reqwest::blocking::Client::new();
    while client.get(format!("{url}healthz")).send().is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let sample = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/samples/coffee.png");
    let out = Command::new(env!("CARGO_BIN_EXE_imagefleet"))
        .args([
            "load",
            "--url",
            url,
            "--clients",
            &workers.to_string(),
            "--requests",
            &(workers * 4).to_string(),
        ])
        .arg(sample)
        .output()
        .unwrap();
    assert!(out.status.success());
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
