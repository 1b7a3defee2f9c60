//! Sending the uploads: a closed loop (`clients` uploaders, each sending
//! its next upload once the last is answered, as the classic workload
//! generator does) or an open loop (arrivals at a fixed rate, whatever the
//! service does). In the open loop a late answer does not delay the next
//! arrival, and latency runs from the scheduled arrival, so an overloaded
//! service shows its queueing instead of hiding it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::progress::Progress;
use super::report::{Answer, Outcome};

pub struct Plan {
    pub url: String,
    pub clients: usize,
    pub requests: usize,
    pub timeout: Duration,
    /// Arrivals per second: the open loop. `None`: the closed loop.
    pub rate: Option<f64>,
    /// (file name, bytes), sent in turn.
    pub files: Arc<Vec<(String, Vec<u8>)>>,
}

/// Sends every upload; the outcomes and the time it took.
pub async fn run(plan: Plan, progress: Arc<Progress>) -> anyhow::Result<(Vec<Outcome>, Duration)> {
    let client = reqwest::Client::builder().timeout(plan.timeout).build()?;
    let outcomes = Arc::new(Mutex::new(Vec::with_capacity(plan.requests)));
    let started = Instant::now();
    let tasks = match plan.rate {
        None => closed_loop(&plan, &client, &outcomes, &progress),
        Some(rate) => open_loop(&plan, rate, &client, &outcomes, &progress).await,
    };
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed();
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap_or_else(|p| p.into_inner()));
    Ok((outcomes, elapsed))
}

type Outcomes = Arc<Mutex<Vec<Outcome>>>;

fn closed_loop(
    plan: &Plan,
    client: &reqwest::Client,
    outcomes: &Outcomes,
    progress: &Arc<Progress>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let next = Arc::new(AtomicUsize::new(0));
    (0..plan.clients.max(1))
        .map(|_| {
            let (next, files, client) =
                (Arc::clone(&next), Arc::clone(&plan.files), client.clone());
            let (outcomes, progress) = (Arc::clone(outcomes), Arc::clone(progress));
            let (url, total) = (plan.url.clone(), plan.requests);
            tokio::spawn(async move {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total {
                        return;
                    }
                    let (name, bytes) = &files[index % files.len()];
                    let outcome = upload(&client, &url, name, bytes, Instant::now()).await;
                    record(&outcomes, &progress, outcome);
                }
            })
        })
        .collect()
}

async fn open_loop(
    plan: &Plan,
    rate: f64,
    client: &reqwest::Client,
    outcomes: &Outcomes,
    progress: &Arc<Progress>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let in_flight = Arc::new(Semaphore::new(plan.clients.max(1)));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(plan.requests);
    for index in 0..plan.requests {
        let arrival = start + Duration::from_secs_f64(index as f64 / rate);
        tokio::time::sleep_until(arrival).await;
        // Beyond `clients` in flight the arrival waits here; its latency
        // still counts from `arrival`.
        let permit = Arc::clone(&in_flight)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (files, client) = (Arc::clone(&plan.files), client.clone());
        let (outcomes, progress, url) =
            (Arc::clone(outcomes), Arc::clone(progress), plan.url.clone());
        tasks.push(tokio::spawn(async move {
            let (name, bytes) = &files[index % files.len()];
            let outcome = upload(&client, &url, name, bytes, arrival.into_std()).await;
            drop(permit);
            record(&outcomes, &progress, outcome);
        }));
    }
    tasks
}

fn record(outcomes: &Outcomes, progress: &Progress, outcome: Outcome) {
    progress.answered(outcome.answer.is_failure());
    outcomes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(outcome);
}

/// One upload as the classic workload generator sends it: multipart field
/// `myfile`, the label back as text.
async fn upload(
    client: &reqwest::Client,
    url: &str,
    name: &str,
    bytes: &[u8],
    since: Instant,
) -> Outcome {
    let part = reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(name.to_owned());
    let form = reqwest::multipart::Form::new().part("myfile", part);
    let answer = match client.post(url).multipart(form).send().await {
        Ok(response) if response.status().is_success() => match response.text().await {
            Ok(label) => Answer::Label(label),
            Err(e) => failure(&e),
        },
        Ok(response) => Answer::Status(response.status().as_u16()),
        Err(e) => failure(&e),
    };
    Outcome {
        file: name.to_owned(),
        latency: since.elapsed(),
        answer,
    }
}

fn failure(error: &reqwest::Error) -> Answer {
    if error.is_timeout() {
        return Answer::Timeout;
    }
    // reqwest's own message names the URL only; the cause is in the chain.
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    Answer::Transport(text)
}
