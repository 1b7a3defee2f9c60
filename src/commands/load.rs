//! `imagefleet load`: a workload generator in the manner of the classic
//! course one: many client threads upload images at once and we report
//! throughput and latency.

use std::collections::BTreeMap;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cli::LoadArgs;

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
    Ok(report(&outcomes, elapsed))
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

/// Prints the summary; false when any request failed.
fn report(outcomes: &[Outcome], elapsed: Duration) -> bool {
    let mut latencies: Vec<f64> = outcomes
        .iter()
        .map(|o| o.latency.as_secs_f64() * 1e3)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let mut answers: BTreeMap<&str, usize> = BTreeMap::new();
    for outcome in outcomes {
        *answers.entry(outcome.answer.as_str()).or_default() += 1;
    }
    let failed = outcomes
        .iter()
        .filter(|o| o.answer.starts_with("HTTP ") || o.answer.starts_with("error: "))
        .count();
    println!(
        "{} requests in {:.2} s: {:.1} images/s; {} failed",
        outcomes.len(),
        elapsed.as_secs_f64(),
        outcomes.len() as f64 / elapsed.as_secs_f64(),
        failed
    );
    if !latencies.is_empty() {
        println!(
            "latency ms: p50 {:.0}, p90 {:.0}, p99 {:.0}, max {:.0}",
            quantile(0.5),
            quantile(0.9),
            quantile(0.99),
            latencies[latencies.len() - 1]
        );
    }
    for (answer, count) in answers {
        println!("{count:>6}  {answer}");
    }
    failed == 0
}

fn display(path: &std::path::Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
