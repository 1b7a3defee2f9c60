//! Decision records: for each tick, what the controller saw, what the
//! policy answered, how the answer was clamped and held, and what was done,
//! as one JSON line in a bounded, rotating log (`DATA/decisions/`). They
//! answer "why did it do that?" after the fact, and `simulate --replay`
//! turns a recorded period back into a workload to try another policy on.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::plan::{Action, Limits, Plan};
use super::wake::Cause;
use crate::fleet::Instance;
use crate::policy::{Overrides, Tuning};

/// One tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// Unix time in seconds (simulated seconds in a simulation's records).
    pub t: f64,
    /// Ticks since the controller started.
    pub tick: u64,
    pub cause: Cause,
    pub interval_s: f64,
    pub dry_run: bool,
    pub limits: Limits,
    /// The configured settings; `overrides` are the script's for this tick.
    pub tuning: Tuning,
    #[serde(default, skip_serializing_if = "Overrides::is_empty")]
    pub overrides: Overrides,
    /// Jobs ever sent to the request queue, where the backend counts them:
    /// the exact arrivals between two records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<u64>,
    /// Why the counts are stale, during an outage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outage: Option<String>,
    /// The fleet as observed (the last good list during an outage).
    pub instances: Vec<Instance>,
    /// The observation, the policy's decision, the target and the action.
    pub plan: Plan,
    /// Why the policy file's version did not decide, if it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_error: Option<String>,
    /// Instances started by this tick's launch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub launched: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_error: Option<String>,
    /// What each shadow policy would have done.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadows: Vec<ShadowRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowRecord {
    pub path: PathBuf,
    pub desired: u32,
    pub action: Action,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DecisionRecord {
    /// Instances this tick asked to start: launched ones when applied, the
    /// plan's count in a dry run or a simulation.
    pub fn launches(&self) -> u32 {
        match self.plan.action {
            Action::Launch(k) if self.launched.is_empty() => k,
            Action::Launch(_) => self.launched.len() as u32,
            _ => 0,
        }
    }

    pub fn terminations(&self) -> u32 {
        match &self.plan.action {
            Action::Terminate(ids) => ids.len() as u32,
            _ => 0,
        }
    }
}

/// Rotation: a new file past this size, the oldest deleted past `files`.
pub const DEFAULT_FILE_BYTES: u64 = 8 * 1024 * 1024;
pub const DEFAULT_FILES: usize = 8;
/// Records waiting for the writer thread; past it they are dropped (and
/// counted) rather than slowing the tick.
const BACKLOG: usize = 1024;

/// The log's writer: records go to a thread that owns the files, so a slow
/// disk never holds up a tick (a launch in particular).
pub struct DecisionLog {
    dir: PathBuf,
    sender: Option<SyncSender<String>>,
    writer: Option<JoinHandle<()>>,
    dropped: Arc<AtomicU64>,
}

impl DecisionLog {
    /// Opens (creating) `dir`; appends to its newest file.
    pub fn open(dir: &Path, files: usize, file_bytes: u64) -> anyhow::Result<DecisionLog> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the decision log {}", dir.display()))?;
        let index = log_files(dir)?
            .last()
            .and_then(|p| file_index(p))
            .unwrap_or(1);
        let mut writer = Writer {
            dir: dir.to_owned(),
            index,
            file: None,
            size: 0,
            files: files.max(1),
            file_bytes: file_bytes.max(1024),
        };
        writer.open_current()?;
        let (sender, receiver) = sync_channel::<String>(BACKLOG);
        let thread = std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || {
                for line in receiver {
                    if let Err(e) = writer.write(&line) {
                        tracing::warn!(error = format!("{e:#}"), "cannot write a decision record");
                    }
                }
            })
            .context("starting the decision log writer")?;
        Ok(DecisionLog {
            dir: dir.to_owned(),
            sender: Some(sender),
            writer: Some(thread),
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn append(&self, record: &DecisionRecord) {
        let Ok(line) = serde_json::to_string(record) else {
            return;
        };
        if let Some(sender) = &self.sender {
            if let Err(TrySendError::Full(_)) = sender.try_send(line) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for DecisionLog {
    /// Writes what is queued before the process goes on to exit.
    fn drop(&mut self) {
        self.sender.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

struct Writer {
    dir: PathBuf,
    index: u64,
    file: Option<File>,
    size: u64,
    files: usize,
    file_bytes: u64,
}

impl Writer {
    fn path(&self, index: u64) -> PathBuf {
        self.dir.join(format!("decisions-{index:06}.jsonl"))
    }

    fn open_current(&mut self) -> anyhow::Result<()> {
        let path = self.path(self.index);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if self.size > 0 && !ends_with_newline(&mut file)? {
            // A line torn by a crash ends here, not inside the next record.
            file.write_all(b"\n")?;
            self.size += 1;
        }
        self.file = Some(file);
        Ok(())
    }

    fn write(&mut self, line: &str) -> anyhow::Result<()> {
        let bytes = line.len() as u64 + 1;
        if self.size > 0 && self.size + bytes > self.file_bytes {
            self.index += 1;
            self.open_current()?;
            // Keep the newest `files`, this one included.
            let all = log_files(&self.dir)?;
            for old in all.iter().take(all.len().saturating_sub(self.files)) {
                let _ = std::fs::remove_file(old);
            }
        }
        let file = self.file.as_mut().context("no decision log file open")?;
        // One write per record, so a reader never sees half a line
        // followed by another record.
        let mut buffer = String::with_capacity(line.len() + 1);
        buffer.push_str(line);
        buffer.push('\n');
        file.write_all(buffer.as_bytes())?;
        self.size += bytes;
        Ok(())
    }
}

fn ends_with_newline(file: &mut File) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

fn file_index(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_prefix("decisions-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

/// The log's files, oldest first.
fn log_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| file_index(&p).map(|i| (i, p)))
        .collect();
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// The records in a log file, or in every file of a log directory, oldest
/// first; also how many lines could not be read (a torn last line after a
/// crash, a record from another version).
pub fn read_records(path: &Path) -> anyhow::Result<(Vec<DecisionRecord>, usize)> {
    let files = if path.is_dir() {
        log_files(path)?
    } else {
        vec![path.to_owned()]
    };
    anyhow::ensure!(
        !files.is_empty(),
        "{} holds no decision records (decisions-*.jsonl)",
        path.display()
    );
    let (mut records, mut skipped) = (Vec::new(), 0);
    for file in files {
        let reader = std::io::BufReader::new(
            File::open(&file).with_context(|| format!("opening {}", file.display()))?,
        );
        for line in reader.lines() {
            let line = line.with_context(|| format!("reading {}", file.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<DecisionRecord>(&line) {
                Ok(record) => records.push(record),
                Err(_) => skipped += 1,
            }
        }
    }
    records.sort_by(|a, b| a.t.total_cmp(&b.t));
    Ok((records, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::plan::{observe, plan};
    use crate::policy::Decision;
    use crate::queue::QueueDepth;

    fn record(t: f64, visible: u64) -> DecisionRecord {
        let limits = Limits::default();
        let observation = observe(
            QueueDepth {
                visible,
                in_flight: 0,
            },
            &[],
            limits,
            None,
            t,
        );
        DecisionRecord {
            t,
            tick: t as u64,
            cause: Cause::Interval,
            interval_s: 2.0,
            dry_run: false,
            limits,
            tuning: Tuning::default(),
            overrides: Overrides::default(),
            sent: Some(visible),
            outage: None,
            instances: Vec::new(),
            plan: plan(
                Decision {
                    desired: 1,
                    reason: "r".into(),
                },
                observation,
                &[],
                limits,
            ),
            policy_error: None,
            launched: vec!["w-1".into()],
            apply_error: None,
            shadows: Vec::new(),
        }
    }

    #[test]
    fn records_rotate_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join("decisions");
        let one = serde_json::to_string(&record(0.0, 1)).unwrap().len() as u64 + 1;
        {
            // Three records per file, at most two files.
            let log = DecisionLog::open(&log_dir, 2, (one * 3).max(1024)).unwrap();
            let per_file = ((one * 3).max(1024) / one) as usize;
            for i in 0..(per_file * 3) {
                log.append(&record(i as f64, i as u64));
            }
        }
        let files = log_files(&log_dir).unwrap();
        assert_eq!(files.len(), 2, "{files:?}");
        let (records, skipped) = read_records(&log_dir).unwrap();
        assert_eq!(skipped, 0);
        assert!(!records.is_empty());
        assert!(records.windows(2).all(|w| w[0].t < w[1].t));
        let last = records.last().unwrap();
        assert_eq!(last, &record(last.t, last.t as u64));
        // A torn line is skipped, not fatal; a reopened log appends.
        std::fs::OpenOptions::new()
            .append(true)
            .open(files.last().unwrap())
            .unwrap()
            .write_all(b"{\"t\": 1")
            .unwrap();
        let (again, skipped) = read_records(&log_dir).unwrap();
        assert_eq!((again.len(), skipped), (records.len(), 1));
        let log = DecisionLog::open(&log_dir, 2, 1 << 20).unwrap();
        log.append(&record(1e6, 7));
        drop(log);
        let (again, skipped) = read_records(&log_dir).unwrap();
        assert_eq!((again.len(), skipped), (records.len() + 1, 1));
        assert_eq!(record(0.0, 1).launches(), 1);
    }
}
