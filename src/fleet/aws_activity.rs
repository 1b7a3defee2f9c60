//! What a worker on an EC2 instance tells its fleet: that it started (a
//! tag on its own instance, `imagefleet:worker`), and whether it holds a
//! job, so scale-in takes idle instances first, as the local fleet does.
//!
//! - In an Auto Scaling group, busy means protected from scale-in
//!   (SetInstanceProtection): the group then never picks this instance
//!   while it works, whoever lowers the desired capacity.
//! - On a raw instance, the tag itself says `busy` or `idle`; the
//!   controller reads it with the instance list it fetches anyway.
//!
//! Becoming busy is reported at once. Becoming idle is reported only after
//! [`IDLE_GRACE`] without work: a worker between two batches stays
//! protected, and a steady stream of jobs costs no API calls at all.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ec2::types::Tag;
use tokio::sync::watch;

use super::{ActivityReporter, FleetError};
use crate::aws::clients::{describe, AwsClients};
use crate::aws::config::WORKER_STATE_TAG;

/// How long a worker stays marked busy after its last job.
pub const IDLE_GRACE: Duration = Duration::from_secs(5);

/// How this worker's state reaches the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reporting {
    /// Scale-in protection in this Auto Scaling group.
    Protection { group: String },
    /// The `imagefleet:worker` tag on a raw instance.
    Tag,
}

#[derive(Clone)]
struct Reporter {
    autoscaling: aws_sdk_autoscaling::Client,
    ec2: aws_sdk_ec2::Client,
    instance: String,
    how: Reporting,
}

/// The reporter a worker on EC2 hands to its loop.
pub struct AwsActivity {
    busy: watch::Sender<bool>,
    instance: String,
    how: Reporting,
}

impl AwsActivity {
    /// Finds out which instance this is (`instance_id`, else the instance
    /// metadata service, IMDSv2) and whether it belongs to an Auto Scaling
    /// group, marks it ready, and starts reporting. `None` off EC2, or for
    /// a local fleet's worker id.
    pub async fn start(
        clients: &AwsClients,
        instance_id: Option<String>,
    ) -> Result<Option<AwsActivity>, FleetError> {
        let instance = match instance_id {
            // The local fleet names its workers `w-...`; EC2 says `i-...`.
            Some(id) if id.starts_with("i-") => id,
            Some(_) => return Ok(None),
            None => match instance_from_metadata().await {
                Some(id) => id,
                None => {
                    tracing::info!("not on EC2 (no instance metadata): reporting no activity");
                    return Ok(None);
                }
            },
        };
        let group = clients
            .autoscaling
            .describe_auto_scaling_instances()
            .instance_ids(&instance)
            .send()
            .await
            .map_err(|e| {
                FleetError::Activity(format!("which group {instance} is in: {}", describe(&e)))
            })?
            .auto_scaling_instances()
            .first()
            .and_then(|i| i.auto_scaling_group_name())
            .map(str::to_owned);
        let how = match group {
            Some(group) => Reporting::Protection { group },
            None => Reporting::Tag,
        };
        let reporter = Reporter {
            autoscaling: clients.autoscaling.clone(),
            ec2: clients.ec2.clone(),
            instance: instance.clone(),
            how: how.clone(),
        };
        // Ready: from now on the controller counts this instance as running.
        let ready = match how {
            Reporting::Protection { .. } => "ready",
            Reporting::Tag => "idle",
        };
        reporter.tag(ready).await?;
        // A worker restarted on its instance (systemd does that) may find
        // the protection its predecessor left behind.
        if matches!(how, Reporting::Protection { .. }) {
            reporter.report(false).await?;
        }
        tracing::info!(instance = %instance, ?how, "reporting worker activity to the fleet");
        let (busy, changes) = watch::channel(false);
        tokio::spawn(reporter.run(changes));
        Ok(Some(AwsActivity {
            busy,
            instance,
            how,
        }))
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn reporting(&self) -> &Reporting {
        &self.how
    }

    pub fn into_reporter(self) -> Arc<dyn ActivityReporter> {
        Arc::new(self)
    }
}

impl ActivityReporter for AwsActivity {
    fn busy(&self, busy: bool) {
        self.busy.send_replace(busy);
    }
}

/// The instance id from IMDSv2 (a session token first, as instances
/// launched with `HttpTokens=required` demand). Quick to give up: off EC2
/// there is nothing to wait for.
async fn instance_from_metadata() -> Option<String> {
    let client = aws_config::imds::Client::builder()
        .max_attempts(1)
        .connect_timeout(Duration::from_millis(500))
        .read_timeout(Duration::from_secs(1))
        .build();
    match client.get("/latest/meta-data/instance-id").await {
        Ok(id) => Some(String::from(id)),
        Err(e) => {
            tracing::debug!(error = %e, "no instance metadata");
            None
        }
    }
}

impl Reporter {
    async fn tag(&self, value: &str) -> Result<(), FleetError> {
        self.ec2
            .create_tags()
            .resources(&self.instance)
            .tags(Tag::builder().key(WORKER_STATE_TAG).value(value).build())
            .send()
            .await
            .map_err(|e| {
                FleetError::Activity(format!(
                    "tagging {} {WORKER_STATE_TAG}={value}: {}",
                    self.instance,
                    describe(&e)
                ))
            })?;
        Ok(())
    }

    async fn report(&self, busy: bool) -> Result<(), FleetError> {
        match &self.how {
            Reporting::Tag => self.tag(if busy { "busy" } else { "idle" }).await,
            Reporting::Protection { group } => {
                self.autoscaling
                    .set_instance_protection()
                    .auto_scaling_group_name(group)
                    .instance_ids(&self.instance)
                    .protected_from_scale_in(busy)
                    .send()
                    .await
                    .map_err(|e| {
                        FleetError::Activity(format!(
                            "setting scale-in protection of {} to {busy}: {}",
                            self.instance,
                            describe(&e)
                        ))
                    })?;
                Ok(())
            }
        }
    }

    /// Follows the worker's state until it is dropped.
    async fn run(self, mut changes: watch::Receiver<bool>) {
        let mut reported = false;
        loop {
            let wanted = *changes.borrow_and_update();
            if wanted == reported {
                if changes.changed().await.is_err() {
                    return;
                }
                continue;
            }
            if !wanted {
                // Idle: only if it stays so for the grace period.
                match tokio::time::timeout(IDLE_GRACE, changes.changed()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) => return,
                    Err(_) => {}
                }
            }
            match self.report(wanted).await {
                Ok(()) => {
                    tracing::debug!(instance = %self.instance, busy = wanted, "activity reported");
                    reported = wanted;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot report worker activity; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }
}
