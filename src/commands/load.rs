//! `imagefleet load`: a workload generator in the manner of the classic
//! course one: many client threads upload images at once and we report
//! throughput and latency.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The upload endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8080/")]
    pub url: String,
    /// Client threads uploading at once.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Uploads in all, cycling through the files.
    #[arg(long, default_value_t = 100)]
    pub requests: usize,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// Print the summary as one JSON object (for scripts and benches).
    #[arg(long)]
    pub json: bool,
    /// Image files to upload.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

struct Outcome {
    latency: Duration,
    /// `label` for a 200, else `HTTP <status>` or the transport error.
    answer: String,
}

pub fn run(args: LoadArgs) -> anyhow::Result<bool> {
    let files: Vec<(String, Vec<u8>)> = args
        .files
        .iter()
        .map(|path| {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Ok((display(path), bytes))
        })
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!files.is_empty(), "give at least one image file");
    let files = Arc::new(files);
    let next = Arc::new(AtomicUsize::new(0));
    let outcomes = Arc::new(Mutex::new(Vec::with_capacity(args.requests)));
    let started = Instant::now();
    let threads: Vec<_> = (0..args.clients.max(1))
        .map(|_| {
            let (files, next, outcomes) =
                (Arc::clone(&files), Arc::clone(&next), Arc::clone(&outcomes));
            let (url, total, timeout) = (
                args.url.clone(),
                args.requests,
                Duration::from_secs(args.timeout_secs),
            );
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(timeout)
                    .build()?;
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total {
                        return Ok::<_, reqwest::Error>(());
                    }
                    let (name, bytes) = &files[index % files.len()];
                    let outcome = upload(&client, &url, name, bytes.clone());
                    outcomes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(outcome);
                }
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
    }
    let elapsed = started.elapsed();
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap_or_else(|p| p.into_inner()));
    report(&summarise(&outcomes, elapsed), args.json)
}

fn upload(client: &reqwest::blocking::Client, url: &str, name: &str, bytes: Vec<u8>) -> Outcome {
    let started = Instant::now();
    let part = reqwest::blocking::multipart::Part::bytes(bytes).file_name(name.to_owned());
    let form = reqwest::blocking::multipart::Form::new().part("myfile", part);
    let answer = match client.post(url).multipart(form).send() {
        Ok(response) if response.status().is_success() => response.text().unwrap_or_default(),
        Ok(response) => format!("HTTP {}", response.status().as_u16()),
        Err(e) => format!("error: {e}"),
    };
    Outcome {
        latency: started.elapsed(),
        answer,
    }
}

/// What a load run measured; `load --json` prints it as one object.
#[derive(Debug, Serialize)]
struct LoadSummary<'a> {
    requests: usize,
    seconds: f64,
    images_per_s: f64,
    failed: usize,
    /// p50, p90, p99 and max, in milliseconds; absent without requests.
    latency_ms: Option<Latency>,
    /// How often each answer (label, `HTTP <status>` or error) came back.
    answers: BTreeMap<&'a str, usize>,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

fn summarise(outcomes: &[Outcome], elapsed: Duration) -> LoadSummary<'_> {
    let mut latencies: Vec<f64> = outcomes
        .iter()
        .map(|o| o.latency.as_secs_f64() * 1e3)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let latency_ms = (!latencies.is_empty()).then(|| Latency {
        p50: quantile(0.5),
        p90: quantile(0.9),
        p99: quantile(0.99),
        max: latencies[latencies.len() - 1],
    });
    let mut answers: BTreeMap<&str, usize> = BTreeMap::new();
    for outcome in outcomes {
        *answers.entry(outcome.answer.as_str()).or_default() += 1;
    }
    LoadSummary {
        requests: outcomes.len(),
        seconds: elapsed.as_secs_f64(),
        images_per_s: outcomes.len() as f64 / elapsed.as_secs_f64(),
        failed: outcomes
            .iter()
            .filter(|o| o.answer.starts_with("HTTP ") || o.answer.starts_with("error: "))
            .count(),
        latency_ms,
        answers,
    }
}

/// Prints the summary; false when any request failed.
fn report(summary: &LoadSummary, json: bool) -> anyhow::Result<bool> {
    if json {
        println!("{}", serde_json::to_string(summary)?);
        return Ok(summary.failed == 0);
    }
    println!(
        "{} requests in {:.2} s: {:.1} images/s; {} failed",
        summary.requests, summary.seconds, summary.images_per_s, summary.failed
    );
    if let Some(l) = &summary.latency_ms {
        println!(
            "latency ms: p50 {:.0}, p90 {:.0}, p99 {:.0}, max {:.0}",
            l.p50, l.p90, l.p99, l.max
        );
    }
    for (answer, count) in &summary.answers {
        println!("{count:>6}  {answer}");
    }
    Ok(summary.failed == 0)
}

fn display(path: &std::path::Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
