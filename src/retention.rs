//! Retention on the embedded backend: nothing is kept forever. Inputs go
//! when their result is stored (the worker deletes them), and this janitor
//! expires what is older than the retention: results, leftover inputs
//! (kept with `--keep-inputs`, or of jobs given up on), dead letters and
//! unread result messages. Requests are never expired: a queued job waits
//! for a worker however long that takes. On AWS, S3 lifecycle rules and
//! SQS message retention do the same (`aws setup`).

use std::time::{Duration, SystemTime};

use crate::queue::SqliteQueueFile;
use crate::services::LocalLayout;
use crate::shutdown::Shutdown;
use crate::store::DirStore;

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub inputs: usize,
    pub results: usize,
    pub dead_letters: usize,
    pub result_messages: usize,
}

/// Removes everything older than `keep` under `layout`. Blocking.
pub fn sweep(layout: &LocalLayout, keep: Duration) -> anyhow::Result<Swept> {
    let cutoff = SystemTime::now() - keep;
    let inputs = DirStore::open(layout.input_bucket())?.expire(cutoff)?;
    let results = DirStore::open(layout.output_bucket())?.expire(cutoff)?;
    let queues = SqliteQueueFile::new(layout.queue_file());
    let dead_letters = queues.open("requests-dlq", None)?.expire(cutoff)?;
    let result_messages = queues.open("results", None)?.expire(cutoff)?;
    Ok(Swept {
        inputs,
        results,
        dead_letters,
        result_messages,
    })
}

/// Sweeps every quarter of the retention (between once a second and once
/// a minute) until shutdown.
pub async fn run(layout: LocalLayout, keep: Duration, mut shutdown: Shutdown) {
    let every = (keep / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.requested() => return,
            _ = ticker.tick() => {}
        }
        let layout = layout.clone();
        match tokio::task::spawn_blocking(move || sweep(&layout, keep)).await {
            Ok(Ok(swept)) if swept != Swept::default() => {
                tracing::info!(?swept, retention_s = keep.as_secs(), "expired old jobs");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = format!("{e:#}"), "retention sweep failed"),
            Err(e) => tracing::warn!(error = %e, "retention sweep panicked"),
        }
    }
}

/// A duration as operators write it: `90s`, `30m`, `24h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 30m, 24h or 7d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    let duration = Duration::from_secs(number.saturating_mul(seconds));
    if duration.is_zero() {
        return Err("the retention must be longer than zero".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::Services;
    use bytes::Bytes;

    #[test]
    fn durations_read_as_operators_write_them() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        for bad in ["", "h", "12", "3 weeks", "0s", "-1h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn old_objects_and_messages_go_and_queued_jobs_stay() {
        let dir = tempfile::tempdir().unwrap();
        let layout = LocalLayout::new(dir.path());
        let services = Services::local(dir.path()).unwrap();
        services
            .outputs
            .put("old.json", Bytes::from_static(b"{}"), "application/json")
            .await
            .unwrap();
        services.dead_letters.send("old dead letter").await.unwrap();
        services.requests.send("a queued job").await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        services
            .outputs
            .put("new.json", Bytes::from_static(b"{}"), "application/json")
            .await
            .unwrap();

        let swept = sweep(&layout, Duration::from_secs(1)).unwrap();
        assert_eq!(swept.results, 1);
        assert_eq!(swept.dead_letters, 1);
        assert_eq!(services.outputs.list("").await.unwrap(), ["new.json"]);
        assert_eq!(services.dead_letters.depth().await.unwrap().backlog(), 0);
        assert_eq!(services.requests.depth().await.unwrap().backlog(), 1);
    }
}
