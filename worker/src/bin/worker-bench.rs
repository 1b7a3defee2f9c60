//! The developer benchmark of the classifier: per-stage timings on one
//! thread (median and p90 per image), the start-up time and memory of a
//! fresh process loading the model, and optionally the same model on
//! tract's own operators, the time per operator or node, and onnxruntime's
//! figures on the same model and images measured in the same run
//! (benches/ort/ort_bench.py).
//!
//! ```text
//! cargo run -p imagefleet-worker --bin worker-bench -- \
//!     [--iterations N] [--startup-runs N] [--model FILE] \
//!     [--compare-ort PYTHON] [--ort-script FILE] [--plain-tract] \
//!     [--profile | --profile-nodes] [--kernel-probes] [FILE...]
//! ```
//!
//! `--kernel-probes` needs a build with the `kernel-probes` feature
//! (`--features kernel-probes`).
//!
//! Images default to the repository's tests/samples/*, the model to its
//! models/model.toml.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use clap::Parser;
use imagefleet_worker::bench::{
    format_profile, measure_stages, memory, profile_image, ProfileBy, StageSummary, Summary,
};
use imagefleet_worker::ops::kernel_probes;
use imagefleet_worker::{Classifier, Kernels, ModelManifest};
use serde::Deserialize;

/// What a start-up probe prints once the model is loaded and ready.
const READY: &str = "ready";

/// Errors end the run with their message; there is nothing to recover.
type Result<T> = std::result::Result<T, String>;

/// Per-stage timings of the classifier on one thread, its start-up time and
/// memory, and optional comparisons (plain tract, onnxruntime).
#[derive(Debug, Parser)]
#[command(name = "worker-bench")]
struct Args {
    /// Model manifest (default: models/model.toml in this repository).
    #[arg(long, value_name = "FILE", env = "IMAGEFLEET_MODEL")]
    model: Option<PathBuf>,
    /// Passes over the images.
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// Fresh processes started to time start-up.
    #[arg(long, default_value_t = 3)]
    startup_runs: usize,
    /// Also run benches/ort/ort_bench.py with this Python (which needs
    /// benches/ort/requirements.txt) and print the ratios.
    #[arg(long, value_name = "PYTHON")]
    compare_ort: Option<PathBuf>,
    /// The onnxruntime script (default: benches/ort/ort_bench.py in the tree).
    #[arg(long, value_name = "FILE", requires = "compare_ort")]
    ort_script: Option<PathBuf>,
    /// Also time inference on tract's own operators (what the fast kernels
    /// replace), for a before/after in the same run.
    #[arg(long)]
    plain_tract: bool,
    /// Also time every node of the plan and print where inference time
    /// goes, by operator kind (with --plain-tract, for both plans).
    #[arg(long)]
    profile: bool,
    /// Like --profile, one line per node of the plan (id, operator, output
    /// shape): for work on the kernels.
    #[arg(long)]
    profile_nodes: bool,
    /// Also time every call of the kernels' units of work (a streamed row,
    /// a 7x7 layer) and print each kind and shape's time per call and
    /// share of the FMA peak's work rate (needs `--features kernel-probes`).
    #[arg(long)]
    kernel_probes: bool,
    /// Internal: load the model, print a ready line, exit.
    #[arg(long, hide = true)]
    probe_startup: bool,
    /// Images (default: tests/samples/*).
    files: Vec<PathBuf>,
}

impl Args {
    /// The model manifest, absolute so the start-up probes (and the
    /// onnxruntime script) started elsewhere see the same files.
    fn manifest_path(&self) -> PathBuf {
        let path = self
            .model
            .clone()
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/model.toml"));
        let path = std::path::absolute(&path).unwrap_or(path);
        // Without the `worker/..` the compile-time default carries.
        path.canonicalize().unwrap_or(path)
    }

    fn load(&self, kernels: Kernels) -> Result<Classifier> {
        let path = self.manifest_path();
        Classifier::load_with_kernels(&path, kernels)
            .map_err(|e| format!("loading the model (manifest {}): {e}", path.display()))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = if args.probe_startup {
        probe_startup(&args)
    } else {
        run(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let files = if args.files.is_empty() {
        default_samples(args)?
    } else {
        args.files.clone()
    };
    let images = files
        .iter()
        .map(|f| std::fs::read(f).map_err(|e| format!("reading {}: {e}", f.display())))
        .collect::<Result<Vec<_>>>()?;

    let startup = measure_startup(args)?;
    let loaded = Instant::now();
    let classifier = args.load(Kernels::Fast)?;
    let load_ms = loaded.elapsed().as_secs_f64() * 1000.0;
    // One untimed pass: first-touch page faults and lazy allocations are
    // start-up cost, reported above, not per-image cost.
    measure(&classifier, &images, 1)?;
    let ours = measure(&classifier, &images, args.iterations)?;
    let mem = memory();

    println!(
        "imagefleet worker (tract), 1 thread, {} images x {} iterations",
        images.len(),
        args.iterations
    );
    print_stages(&ours);
    println!(
        "  start-up    median {:8.1} ms (process start to model loaded, {} runs); model load in-process {load_ms:.1} ms",
        startup.median_ms, args.startup_runs
    );
    if let Some(mem) = mem {
        println!(
            "  memory      VmHWM {:.1} MiB, VmRSS {:.1} MiB (this process, after the runs)",
            mem.peak_mib, mem.resident_mib
        );
    }
    if let Some(probe) = &startup.probe_memory {
        println!("  worker at ready: {probe}");
    }

    let profile = match (args.profile, args.profile_nodes) {
        (_, true) => Some(ProfileBy::Node),
        (true, false) => Some(ProfileBy::Operator),
        (false, false) => None,
    };
    if let Some(by) = profile {
        print_profile(&classifier, &images[0], args.iterations, by)?;
    }

    if args.kernel_probes {
        print_kernel_probes(&classifier, &images, args.iterations)?;
    }

    if args.plain_tract {
        let plain = args
            .load(Kernels::Tract)
            .map_err(|e| format!("loading the model on tract's own operators: {e}"))?;
        measure(&plain, &images, 1)?;
        let stages = measure(&plain, &images, args.iterations)?;
        println!();
        println!("same model on tract's own operators (no fast kernels)");
        print_summary("inference", &stages.inference);
        println!(
            "  fast kernels speed-up {:.2}x (median)",
            stages.inference.median_ms / ours.inference.median_ms
        );
        if let Some(by) = profile {
            print_profile(&plain, &images[0], args.iterations, by)?;
        }
    }

    if let Some(python) = &args.compare_ort {
        let ort = run_ort(args, python, &files)?;
        println!();
        println!(
            "{}, {} thread(s), same images and iterations",
            ort.runtime, ort.threads
        );
        let stages = [
            ("decode", &ours.decode, &ort.stages.decode),
            ("preprocess", &ours.preprocess, &ort.stages.preprocess),
            ("inference", &ours.inference, &ort.stages.inference),
            ("total", &ours.total, &ort.total),
        ];
        for (name, _, theirs) in stages {
            print_summary(name, theirs);
        }
        println!(
            "  start-up    {:8.1} ms (interpreter + session + first run); VmHWM {:.1} MiB",
            ort.startup_ms, ort.vm_hwm_mb
        );
        println!();
        println!("ratio imagefleet / onnxruntime (below 1 is faster)");
        for (name, ours, theirs) in stages {
            println!(
                "  {name:<11} median {:5.2}x ({:.2} ms vs {:.2} ms)   mean {:5.2}x ({:.2} ms vs {:.2} ms)",
                ours.median_ms / theirs.median_ms,
                ours.median_ms,
                theirs.median_ms,
                ours.mean_ms / theirs.mean_ms,
                ours.mean_ms,
                theirs.mean_ms
            );
        }
    }
    Ok(())
}

/// Where inference time goes by kernel call (`ops::kernel_probes`):
/// totals over `iterations` passes of the images, per image.
fn print_kernel_probes(
    classifier: &Classifier,
    images: &[Vec<u8>],
    iterations: usize,
) -> Result<()> {
    if !kernel_probes::ENABLED {
        return Err("--kernel-probes needs a build with `--features kernel-probes`".into());
    }
    kernel_probes::take();
    measure(classifier, images, iterations)?;
    let mut counts = kernel_probes::take();
    counts.sort_by_key(|(_, totals)| std::cmp::Reverse(totals.time));
    let runs = (images.len() * iterations) as f64;
    let total: f64 = counts.iter().map(|(_, t)| t.time.as_secs_f64()).sum();
    println!();
    println!("kernel calls (time per image over {runs} runs; GFMA/s per call)");
    println!(
        "  kind                 cin  cout  k/s  width   calls/img   us/call   us/img   GFMA/s"
    );
    for (probe, totals) in &counts {
        let [cin, cout, side, stride, width] = probe.shape;
        let seconds = totals.time.as_secs_f64();
        println!(
            "  {:<18} {cin:>5} {cout:>5} {:>4} {width:>6} {:>11.1} {:>9.2} {:>8.1} {:>8.1}",
            format!("{:?}", probe.kind),
            format!("{side}/{stride}"),
            totals.calls as f64 / runs,
            seconds * 1e6 / totals.calls as f64,
            seconds * 1e6 / runs,
            probe.fmas() as f64 * totals.calls as f64 / seconds / 1e9,
        );
    }
    println!("  sum {:.1} us per image", total * 1e6 / runs);
    Ok(())
}

/// [`measure_stages`], an error when there is nothing to measure.
fn measure(classifier: &Classifier, images: &[Vec<u8>], iterations: usize) -> Result<StageSummary> {
    measure_stages(classifier, images, iterations)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no images to measure".to_owned())
}

/// The operator table: where one image's inference time goes.
fn print_profile(
    classifier: &Classifier,
    image: &[u8],
    iterations: usize,
    by: ProfileBy,
) -> Result<()> {
    let costs = profile_image(classifier, image, iterations, by).map_err(|e| e.to_string())?;
    print!("{}", format_profile(&costs, iterations, by));
    Ok(())
}

fn print_stages(s: &StageSummary) {
    print_summary("decode", &s.decode);
    print_summary("preprocess", &s.preprocess);
    print_summary("inference", &s.inference);
    print_summary("total", &s.total);
}

fn print_summary(name: &str, s: &Summary) {
    println!(
        "  {name:<11} median {:8.2} ms   p90 {:8.2} ms   mean {:8.2} ms",
        s.median_ms, s.p90_ms, s.mean_ms
    );
}

/// The repository root, found from the model manifest (`<root>/models/model.toml`).
fn root(args: &Args) -> PathBuf {
    let manifest = args.manifest_path();
    manifest
        .parent()
        .and_then(Path::parent)
        .map(Path::to_owned)
        .unwrap_or_default()
}

fn default_samples(args: &Args) -> Result<Vec<PathBuf>> {
    let dir = root(args).join("tests/samples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("listing {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            !matches!(ext, "csv" | "md")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The child side of the start-up measurement: load the model exactly as a
/// worker does, say so, report memory, exit.
fn probe_startup(args: &Args) -> Result<()> {
    let _classifier = args.load(Kernels::Fast)?;
    let mem = memory()
        .map(|m| {
            format!(
                "VmHWM {:.1} MiB, VmRSS {:.1} MiB",
                m.peak_mib, m.resident_mib
            )
        })
        .unwrap_or_else(|| "memory unknown".into());
    println!("{READY} {mem}");
    Ok(())
}

struct Startup {
    median_ms: f64,
    probe_memory: Option<String>,
}

/// Wall time from spawning a fresh `worker-bench --probe-startup` (this
/// binary) to its ready line: exec, dynamic linking, runtime set-up, model
/// load and optimisation, i.e. what a new worker costs before its first job.
fn measure_startup(args: &Args) -> Result<Startup> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    let manifest = args.manifest_path();
    let mut times = Vec::new();
    let mut probe_memory = None;
    for _ in 0..args.startup_runs.max(1) {
        let started = Instant::now();
        let mut child = Command::new(&exe)
            .arg("--probe-startup")
            .arg("--model")
            .arg(&manifest)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting the start-up probe: {e}"))?;
        let mut line = String::new();
        let stdout = child.stdout.take().ok_or("probe stdout")?;
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("reading the start-up probe: {e}"))?;
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        let status = child
            .wait()
            .map_err(|e| format!("waiting for the start-up probe: {e}"))?;
        if !status.success() || !line.starts_with(READY) {
            return Err(format!("start-up probe failed ({status})"));
        }
        times.push(elapsed);
        probe_memory = Some(line[READY.len()..].trim().to_owned());
    }
    Ok(Startup {
        median_ms: Summary::of(&times).map_or(0.0, |s| s.median_ms),
        probe_memory,
    })
}

/// The JSON ort_bench.py prints with --json.
#[derive(Debug, Deserialize)]
struct OrtReport {
    runtime: String,
    threads: u32,
    stages: OrtStages,
    total: Summary,
    startup_ms: f64,
    vm_hwm_mb: f64,
}

#[derive(Debug, Deserialize)]
struct OrtStages {
    decode: Summary,
    preprocess: Summary,
    inference: Summary,
}

fn run_ort(args: &Args, python: &Path, files: &[PathBuf]) -> Result<OrtReport> {
    let root = root(args);
    let script = args
        .ort_script
        .clone()
        .unwrap_or_else(|| root.join("benches/ort/ort_bench.py"));
    let model_file = ModelManifest::load(&args.manifest_path())
        .map_err(|e| e.to_string())?
        .file;
    let output = Command::new(python)
        .arg(&script)
        .arg("--json")
        .arg("--iterations")
        .arg(args.iterations.to_string())
        .arg("--model")
        .arg(&model_file)
        .args(files)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running {} {}: {e}", python.display(), script.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}); its requirements are in benches/ort/requirements.txt",
            script.display(),
            output.status
        ));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("reading the JSON printed by {}: {e}", script.display()))
}
