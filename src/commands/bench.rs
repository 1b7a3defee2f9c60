//! `imagefleet bench`: per-stage timings of the worker on one thread, its
//! start-up time and memory, and optionally onnxruntime's figures on the same
//! model and images measured in the same run (worker/bench/ort_bench.py).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use imagefleet_worker::bench::{
    format_profile, measure_stages, memory, profile_image, ProfileBy, StageSummary, Summary,
};
use imagefleet_worker::{Classifier, Kernels};
use serde::Deserialize;

use crate::cli::BenchArgs;

/// What a start-up probe prints once the model is loaded and ready.
const READY: &str = "ready";

pub fn run(args: BenchArgs) -> anyhow::Result<bool> {
    if args.probe_startup {
        return probe_startup(&args);
    }
    let files = if args.files.is_empty() {
        default_samples(&args)?
    } else {
        args.files.clone()
    };
    let images = files
        .iter()
        .map(|f| std::fs::read(f).with_context(|| format!("reading {}", f.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let startup = measure_startup(&args)?;
    let loaded = Instant::now();
    let classifier = args.model.load()?;
    let load_ms = loaded.elapsed().as_secs_f64() * 1000.0;
    // One untimed pass: first-touch page faults and lazy allocations are
    // start-up cost, reported above, not per-image cost.
    measure_stages(&classifier, &images, 1)?;
    let ours =
        measure_stages(&classifier, &images, args.iterations)?.context("no images to measure")?;
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

    if args.plain_tract {
        let plain = Classifier::load_with_kernels(&args.model.manifest_path(), Kernels::Tract)
            .context("loading the model on tract's own operators")?;
        measure_stages(&plain, &images, 1)?;
        let stages =
            measure_stages(&plain, &images, args.iterations)?.context("no images to measure")?;
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
        let ort = run_ort(&args, python, &files)?;
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
        println!("ratio imagefleet / onnxruntime (median; below 1 is faster)");
        for (name, ours, theirs) in stages {
            println!(
                "  {name:<11} {:6.2}x   ({:.2} ms vs {:.2} ms)",
                ours.median_ms / theirs.median_ms,
                ours.median_ms,
                theirs.median_ms
            );
        }
    }
    Ok(true)
}

/// The operator table: where one image's inference time goes.
fn print_profile(
    classifier: &Classifier,
    image: &[u8],
    iterations: usize,
    by: ProfileBy,
) -> anyhow::Result<()> {
    let costs = profile_image(classifier, image, iterations, by)?;
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
        "  {name:<11} median {:8.2} ms   p90 {:8.2} ms",
        s.median_ms, s.p90_ms
    );
}

/// The repository root, found from the model manifest (<root>/models/model.toml).
fn root(args: &BenchArgs) -> PathBuf {
    let manifest = crate::paths::absolute(&args.model.manifest_path());
    manifest
        .parent()
        .and_then(Path::parent)
        .map(Path::to_owned)
        .unwrap_or_default()
}

fn default_samples(args: &BenchArgs) -> anyhow::Result<Vec<PathBuf>> {
    let dir = root(args).join("tests/samples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
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
fn probe_startup(args: &BenchArgs) -> anyhow::Result<bool> {
    let _classifier = args.model.load()?;
    let mem = memory()
        .map(|m| {
            format!(
                "VmHWM {:.1} MiB, VmRSS {:.1} MiB",
                m.peak_mib, m.resident_mib
            )
        })
        .unwrap_or_else(|| "memory unknown".into());
    println!("{READY} {mem}");
    Ok(true)
}

struct Startup {
    median_ms: f64,
    probe_memory: Option<String>,
}

/// Wall time from spawning a fresh `imagefleet bench --probe-startup` to its
/// ready line: exec, dynamic linking, runtime set-up, model load and
/// optimisation, i.e. what a new worker costs before its first job.
fn measure_startup(args: &BenchArgs) -> anyhow::Result<Startup> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let manifest = crate::paths::absolute(&args.model.manifest_path());
    let mut times = Vec::new();
    let mut probe_memory = None;
    for _ in 0..args.startup_runs.max(1) {
        let started = Instant::now();
        let mut child = Command::new(&exe)
            .arg("bench")
            .arg("--probe-startup")
            .arg("--model")
            .arg(&manifest)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the start-up probe")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("probe stdout")?).read_line(&mut line)?;
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        let status = child.wait()?;
        if !status.success() || !line.starts_with(READY) {
            bail!("start-up probe failed ({status})");
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

fn run_ort(args: &BenchArgs, python: &Path, files: &[PathBuf]) -> anyhow::Result<OrtReport> {
    let root = root(args);
    let script = args
        .ort_script
        .clone()
        .unwrap_or_else(|| root.join("worker/bench/ort_bench.py"));
    let model_file = {
        let manifest = imagefleet_worker::ModelManifest::load(&args.model.manifest_path())?;
        manifest.file
    };
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
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed ({}); its requirements are in worker/bench/requirements.txt",
            script.display(),
            output.status
        );
    }
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("reading the JSON printed by {}", script.display()))
}
