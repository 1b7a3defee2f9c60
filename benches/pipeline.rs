//! End-to-end throughput of the service as a user starts it, against the
//! servers a user would run instead, on a mixed-format workload.
//!
//! Contenders, each started once and kept running:
//! - `imagefleet serve` with its defaults (a fleet that the policy grows
//!   from zero and shrinks back when idle);
//! - `imagefleet serve --workers N` (the fleet held at N), for each N;
//! - with `--compare-ort-server PYTHON`: benches/ort/ort_server.py, one
//!   Python process with onnxruntime (the plain baseline);
//! - with `--compare-bentoml PYTHON`: benches/ort/bento_service.py, BentoML
//!   with adaptive batching (the framework a user would pick instead).
//!
//! Each round sends every contender the same load (default 100 concurrent
//! clients, 100 uploads) one after the other, so a slow spell of this
//! shared, noisy machine hits them alike; ratios are medians of the
//! per-round ratios. The workload is 100 images in ten encodings and sizes
//! up to 12 megapixels, made from the sample photos by
//! benches/ort/make_bench_set.py (Pillow) with `--python`, else the first
//! Python given above; `--samples` uses the three sample photos instead.
//!
//!     cargo bench --bench pipeline -- --rounds 5 \
//!         --compare-ort-server ~/.cache/imagefleet/ort-venv/bin/python \
//!         --compare-bentoml ~/.cache/imagefleet/bento-venv/bin/python
//!
//! `--binary PATH` measures another build of `imagefleet` (e.g. the one
//! `cargo run` uses); `--workers 1,2` picks the pinned fleets (default 2).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Options {
    workers: Vec<usize>,
    rounds: usize,
    clients: usize,
    requests: usize,
    ort_python: Option<String>,
    bento_python: Option<String>,
    set_python: Option<String>,
    samples: bool,
    binary: PathBuf,
}

impl Options {
    fn parse() -> Options {
        let args: Vec<String> = std::env::args().collect();
        let option = |name: &str| -> Option<String> {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1).cloned())
        };
        let number = |name: &str, default: usize| {
            option(name).map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name} takes a number"))
            })
        };
        Options {
            workers: option("--workers")
                .unwrap_or_else(|| "2".into())
                .split(',')
                .filter(|w| !w.is_empty())
                .map(|w| w.parse().expect("--workers takes numbers like 1,2"))
                .collect(),
            rounds: number("--rounds", 5),
            clients: number("--clients", 100),
            requests: number("--requests", 100),
            ort_python: option("--compare-ort-server"),
            bento_python: option("--compare-bentoml"),
            set_python: option("--python"),
            samples: args.iter().any(|a| a == "--samples"),
            binary: option("--binary").map_or_else(
                || PathBuf::from(env!("CARGO_BIN_EXE_imagefleet")),
                PathBuf::from,
            ),
        }
    }
}

fn main() {
    let options = Options::parse();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let set_dir = tempfile::tempdir().unwrap();
    let files = if options.samples {
        ["chelsea.jpg", "coffee.png", "camera.png"]
            .iter()
            .map(|f| root.join("tests/samples").join(f))
            .collect()
    } else {
        mixed_set(&root, &options, set_dir.path())
    };
    let total_mb: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum::<u64>()
        / 1_000_000;
    println!(
        "workload: {} images ({total_mb} MB), {} clients, {} uploads per round, {} rounds",
        files.len(),
        options.clients,
        options.requests,
        options.rounds
    );
    println!("imagefleet: {}", options.binary.display());

    let mut contenders = Vec::new();
    let data_dirs: Vec<tempfile::TempDir> = Vec::new();
    let mut data_dirs = data_dirs;
    let serve = |workers: Option<usize>, data_dirs: &mut Vec<tempfile::TempDir>| {
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut command = Command::new(&options.binary);
        command
            .current_dir(&root)
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data.path())
            .env("RUST_LOG", "warn");
        if let Some(n) = workers {
            command.args(["--workers", &n.to_string()]);
        }
        data_dirs.push(data);
        (command, port)
    };
    // The default first: it starts from zero workers, as a user's would.
    let (command, port) = serve(None, &mut data_dirs);
    contenders.push(Contender::start(
        "imagefleet serve (default)",
        command,
        port,
        Warmup::None,
        &files,
    ));
    for &n in &options.workers {
        let (command, port) = serve(Some(n), &mut data_dirs);
        contenders.push(Contender::start(
            &format!("imagefleet serve --workers {n}"),
            command,
            port,
            Warmup::Uploads(n * 4),
            &files,
        ));
    }
    if let Some(python) = &options.ort_python {
        let port = free_port();
        let mut command = Command::new(python);
        command
            .arg(root.join("benches/ort/ort_server.py"))
            .args(["--port", &port.to_string()]);
        contenders.push(Contender::start(
            PYTHON,
            command,
            port,
            Warmup::Uploads(4),
            &files,
        ));
    }
    if let Some(python) = &options.bento_python {
        let port = free_port();
        let mut command = Command::new(python);
        command
            .current_dir(root.join("benches/ort"))
            .args(["-m", "bentoml", "serve", "bento_service:Classifier"])
            .args(["--port", &port.to_string()]);
        contenders.push(Contender::start(
            BENTO,
            command,
            port,
            Warmup::Uploads(8),
            &files,
        ));
    }

    for round in 0..options.rounds {
        for contender in &mut contenders {
            let summary = run_load(
                &options.binary,
                &contender.url,
                options.clients,
                options.requests,
                &files,
            );
            contender.rounds.add(&summary);
        }
        eprintln!("round {} of {} done", round + 1, options.rounds);
    }

    let rates = |name: &str| {
        contenders
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.rounds.rates.clone())
    };
    let (python_rates, bento_rates) = (rates(PYTHON), rates(BENTO));
    println!(
        "{:<32} {:>9} {:>8} {:>8} {:>10} {:>10}",
        "server", "images/s", "p50 ms", "p90 ms", "vs python", "vs bentoml"
    );
    for contender in &contenders {
        let ratio = |base: &Option<Vec<f64>>| {
            base.as_ref()
                .filter(|_| contender.name != PYTHON && contender.name != BENTO)
                .map_or(String::new(), |base| {
                    format!("{:.2}x", median_ratio(&contender.rounds.rates, base))
                })
        };
        println!(
            "{:<32} {:>9.1} {:>8.0} {:>8.0} {:>10} {:>10}",
            contender.name,
            median(contender.rounds.rates.clone()),
            median(contender.rounds.p50s.clone()),
            median(contender.rounds.p90s.clone()),
            ratio(&python_rates),
            ratio(&bento_rates),
        );
    }
    // Dropping a contender stops its server (also when a round panics).
    drop(contenders);
}

const PYTHON: &str = "python + onnxruntime";
const BENTO: &str = "bentoml, adaptive batching";

/// The mixed-format set, made by benches/ort/make_bench_set.py.
fn mixed_set(root: &Path, options: &Options, dir: &Path) -> Vec<PathBuf> {
    let python = options
        .set_python
        .clone()
        .or_else(|| options.ort_python.clone())
        .or_else(|| options.bento_python.clone())
        .unwrap_or_else(|| "python3".into());
    let status = Command::new(&python)
        .arg(root.join("benches/ort/make_bench_set.py"))
        .arg(dir)
        .status()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    assert!(
        status.success(),
        "making the mixed-format set needs Pillow (benches/ort/requirements.txt) in {python}; \
         pass --python PYTHON, or --samples for the three sample photos"
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

enum Warmup {
    /// Measured from cold, as a user's first burst would be.
    None,
    /// This many uploads first, so every worker has loaded its model.
    Uploads(usize),
}

/// A server under test: started, warmed up, then loaded round by round.
struct Contender {
    name: String,
    url: String,
    process: Child,
    rounds: Rounds,
}

impl Contender {
    fn start(
        name: &str,
        mut command: Command,
        port: u16,
        warmup: Warmup,
        files: &[PathBuf],
    ) -> Self {
        let url = format!("http://127.0.0.1:{port}/");
        let process = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        wait_healthy(&url, name);
        if let Warmup::Uploads(count) = warmup {
            let binary = PathBuf::from(env!("CARGO_BIN_EXE_imagefleet"));
            run_load(&binary, &url, count, count, &files[..1]);
        }
        Contender {
            name: name.to_owned(),
            url,
            process,
            rounds: Rounds::default(),
        }
    }
}

impl Drop for Contender {
    /// Stops the server, also when the bench panics: a server left running
    /// would load every later measurement on this machine.
    fn drop(&mut self) {
        // SIGTERM to the whole process group would take the bench down too;
        // the servers stop their own children.
        unsafe {
            libc::kill(self.process.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(40);
        while matches!(self.process.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = self.process.kill();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The per-round figures of one server.
#[derive(Default)]
struct Rounds {
    rates: Vec<f64>,
    p50s: Vec<f64>,
    p90s: Vec<f64>,
}

impl Rounds {
    /// Records one `load --json` summary.
    fn add(&mut self, summary: &Value) {
        self.rates.push(summary["images_per_s"].as_f64().unwrap());
        self.p50s
            .push(summary["latency_ms"]["p50"].as_f64().unwrap());
        self.p90s
            .push(summary["latency_ms"]["p90"].as_f64().unwrap());
    }
}

/// `imagefleet load --json`; panics unless every upload got a 200.
fn run_load(binary: &Path, url: &str, clients: usize, requests: usize, files: &[PathBuf]) -> Value {
    let out = Command::new(binary)
        .args(["load", "--json", "--url", url])
        .args(["--clients", &clients.to_string()])
        .args(["--requests", &requests.to_string()])
        .args(files)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "load on {url} failed:\n{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("load printed {text:?}: {e}"))
}

fn wait_healthy(url: &str, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let client = reqwest::blocking::Client::new();
    loop {
        if let Ok(response) = client.get(format!("{url}healthz")).send() {
            if response.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{name} did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The median of round-by-round ratios.
fn median_ratio(ours: &[f64], base: &[f64]) -> f64 {
    median(ours.iter().zip(base).map(|(a, b)| a / b).collect())
}
