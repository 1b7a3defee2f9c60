//! One controller per AWS fleet, as the lock file is one per data dir
//! (`lock.rs`): a lease object in the fleet's output bucket, taken and
//! renewed with S3's conditional writes. Creating it asks that no object
//! exists (`If-None-Match: *`); renewing, taking over an expired one and
//! letting it go ask that it is still the version this controller read
//! (`If-Match: ETag`). Two controllers racing for it cannot both win, and
//! one that stalled past its lease finds it gone at its next renewal and
//! stops. A crashed controller's lease expires after `ttl`, at once for a
//! controller restarted on its host; a stopped one hands it over at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};

use crate::aws::clients::describe;
use crate::job::unix_millis;
use crate::shutdown::ShutdownTrigger;

/// Where the lease lives in the output bucket.
pub const LEASE_KEY: &str = "fleet/controller-lease.json";
/// How long a lease lasts unless renewed; renewed every third of it.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "another controller ({holder}) manages fleet bucket {bucket} for {left_s} s more; \
         stop it first (its lease is s3://{bucket}/{LEASE_KEY})"
    )]
    Held {
        bucket: String,
        holder: Holder,
        left_s: u64,
    },
    #[error("the controller lease s3://{bucket}/{LEASE_KEY} was taken over by another controller")]
    Lost { bucket: String },
    #[error("cannot {operation} the controller lease s3://{bucket}/{LEASE_KEY}: {message}")]
    S3 {
        operation: &'static str,
        bucket: String,
        message: String,
    },
}

/// What the object says.
#[derive(Debug, Serialize, Deserialize)]
struct Terms {
    holder: Holder,
    expires_at_ms: u64,
}

/// Who holds a lease: a process on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
}

impl Holder {
    /// This process.
    pub fn this_process() -> Holder {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "unknown host".into());
        Holder {
            host,
            pid: std::process::id(),
        }
    }

    /// A holder on this host whose process is gone (a crashed controller
    /// restarted here need not wait for its old lease to run out).
    fn is_gone(&self, here: &Holder) -> bool {
        let Ok(pid) = libc::pid_t::try_from(self.pid) else {
            return false;
        };
        // SAFETY: kill(2) with signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        self.host == here.host && self.pid != here.pid && !alive
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} on {}", self.pid, self.host)
    }
}

/// A held lease; renew it ([`ControllerLease::spawn_renewal`]) and
/// [`ControllerLease::release`] it when done.
pub struct ControllerLease {
    client: aws_sdk_s3::Client,
    bucket: String,
    holder: Holder,
    ttl: Duration,
    /// The version of the object this controller wrote last.
    etag: Mutex<String>,
}

/// A conditional write refused: someone else wrote in between.
enum Written {
    Yes(String),
    Refused,
}

impl ControllerLease {
    /// Takes the lease, or says who holds it.
    pub async fn acquire(
        client: aws_sdk_s3::Client,
        bucket: &str,
        holder: Holder,
        ttl: Duration,
    ) -> Result<Arc<ControllerLease>, LeaseError> {
        let lease = ControllerLease {
            client,
            bucket: bucket.to_owned(),
            holder,
            ttl,
            etag: Mutex::new(String::new()),
        };
        // Create it, or read who has it: in that order, since reading a
        // missing key needs ListBucket on S3 (else it is 403, not 404),
        // which the controller's policy does not grant. A few rounds: each
        // refused write means another controller wrote just now.
        for _ in 0..3 {
            let written = match lease.write(Condition::Absent, ttl).await? {
                Written::Yes(etag) => Written::Yes(etag),
                Written::Refused => match lease.read().await? {
                    // Deleted in between: create it next round.
                    None => Written::Refused,
                    Some((etag, terms)) => {
                        let now = unix_millis();
                        let live = terms
                            .filter(|t| t.expires_at_ms > now && !t.holder.is_gone(&lease.holder));
                        if let Some(terms) = live {
                            if terms.holder != lease.holder {
                                return Err(LeaseError::Held {
                                    bucket: lease.bucket.clone(),
                                    holder: terms.holder,
                                    left_s: (terms.expires_at_ms - now).div_ceil(1000),
                                });
                            }
                        }
                        // Expired, released, unreadable, its holder gone,
                        // or already ours.
                        lease.write(Condition::Version(etag), ttl).await?
                    }
                },
            };
            if let Written::Yes(etag) = written {
                *lease.etag.lock().unwrap_or_else(|p| p.into_inner()) = etag;
                tracing::info!(bucket = %lease.bucket, holder = %lease.holder, "holding the controller lease");
                return Ok(Arc::new(lease));
            }
        }
        Err(LeaseError::S3 {
            operation: "take",
            bucket: lease.bucket.clone(),
            message: "other controllers kept writing it".into(),
        })
    }

    /// Extends the lease by its ttl; [`LeaseError::Lost`] when another
    /// controller took it over meanwhile.
    pub async fn renew(&self) -> Result<(), LeaseError> {
        let etag = self.etag.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match self.write(Condition::Version(etag), self.ttl).await? {
            Written::Yes(etag) => {
                *self.etag.lock().unwrap_or_else(|p| p.into_inner()) = etag;
                Ok(())
            }
            Written::Refused => Err(LeaseError::Lost {
                bucket: self.bucket.clone(),
            }),
        }
    }

    /// Hands the lease over: the next controller need not wait for it to
    /// expire. Best effort; an error only delays the next one by the ttl.
    pub async fn release(&self) {
        let etag = self.etag.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match self.write(Condition::Version(etag), Duration::ZERO).await {
            Ok(Written::Yes(_)) => {
                tracing::info!(bucket = %self.bucket, "controller lease released")
            }
            Ok(Written::Refused) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not release the controller lease; it expires by itself")
            }
        }
    }

    /// Renews every third of the ttl until dropped. A lost lease stops the
    /// controller (`stop`); a renewal that fails is retried until the lease
    /// would run out, and then stops it too, since another may take over.
    pub fn spawn_renewal(self: &Arc<Self>, stop: ShutdownTrigger) -> Renewal {
        let lease = Arc::clone(self);
        Renewal(tokio::spawn(async move {
            let every = lease.ttl / 3;
            let mut last_renewed = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(every).await;
                match lease.renew().await {
                    Ok(()) => last_renewed = tokio::time::Instant::now(),
                    Err(e @ LeaseError::Lost { .. }) => {
                        tracing::error!(error = %e, "stopping: another controller runs this fleet");
                        stop.trigger();
                        return;
                    }
                    Err(e) if last_renewed.elapsed() + every >= lease.ttl => {
                        tracing::error!(error = %e, "stopping: the controller lease could not be renewed before it runs out");
                        stop.trigger();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not renew the controller lease; trying again")
                    }
                }
            }
        }))
    }

    async fn read(&self) -> Result<Option<(String, Option<Terms>)>, LeaseError> {
        let got = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(LEASE_KEY)
            .send()
            .await;
        let output = match got {
            Ok(output) => output,
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                return Ok(None)
            }
            Err(e) => return Err(self.failed("read", describe(&e))),
        };
        let etag = output.e_tag().unwrap_or_default().to_owned();
        let bytes = output
            .body
            .collect()
            .await
            .map_err(|e| self.failed("read", e.to_string()))?
            .into_bytes();
        Ok(Some((etag, serde_json::from_slice(&bytes).ok())))
    }

    async fn write(&self, condition: Condition, ttl: Duration) -> Result<Written, LeaseError> {
        let terms = Terms {
            holder: self.holder.clone(),
            expires_at_ms: unix_millis() + ttl.as_millis() as u64,
        };
        let body = serde_json::to_vec(&terms).expect("plain data serialises");
        let mut put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(LEASE_KEY)
            .content_type("application/json")
            .body(ByteStream::from(body));
        put = match condition {
            Condition::Absent => put.if_none_match("*"),
            Condition::Version(etag) => put.if_match(etag),
        };
        match put.send().await {
            Ok(output) => Ok(Written::Yes(output.e_tag().unwrap_or_default().to_owned())),
            // 412: the condition failed; 409: a concurrent conditional
            // write to the same key won (S3 says so instead of 412).
            Err(e)
                if e.raw_response()
                    .is_some_and(|r| matches!(r.status().as_u16(), 409 | 412)) =>
            {
                Ok(Written::Refused)
            }
            Err(e) => Err(self.failed("write", describe(&e))),
        }
    }

    fn failed(&self, operation: &'static str, message: String) -> LeaseError {
        LeaseError::S3 {
            operation,
            bucket: self.bucket.clone(),
            message,
        }
    }
}

enum Condition {
    /// No object exists yet.
    Absent,
    /// The object is still this version.
    Version(String),
}

/// Renews the lease until dropped.
pub struct Renewal(tokio::task::JoinHandle<()>);

impl Drop for Renewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}
