//! A durable queue in one SQLite file, shared by every process on the
//! machine. WAL mode lets readers and one writer proceed together; every
//! state change is one `BEGIN IMMEDIATE` transaction, so two workers can
//! never receive the same message.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{
    check_batch, renew_then_send, Fence, FencedSend, Queue, QueueDepth, QueueError, ReceivedMessage,
};

/// The database file holding all of a data dir's queues.
#[derive(Debug, Clone)]
pub struct SqliteQueueFile {
    path: PathBuf,
}

impl SqliteQueueFile {
    pub fn new(path: impl Into<PathBuf>) -> SqliteQueueFile {
        SqliteQueueFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (creating if needed) the queue `name`. With a dead-letter queue,
    /// a message received `max_receives` times without being deleted moves
    /// there on its next receive.
    pub fn open(
        &self,
        name: &str,
        dead_letter: Option<(&str, u32)>,
    ) -> Result<SqliteQueue, QueueError> {
        let connection = open_connection(&self.path).map_err(|e| QueueError::Unavailable {
            queue: name.to_owned(),
            message: format!("{}: {e}", self.path.display()),
        })?;
        Ok(SqliteQueue {
            connection: Arc::new(Mutex::new(connection)),
            path: self.path.clone(),
            name: name.to_owned(),
            dead_letter: dead_letter.map(|(queue, max)| (queue.to_owned(), max.max(1))),
            durable_sends: true,
        })
    }
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(Duration::from_secs(30))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    // NORMAL: a commit is in the WAL, safe from any process crash, and on
    // disk at the next checkpoint; only a power loss or kernel crash could
    // take the last ones back. That is right for receives, deletes and
    // visibility changes, whose loss only brings a job back for a redo.
    // Sends that accept work are made durable one by one (`durable_sends`).
    // Syncing every commit instead held the one write lock for a flush
    // (about 4 ms here) five times per job, which capped the embedded queue
    // at a few hundred operations a second for every process together.
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.execute_batch(
        "CREATE TABLE IF NOT EXISTS messages (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             queue TEXT NOT NULL,
             body TEXT NOT NULL,
             sent_at_ms INTEGER NOT NULL,
             visible_at_ms INTEGER NOT NULL,
             receive_count INTEGER NOT NULL DEFAULT 0,
             receipt TEXT
         );
         CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue, visible_at_ms, id);
         CREATE UNIQUE INDEX IF NOT EXISTS messages_by_receipt ON messages (receipt);
         -- Messages ever sent per queue, bumped in each send's transaction:
         -- a controller at zero reads it every 50 ms to wake on the first
         -- job, and its decision records count arrivals with it.
         CREATE TABLE IF NOT EXISTS queue_counters (
             queue TEXT PRIMARY KEY,
             sent INTEGER NOT NULL
         );",
    )?;
    Ok(connection)
}

#[derive(Clone)]
pub struct SqliteQueue {
    connection: Arc<Mutex<Connection>>,
    /// The file: queues of one file can share a transaction.
    path: PathBuf,
    name: String,
    dead_letter: Option<(String, u32)>,
    /// Flush each sent message to disk before `send` returns, so work once
    /// accepted survives a power loss (the request queue); off for queues
    /// whose messages the buckets already record (results).
    durable_sends: bool,
}

/// Idle polling starts fast (a busy queue answers at once anyway) and backs
/// off so an idle fleet costs almost nothing.
const POLL_FIRST: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(50);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn new_receipt() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl SqliteQueue {
    /// Sends without waiting for the disk: for messages a bucket already
    /// records (see `durable_sends`).
    pub fn with_fast_sends(mut self) -> SqliteQueue {
        self.durable_sends = false;
        self
    }

    /// Runs `op` on the connection on the blocking pool; SQLite calls can
    /// wait on file locks.
    async fn with_connection<T, F>(&self, op: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &str) -> Result<T, QueueError> + Send + 'static,
    {
        let connection = Arc::clone(&self.connection);
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = connection.lock().unwrap_or_else(|p| p.into_inner());
            op(&mut guard, &name)
        })
        .await
        .map_err(|e| QueueError::Unavailable {
            queue: self.name.clone(),
            message: format!("queue task failed: {e}"),
        })?
    }

    /// Deletes this queue's messages sent before `cutoff`, as SQS's message
    /// retention does; returns how many. Blocking: for the embedded
    /// backend's janitor.
    pub fn expire(&self, cutoff: SystemTime) -> Result<usize, QueueError> {
        let cutoff_ms = cutoff
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let connection = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        connection
            .execute(
                "DELETE FROM messages WHERE queue = ?1 AND sent_at_ms < ?2",
                params![self.name, cutoff_ms],
            )
            .map_err(unavailable(&self.name))
    }

    fn try_receive(
        connection: &mut Connection,
        name: &str,
        dead_letter: Option<&(String, u32)>,
        max: usize,
        visibility: Duration,
    ) -> rusqlite::Result<Vec<ReceivedMessage>> {
        let now = now_ms();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let candidates: Vec<(i64, String, u32)> = {
            let mut select = tx.prepare_cached(
                "SELECT id, body, receive_count FROM messages
                 WHERE queue = ?1 AND visible_at_ms <= ?2 ORDER BY id LIMIT ?3",
            )?;
            let rows = select.query_map(params![name, now, max as i64], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut received = Vec::with_capacity(candidates.len());
        for (id, body, receive_count) in candidates {
            match dead_letter {
                Some((dlq, max_receives)) if receive_count >= *max_receives => {
                    tx.execute(
                        "UPDATE messages SET queue = ?1, receive_count = 0, receipt = NULL,
                         visible_at_ms = ?2 WHERE id = ?3",
                        params![dlq, now, id],
                    )?;
                    tracing::warn!(queue = name, dead_letter_queue = %dlq, receive_count,
                        "message moved to the dead-letter queue");
                }
                _ => {
                    let receipt = new_receipt();
                    let visible_at = now + visibility.as_millis() as i64;
                    tx.execute(
                        "UPDATE messages SET visible_at_ms = ?1, receive_count = receive_count + 1,
                         receipt = ?2 WHERE id = ?3",
                        params![visible_at, receipt, id],
                    )?;
                    received.push(ReceivedMessage {
                        body,
                        receipt,
                        receive_count: receive_count + 1,
                    });
                }
            }
        }
        tx.commit()?;
        Ok(received)
    }
}

/// One message in, and the queue's send counter up, together: the counter
/// is the cheap change signal a controller at zero polls.
fn insert_counted(
    connection: &mut Connection,
    name: &str,
    body: &str,
    now: i64,
) -> rusqlite::Result<()> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    insert_message(&transaction, name, body, now)?;
    transaction.commit()
}

/// [`insert_counted`] only while `receipt` still holds its message on
/// `fence_queue`, whose lease it extends to `visible_at`: one transaction,
/// so no consumer can lose the message between the check and the send.
/// What [`insert_if_held`] does to the fenced message while it holds.
enum Hold {
    /// Renews its lease until this time (ms).
    RenewUntil(i64),
    /// Deletes it: the send ends it.
    Consume,
}

fn insert_if_held(
    connection: &mut Connection,
    name: &str,
    body: &str,
    now: i64,
    (fence_queue, receipt, hold): (&str, &str, Hold),
) -> rusqlite::Result<FencedSend> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let held = match hold {
        Hold::RenewUntil(visible_at) => transaction.execute(
            "UPDATE messages SET visible_at_ms = ?1 WHERE queue = ?2 AND receipt = ?3",
            params![visible_at, fence_queue, receipt],
        )?,
        Hold::Consume => transaction.execute(
            "DELETE FROM messages WHERE queue = ?1 AND receipt = ?2",
            params![fence_queue, receipt],
        )?,
    } == 1;
    if !held {
        return Ok(FencedSend::LeaseLost);
    }
    insert_message(&transaction, name, body, now)?;
    transaction.commit()?;
    Ok(match hold {
        Hold::RenewUntil(_) => FencedSend::Sent,
        Hold::Consume => FencedSend::SentAndConsumed,
    })
}

fn insert_message(
    transaction: &rusqlite::Transaction<'_>,
    name: &str,
    body: &str,
    now: i64,
) -> rusqlite::Result<()> {
    transaction.execute(
        "INSERT INTO messages (queue, body, sent_at_ms, visible_at_ms) VALUES (?1, ?2, ?3, ?3)",
        params![name, body, now],
    )?;
    transaction.execute(
        "INSERT INTO queue_counters (queue, sent) VALUES (?1, 1)
         ON CONFLICT (queue) DO UPDATE SET sent = sent + 1",
        params![name],
    )?;
    Ok(())
}

/// Runs `write`; with `durable`, its commit (and with it every earlier
/// one) reaches the disk before this returns.
fn flushed_if<T>(
    durable: bool,
    connection: &mut Connection,
    name: &str,
    write: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
) -> Result<T, QueueError> {
    if durable {
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(unavailable(name))?;
    }
    let written = write(connection);
    if durable {
        connection
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(unavailable(name))?;
    }
    written.map_err(unavailable(name))
}

fn unavailable(queue: &str) -> impl Fn(rusqlite::Error) -> QueueError + '_ {
    move |e| QueueError::Unavailable {
        queue: queue.to_owned(),
        message: e.to_string(),
    }
}

#[async_trait]
impl Queue for SqliteQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, body: &str) -> Result<(), QueueError> {
        let body = body.to_owned();
        let durable = self.durable_sends;
        self.with_connection(move |connection, name| {
            flushed_if(durable, connection, name, |connection| {
                insert_counted(connection, name, &body, now_ms())
            })
        })
        .await
    }

    async fn send_fenced(&self, body: &str, fence: &Fence<'_>) -> Result<FencedSend, QueueError> {
        let mut fence_queue = fence.queue;
        while let Some(inner) = fence_queue.inner_queue() {
            fence_queue = inner;
        }
        let same_file = fence_queue
            .as_any()
            .downcast_ref::<SqliteQueue>()
            .filter(|held| held.path == self.path);
        let Some(held) = same_file else {
            return renew_then_send(self, body, fence).await;
        };
        let body = body.to_owned();
        let fence_queue = held.name.clone();
        let receipt = fence.receipt.to_owned();
        let durable = self.durable_sends;
        let visibility = fence.visibility;
        let consume = fence.consume;
        self.with_connection(move |connection, name| {
            flushed_if(durable, connection, name, |connection| {
                let now = now_ms();
                let hold = if consume {
                    Hold::Consume
                } else {
                    Hold::RenewUntil(now + visibility.as_millis() as i64)
                };
                insert_if_held(connection, name, &body, now, (&fence_queue, &receipt, hold))
            })
        })
        .await
    }

    async fn sent_count(&self) -> Result<Option<u64>, QueueError> {
        self.with_connection(|connection, name| {
            connection
                .query_row(
                    "SELECT sent FROM queue_counters WHERE queue = ?1",
                    params![name],
                    |row| row.get::<_, i64>(0),
                )
                .optional()
                .map(|sent| Some(sent.unwrap_or(0) as u64))
                .map_err(unavailable(name))
        })
        .await
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        check_batch(&self.name, max)?;
        let deadline = Instant::now() + wait;
        let mut pause = POLL_FIRST;
        loop {
            let dead_letter = self.dead_letter.clone();
            let received = self
                .with_connection(move |connection, name| {
                    SqliteQueue::try_receive(
                        connection,
                        name,
                        dead_letter.as_ref(),
                        max,
                        visibility,
                    )
                    .map_err(unavailable(name))
                })
                .await?;
            let now = Instant::now();
            if !received.is_empty() || now >= deadline {
                return Ok(received);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        let receipt = receipt.to_owned();
        self.with_connection(move |connection, name| {
            let deleted = connection
                .execute(
                    "DELETE FROM messages WHERE queue = ?1 AND receipt = ?2",
                    params![name, receipt],
                )
                .map_err(unavailable(name))?;
            if deleted == 0 {
                return Err(QueueError::StaleReceipt {
                    queue: name.to_owned(),
                });
            }
            Ok(())
        })
        .await
    }

    async fn extend_visibility(
        &self,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        let receipt = receipt.to_owned();
        self.with_connection(move |connection, name| {
            let visible_at = now_ms() + visibility.as_millis() as i64;
            let changed = connection
                .execute(
                    "UPDATE messages SET visible_at_ms = ?1 WHERE queue = ?2 AND receipt = ?3",
                    params![visible_at, name, receipt],
                )
                .map_err(unavailable(name))?;
            if changed == 0 {
                return Err(QueueError::StaleReceipt {
                    queue: name.to_owned(),
                });
            }
            Ok(())
        })
        .await
    }

    async fn release(&self, message: &ReceivedMessage) -> Result<(), QueueError> {
        let receipt = message.receipt.clone();
        self.with_connection(move |connection, name| {
            let changed = connection
                .execute(
                    "UPDATE messages SET visible_at_ms = ?1, receipt = NULL,
                     receive_count = MAX(receive_count - 1, 0)
                     WHERE queue = ?2 AND receipt = ?3",
                    params![now_ms(), name, receipt],
                )
                .map_err(unavailable(name))?;
            if changed == 0 {
                return Err(QueueError::StaleReceipt {
                    queue: name.to_owned(),
                });
            }
            Ok(())
        })
        .await
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        self.with_connection(|connection, name| {
            let now = now_ms();
            connection
                .query_row(
                    "SELECT COALESCE(SUM(visible_at_ms <= ?2), 0), COALESCE(SUM(visible_at_ms > ?2), 0)
                     FROM messages WHERE queue = ?1",
                    params![name, now],
                    |row| {
                        Ok(QueueDepth {
                            visible: row.get::<_, i64>(0)? as u64,
                            in_flight: row.get::<_, i64>(1)? as u64,
                        })
                    },
                )
                .optional()
                .map(Option::unwrap_or_default)
                .map_err(unavailable(name))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues(dir: &Path) -> (SqliteQueue, SqliteQueue) {
        let file = SqliteQueueFile::new(dir.join("queue.sqlite"));
        let main = file.open("requests", Some(("requests-dlq", 2))).unwrap();
        let dlq = file.open("requests-dlq", None).unwrap();
        (main, dlq)
    }

    const NO_WAIT: Duration = Duration::ZERO;
    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn sends_are_counted_across_connections() {
        let dir = tempfile::tempdir().unwrap();
        let (requests, _) = queues(dir.path());
        let file = SqliteQueueFile::new(dir.path().join("queue.sqlite"));
        let other = file.open("requests", None).unwrap();
        assert_eq!(other.sent_count().await.unwrap(), Some(0));
        requests.send("a").await.unwrap();
        requests.send("b").await.unwrap();
        let received = requests
            .receive(2, Duration::ZERO, Duration::from_secs(10))
            .await
            .unwrap();
        for message in received {
            requests.delete(&message.receipt).await.unwrap();
        }
        // Counted from another connection, and not undone by deletes.
        assert_eq!(other.sent_count().await.unwrap(), Some(2));
    }

    #[tokio::test]
    async fn received_messages_are_invisible_until_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _) = queues(dir.path());
        for i in 0..12 {
            queue.send(&format!("m{i}")).await.unwrap();
        }
        let first = queue.receive(10, NO_WAIT, HOUR).await.unwrap();
        assert_eq!(first.len(), 10);
        assert_eq!(first[0].body, "m0");
        assert_eq!(
            queue.depth().await.unwrap(),
            QueueDepth {
                visible: 2,
                in_flight: 10
            }
        );
        let rest = queue.receive(10, NO_WAIT, HOUR).await.unwrap();
        assert_eq!(
            rest.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
            ["m10", "m11"]
        );
        for m in first.iter().chain(&rest) {
            queue.delete(&m.receipt).await.unwrap();
        }
        assert_eq!(queue.depth().await.unwrap(), QueueDepth::default());
        assert!(queue.receive(10, NO_WAIT, HOUR).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn timed_out_messages_come_back_with_a_new_receipt() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _) = queues(dir.path());
        queue.send("job").await.unwrap();
        let first = queue.receive(1, NO_WAIT, Duration::ZERO).await.unwrap();
        let second = queue.receive(1, NO_WAIT, HOUR).await.unwrap();
        assert_eq!(second[0].receive_count, 2);
        assert!(matches!(
            queue.delete(&first[0].receipt).await,
            Err(QueueError::StaleReceipt { .. })
        ));
        queue.delete(&second[0].receipt).await.unwrap();
    }

    #[tokio::test]
    async fn a_fenced_send_goes_out_only_while_the_lease_holds() {
        let dir = tempfile::tempdir().unwrap();
        let file = SqliteQueueFile::new(dir.path().join("queue.sqlite"));
        let requests = file.open("requests", None).unwrap();
        let results = file.open("results", None).unwrap().with_fast_sends();
        requests.send("job").await.unwrap();
        // The first worker's lease runs out and a second takes the job.
        let first = requests.receive(1, NO_WAIT, Duration::ZERO).await.unwrap();
        let second = requests.receive(1, NO_WAIT, HOUR).await.unwrap();
        let fence = |receipt| Fence {
            queue: &requests,
            receipt,
            visibility: HOUR,
            consume: false,
        };
        assert_eq!(
            results
                .send_fenced("late", &fence(&first[0].receipt))
                .await
                .unwrap(),
            FencedSend::LeaseLost
        );
        assert_eq!(
            results
                .send_fenced("on time", &fence(&second[0].receipt))
                .await
                .unwrap(),
            FencedSend::Sent
        );
        let sent = results.receive(10, NO_WAIT, HOUR).await.unwrap();
        assert_eq!(
            sent.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
            ["on time"]
        );
        // Expired but not taken by anyone: the send renews the lease, so
        // no one can take the job before its holder deletes it.
        let lapsed = file.open("lapsed", None).unwrap();
        lapsed.send("job").await.unwrap();
        let held = lapsed.receive(1, NO_WAIT, Duration::ZERO).await.unwrap();
        let fence = Fence {
            queue: &lapsed,
            receipt: &held[0].receipt,
            visibility: HOUR,
            consume: false,
        };
        assert_eq!(
            results.send_fenced("renewed", &fence).await.unwrap(),
            FencedSend::Sent
        );
        assert!(lapsed.receive(1, NO_WAIT, HOUR).await.unwrap().is_empty());
    }

    /// A consuming fenced send ends the request in the same transaction: a
    /// worker frozen right after it leaves nothing for another to redo (and
    /// announce a second time), however long its lease has run out.
    #[tokio::test]
    async fn a_consuming_fenced_send_deletes_the_request_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = SqliteQueueFile::new(dir.path().join("queue.sqlite"));
        let requests = file.open("requests", None).unwrap();
        let results = file.open("results", None).unwrap().with_fast_sends();
        requests.send("job").await.unwrap();
        // Received with no lease time at all: visible again at once unless
        // the send deletes it.
        let held = requests.receive(1, NO_WAIT, Duration::ZERO).await.unwrap();
        let fence = Fence {
            queue: &requests,
            receipt: &held[0].receipt,
            visibility: HOUR,
            consume: true,
        };
        assert_eq!(
            results.send_fenced("answer", &fence).await.unwrap(),
            FencedSend::SentAndConsumed
        );
        assert!(requests.receive(1, NO_WAIT, HOUR).await.unwrap().is_empty());
        assert_eq!(results.receive(10, NO_WAIT, HOUR).await.unwrap().len(), 1);
        // Once consumed, the receipt holds nothing: a second send is refused.
        assert_eq!(
            results.send_fenced("again", &fence).await.unwrap(),
            FencedSend::LeaseLost
        );
    }

    #[tokio::test]
    async fn visibility_can_be_extended_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _) = queues(dir.path());
        queue.send("job").await.unwrap();
        let got = queue.receive(1, NO_WAIT, Duration::ZERO).await.unwrap();
        queue
            .extend_visibility(&got[0].receipt, HOUR)
            .await
            .unwrap();
        assert!(queue.receive(1, NO_WAIT, HOUR).await.unwrap().is_empty());
        queue
            .extend_visibility(&got[0].receipt, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(queue.receive(1, NO_WAIT, HOUR).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn released_messages_come_back_at_once_without_counting_a_receive() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, dlq) = queues(dir.path());
        queue.send("job").await.unwrap();
        // Far more hand-backs than the dead-letter threshold (2 here).
        for _ in 0..5 {
            let got = queue.receive(1, NO_WAIT, HOUR).await.unwrap();
            assert_eq!(got[0].receive_count, 1, "a release is not an attempt");
            queue.release(&got[0]).await.unwrap();
            assert!(matches!(
                queue.release(&got[0]).await,
                Err(QueueError::StaleReceipt { .. })
            ));
        }
        assert_eq!(queue.depth().await.unwrap().visible, 1);
        assert!(dlq.receive(1, NO_WAIT, HOUR).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn poison_messages_move_to_the_dead_letter_queue() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, dlq) = queues(dir.path());
        queue.send("poison").await.unwrap();
        for _ in 0..2 {
            assert_eq!(
                queue
                    .receive(1, NO_WAIT, Duration::ZERO)
                    .await
                    .unwrap()
                    .len(),
                1
            );
        }
        assert!(queue.receive(1, NO_WAIT, HOUR).await.unwrap().is_empty());
        assert_eq!(queue.depth().await.unwrap(), QueueDepth::default());
        let dead = dlq.receive(1, NO_WAIT, HOUR).await.unwrap();
        assert_eq!(dead[0].body, "poison");
    }

    #[tokio::test]
    async fn long_poll_returns_as_soon_as_a_message_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _) = queues(dir.path());
        let sender = queue.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            sender.send("late").await.unwrap();
        });
        let got = queue
            .receive(10, Duration::from_secs(10), HOUR)
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
    }

    #[tokio::test]
    async fn messages_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        queues(dir.path()).0.send("durable").await.unwrap();
        let (queue, _) = queues(dir.path());
        assert_eq!(
            queue.receive(1, NO_WAIT, HOUR).await.unwrap()[0].body,
            "durable"
        );
    }

    #[tokio::test]
    async fn concurrent_consumers_never_share_a_message() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _) = queues(dir.path());
        for i in 0..200 {
            queue.send(&i.to_string()).await.unwrap();
        }
        let mut consumers = Vec::new();
        for _ in 0..4 {
            // Separate connections, as separate processes would have.
            let (queue, _) = queues(dir.path());
            consumers.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                loop {
                    let got = queue.receive(10, NO_WAIT, HOUR).await.unwrap();
                    if got.is_empty() {
                        return seen;
                    }
                    seen.extend(got.into_iter().map(|m| m.body));
                }
            }));
        }
        let mut all = Vec::new();
        for consumer in consumers {
            all.extend(consumer.await.unwrap());
        }
        all.sort_by_key(|b| b.parse::<u32>().unwrap());
        assert_eq!(all, (0..200).map(|i| i.to_string()).collect::<Vec<_>>());
    }
}
