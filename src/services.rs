//! The queues and buckets a process talks to, behind their seams.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::aws::{AwsClients, AwsConfig};
use crate::job::MAX_RECEIVES;
use crate::queue::{Queue, ReplyQueues, SqliteQueueFile, SqsQueue};
use crate::store::{DirStore, ObjectStore, S3Store};

#[derive(Clone)]
pub struct Services {
    pub requests: Arc<dyn Queue>,
    pub results: Arc<dyn Queue>,
    pub dead_letters: Arc<dyn Queue>,
    pub inputs: Arc<dyn ObjectStore>,
    pub outputs: Arc<dyn ObjectStore>,
    /// Where a worker sends a result: the queue the job names as its
    /// reply-to (AWS: each web tier replica's own), else `results`.
    pub replies: ReplyQueues,
}

/// Where the embedded backend keeps everything under its data dir.
#[derive(Debug, Clone)]
pub struct LocalLayout {
    pub data_dir: PathBuf,
}

impl LocalLayout {
    pub fn new(data_dir: impl Into<PathBuf>) -> LocalLayout {
        LocalLayout {
            data_dir: data_dir.into(),
        }
    }

    pub fn queue_file(&self) -> PathBuf {
        self.data_dir.join("queue.sqlite")
    }

    pub fn input_bucket(&self) -> PathBuf {
        self.data_dir.join("buckets").join("input")
    }

    pub fn output_bucket(&self) -> PathBuf {
        self.data_dir.join("buckets").join("output")
    }

    /// The local fleet's record of its worker processes.
    pub fn fleet_file(&self) -> PathBuf {
        self.data_dir.join("fleet.sqlite")
    }
}

impl Services {
    /// The embedded backend: one SQLite file for the queues, directories for
    /// the buckets. Creates what is missing.
    pub fn local(data_dir: &Path) -> anyhow::Result<Services> {
        let layout = LocalLayout::new(data_dir);
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
        let file = SqliteQueueFile::new(layout.queue_file());
        let open_store = |path: PathBuf| {
            DirStore::open(&path).with_context(|| format!("cannot open bucket {}", path.display()))
        };
        Ok(Services {
            requests: Arc::new(file.open("requests", Some(("requests-dlq", MAX_RECEIVES)))?),
            // Every result is in the output bucket first; its announcement
            // need not wait for the disk.
            results: Arc::new(file.open("results", None)?.with_fast_sends()),
            dead_letters: Arc::new(file.open("requests-dlq", None)?),
            inputs: Arc::new(open_store(layout.input_bucket())?),
            outputs: Arc::new(open_store(layout.output_bucket())?),
            replies: ReplyQueues::shared(),
        })
    }
}

impl Services {
    /// The AWS backend: SQS queues and S3 buckets that `imagefleet aws
    /// setup` created; fails early, naming what is missing.
    pub async fn aws(clients: &AwsClients, config: &AwsConfig) -> anyhow::Result<Services> {
        let queue = |name: &str| {
            let name = name.to_owned();
            async move {
                anyhow::Ok(
                    Arc::new(SqsQueue::open(clients.sqs.clone(), &name).await?) as Arc<dyn Queue>
                )
            }
        };
        let bucket = |name: &str| {
            let name = name.to_owned();
            async move {
                anyhow::Ok(Arc::new(S3Store::open(clients.s3.clone(), &name).await?)
                    as Arc<dyn ObjectStore>)
            }
        };
        Ok(Services {
            requests: queue(&config.requests_queue).await?,
            results: queue(&config.results_queue).await?,
            dead_letters: queue(&config.dead_letter_queue).await?,
            inputs: bucket(&config.input_bucket).await?,
            outputs: bucket(&config.output_bucket).await?,
            replies: ReplyQueues::sqs(clients.sqs.clone(), config.reply_queue_prefix()),
        })
    }
}
