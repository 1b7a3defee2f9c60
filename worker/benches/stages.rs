//! `cargo bench --bench stages`: decode, preprocess and inference of the
//! sample photos on one thread, as median and p90 per image. A plain harness
//! (no criterion) keeps the build light and prints the same figures as
//! `imagefleet bench`, which also times start-up and compares onnxruntime.
//!
//! Arguments: `[--iterations N] [--profile | --profile-nodes] [FILE...]`
//! (default tests/samples/*); `--profile` adds the time per operator kind,
//! `--profile-nodes` per node.

use std::path::{Path, PathBuf};

use imagefleet_worker::bench::{
    format_profile, measure_stages, memory, profile_image, ProfileBy, Summary,
};
use imagefleet_worker::Classifier;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut iterations = 20;
    let mut profile = None;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--iterations" => {
                iterations = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--iterations takes a number")
            }
            "--profile" => profile = Some(ProfileBy::Operator),
            "--profile-nodes" => profile = Some(ProfileBy::Node),
            // cargo bench passes --bench to every harness.
            "--bench" => {}
            other if other.starts_with("--") => {}
            file => files.push(PathBuf::from(file)),
        }
    }
    if files.is_empty() {
        files = ["camera.png", "chelsea.jpg", "coffee.png"]
            .iter()
            .map(|f| root.join("tests/samples").join(f))
            .collect();
    }
    let images: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        .collect();
    let classifier = Classifier::load(&root.join("models/model.toml")).expect("model loads");
    measure_stages(&classifier, &images, 1).expect("warm-up pass");
    let stages = measure_stages(&classifier, &images, iterations)
        .expect("images classify")
        .expect("at least one image");
    println!(
        "stages, 1 thread, {} images x {iterations} iterations",
        images.len()
    );
    let row = |name: &str, s: Summary| {
        println!(
            "  {name:<11} median {:8.2} ms   p90 {:8.2} ms",
            s.median_ms, s.p90_ms
        )
    };
    row("decode", stages.decode);
    row("preprocess", stages.preprocess);
    row("inference", stages.inference);
    row("total", stages.total);
    if let Some(m) = memory() {
        println!(
            "  memory      VmHWM {:.1} MiB, VmRSS {:.1} MiB",
            m.peak_mib, m.resident_mib
        );
    }
    if let Some(by) = profile {
        let costs = profile_image(&classifier, &images[0], iterations, by).expect("profile");
        print!("{}", format_profile(&costs, iterations, by));
    }
}
