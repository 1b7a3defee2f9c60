//! `imagefleet dlq list|redrive`: the jobs set aside in the dead-letter
//! queue (every attempt failed, or the message could not be read), and
//! sending them through again once the cause is fixed. Both backends.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::args::{BackendArgs, DataArgs};
use crate::job::{FailureKind, JobId, JobRequest, JobResult, Outcome};
use crate::paths::absolute;
use crate::queue::ReceivedMessage;
use crate::services::Services;

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// The dead-lettered jobs, with why each was set aside.
    List(DlqListArgs),
    /// Send dead-lettered jobs to the request queue again (all, or those
    /// named with --id); their failed results are removed so they can be
    /// answered anew.
    Redrive(DlqRedriveArgs),
}

#[derive(Debug, Args)]
pub struct DlqListArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// One JSON array instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DlqRedriveArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Only this job (repeatable); default: every readable dead letter.
    #[arg(long = "id", value_name = "JOB_ID")]
    pub ids: Vec<String>,
}

/// How long dead letters stay hidden while this command looks at them.
const LOOK: Duration = Duration::from_secs(60);

pub async fn run(command: DlqCommand) -> anyhow::Result<bool> {
    match command {
        DlqCommand::List(args) => {
            let services = args
                .backend
                .services(&absolute(&args.data.data_dir))
                .await?;
            list(&services, args.json).await
        }
        DlqCommand::Redrive(args) => {
            let services = args
                .backend
                .services(&absolute(&args.data.data_dir))
                .await?;
            let ids = args
                .ids
                .iter()
                .map(|id| JobId::parse(id).with_context(|| format!("{id:?} is not a job id")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            redrive(&services, &ids).await
        }
    }
}

/// Everything in the dead-letter queue, each hidden for [`LOOK`] so one
/// pass sees each message once.
async fn take_all(services: &Services) -> anyhow::Result<Vec<ReceivedMessage>> {
    let mut taken = Vec::new();
    loop {
        let batch = services
            .dead_letters
            .receive(10, Duration::from_secs(1), LOOK)
            .await
            .context("reading the dead-letter queue")?;
        if batch.is_empty() {
            return Ok(taken);
        }
        taken.extend(batch);
    }
}

/// Makes messages this command looked at but left visible again.
async fn put_back(services: &Services, messages: &[ReceivedMessage]) {
    for message in messages {
        if let Err(e) = services
            .dead_letters
            .extend_visibility(&message.receipt, Duration::ZERO)
            .await
        {
            tracing::warn!(error = %e, "a dead letter stays hidden until its timeout");
        }
    }
}

#[derive(Debug, Serialize)]
struct DeadLetter {
    /// None when the message is not a readable job request.
    id: Option<JobId>,
    file_name: Option<String>,
    submitted_at_ms: Option<u64>,
    /// The stored failed result's kind and message, when there is one.
    error: Option<FailureKind>,
    message: Option<String>,
    /// The message itself, when it is not a job request (first 200 chars).
    body: Option<String>,
}

async fn describe(services: &Services, message: &ReceivedMessage) -> DeadLetter {
    let Ok(request) = serde_json::from_str::<JobRequest>(&message.body) else {
        return DeadLetter {
            id: None,
            file_name: None,
            submitted_at_ms: None,
            error: Some(FailureKind::MalformedMessage),
            message: None,
            body: Some(message.body.chars().take(200).collect()),
        };
    };
    let stored = stored_result(services, request.job_id).await;
    let (error, reason) = match stored.map(|r| r.outcome) {
        Some(Outcome::Failed { kind, message }) => (Some(kind), Some(message)),
        _ => (None, None),
    };
    DeadLetter {
        id: Some(request.job_id),
        file_name: Some(request.file_name),
        submitted_at_ms: Some(request.submitted_at_ms),
        error,
        message: reason,
        body: None,
    }
}

async fn stored_result(services: &Services, id: JobId) -> Option<JobResult> {
    let bytes = services.outputs.get(&id.output_key()).await.ok()??;
    serde_json::from_slice(&bytes).ok()
}

async fn list(services: &Services, json: bool) -> anyhow::Result<bool> {
    let messages = take_all(services).await?;
    let mut letters = Vec::with_capacity(messages.len());
    for message in &messages {
        letters.push(describe(services, message).await);
    }
    put_back(services, &messages).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&letters)?);
        return Ok(true);
    }
    if letters.is_empty() {
        println!("the dead-letter queue is empty");
    }
    for letter in &letters {
        match letter.id {
            Some(id) => println!(
                "{id}  {}  {}: {}",
                letter.file_name.as_deref().unwrap_or(""),
                letter.error.map_or("no result stored", |k| k.as_str()),
                letter.message.as_deref().unwrap_or("-")
            ),
            None => println!(
                "(not a job request)  {}",
                letter.body.as_deref().unwrap_or("")
            ),
        }
    }
    Ok(true)
}

/// Returns false when a job named with --id was not in the queue.
async fn redrive(services: &Services, only: &[JobId]) -> anyhow::Result<bool> {
    let messages = take_all(services).await?;
    let mut left = Vec::new();
    let mut sent: Vec<JobId> = Vec::new();
    for message in messages {
        let Ok(request) = serde_json::from_str::<JobRequest>(&message.body) else {
            if only.is_empty() {
                eprintln!("skipped a message that is not a job request (see `dlq list`)");
            }
            left.push(message);
            continue;
        };
        let id = request.job_id;
        if !only.is_empty() && !only.contains(&id) {
            left.push(message);
            continue;
        }
        if sent.contains(&id) {
            // The same job dead-lettered twice: one redrive is enough.
            services.dead_letters.delete(&message.receipt).await?;
            continue;
        }
        match stored_result(services, id).await.map(|r| r.outcome) {
            Some(Outcome::Done { .. }) => {
                println!("{id} already has its label; dropped from the dead-letter queue");
                services.dead_letters.delete(&message.receipt).await?;
                sent.push(id);
                continue;
            }
            Some(Outcome::Failed { .. }) => {
                // Results are written once; the failure must go for the
                // job's new answer to be stored.
                services
                    .outputs
                    .delete(&id.output_key())
                    .await
                    .with_context(|| format!("removing the failed result of job {id}"))?;
            }
            None => {}
        }
        services
            .requests
            .send(&message.body)
            .await
            .with_context(|| format!("queueing job {id} again"))?;
        services.dead_letters.delete(&message.receipt).await?;
        println!("{id} queued again");
        sent.push(id);
    }
    put_back(services, &left).await;
    let missing: Vec<&JobId> = only.iter().filter(|id| !sent.contains(id)).collect();
    for id in &missing {
        eprintln!("{id} is not in the dead-letter queue");
    }
    if only.is_empty() && sent.is_empty() {
        println!("nothing to redrive");
    }
    Ok(missing.is_empty())
}
