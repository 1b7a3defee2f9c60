//! The `Fleet` seam on an EC2 Auto Scaling group (`imagefleet aws setup
//! --asg`). The group keeps its size, replaces unhealthy instances, spreads
//! over subnets and mixes spot with on-demand capacity; the controller only
//! sets its desired capacity.
//!
//! Launching k instances sets the desired capacity to the active count plus
//! k; terminating lowers it by the number of ids, and the group picks which
//! instances go. Workers protect their instance from scale-in while they
//! hold a job (`aws_activity.rs`), so the group takes idle instances first,
//! and a busy one only once it has finished. Desired capacity is state the
//! group keeps, not an action: setting it twice to the same value launches
//! nothing twice, so eventual consistency cannot push the fleet past its
//! cap, even across a restarted controller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_autoscaling::types::{AutoScalingGroup, LifecycleState};
use aws_sdk_ec2::types::Filter;

use super::{Fleet, FleetError, Instance, InstanceState};
use crate::aws::clients::{describe, AwsClients};
use crate::aws::config::{AwsConfig, WORKER_STATE_TAG};
use crate::job::unix_millis;

#[derive(Debug, Clone)]
pub struct AsgFleet {
    autoscaling: aws_sdk_autoscaling::Client,
    ec2: aws_sdk_ec2::Client,
    group: String,
    ready_timeout_ms: u64,
    /// Whether listing has never-ready instances replaced (not when an
    /// operator only looks: `aws status`).
    replacing: bool,
    /// What the last listing saw: active (pending or running) instances and
    /// the group's desired capacity and maximum size.
    last: Arc<Mutex<Observed>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Observed {
    active: u32,
    desired: u32,
    max_size: u32,
}

/// What EC2 says about a group member: launch time and worker state tag.
struct Details {
    launched_at_ms: u64,
    worker_ready: bool,
}

impl AsgFleet {
    pub fn new(clients: &AwsClients, config: &AwsConfig) -> AsgFleet {
        AsgFleet {
            autoscaling: clients.autoscaling.clone(),
            ec2: clients.ec2.clone(),
            group: config.autoscaling_group.clone(),
            ready_timeout_ms: config.workers.ready_timeout_secs.saturating_mul(1000),
            replacing: true,
            last: Arc::new(Mutex::new(Observed::default())),
        }
    }

    /// A fleet that only looks: never-ready instances are reported as
    /// draining but left to the controller.
    pub fn read_only(mut self) -> AsgFleet {
        self.replacing = false;
        self
    }

    /// The group's desired capacity, minimum and maximum size, as of now;
    /// `None` when the group does not exist.
    pub async fn capacity(&self) -> Result<Option<(u32, u32, u32)>, FleetError> {
        let count = |n: Option<i32>| n.unwrap_or(0).max(0) as u32;
        Ok(self.describe_group().await?.map(|g| {
            (
                count(g.desired_capacity()),
                count(g.min_size()),
                count(g.max_size()),
            )
        }))
    }

    /// The fleet's group if it exists (`aws setup --asg` made it), else
    /// `None`: the fleet is raw instances.
    pub async fn detect(
        clients: &AwsClients,
        config: &AwsConfig,
    ) -> Result<Option<AsgFleet>, FleetError> {
        let fleet = AsgFleet::new(clients, config);
        Ok(fleet.describe_group().await?.map(|_| fleet))
    }

    pub fn group_name(&self) -> &str {
        &self.group
    }

    async fn describe_group(&self) -> Result<Option<AutoScalingGroup>, FleetError> {
        let output = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&self.group)
            .send()
            .await
            .map_err(|e| FleetError::List(format!("group {}: {}", self.group, describe(&e))))?;
        Ok(output.auto_scaling_groups().first().cloned())
    }

    /// Launch times and worker tags, by filter so that an instance EC2
    /// does not list yet is simply absent (an id list would fail).
    async fn details(&self, ids: &[String]) -> Result<HashMap<String, Details>, FleetError> {
        let mut found = HashMap::new();
        if ids.is_empty() {
            return Ok(found);
        }
        let mut pages = self
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("instance-id")
                    .set_values(Some(ids.to_vec()))
                    .build(),
            )
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| FleetError::List(describe(&e)))?;
            for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                let Some(id) = instance.instance_id() else {
                    continue;
                };
                found.insert(
                    id.to_owned(),
                    Details {
                        launched_at_ms: instance
                            .launch_time()
                            .and_then(|t| t.to_millis().ok())
                            .map_or(0, |ms| ms.max(0) as u64),
                        worker_ready: instance
                            .tags()
                            .iter()
                            .any(|t| t.key() == Some(WORKER_STATE_TAG)),
                    },
                );
            }
        }
        Ok(found)
    }

    /// Tells the group an instance is unhealthy: it terminates and
    /// replaces it.
    async fn replace(&self, id: &str) {
        tracing::warn!(instance = id, group = %self.group,
            "its worker never reported ready; marking it unhealthy so the group replaces it");
        if let Err(e) = self
            .autoscaling
            .set_instance_health()
            .instance_id(id)
            .health_status("Unhealthy")
            .should_respect_grace_period(false)
            .send()
            .await
        {
            tracing::error!(instance = id, error = %describe(&e), "cannot mark an instance unhealthy");
        }
    }

    async fn set_desired(&self, desired: u32) -> Result<(), FleetError> {
        self.autoscaling
            .set_desired_capacity()
            .auto_scaling_group_name(&self.group)
            .desired_capacity(desired as i32)
            .honor_cooldown(false)
            .send()
            .await
            .map_err(|e| {
                FleetError::Launch(format!(
                    "setting the desired capacity of {} to {desired}: {}",
                    self.group,
                    describe(&e)
                ))
            })?;
        tracing::info!(group = %self.group, desired, "desired capacity set");
        Ok(())
    }

    fn observed(&self) -> Observed {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where a group member is in its life, as the controller counts it.
fn state_of(lifecycle: &LifecycleState) -> Option<InstanceState> {
    match lifecycle {
        LifecycleState::Pending | LifecycleState::PendingWait | LifecycleState::PendingProceed => {
            Some(InstanceState::Pending)
        }
        LifecycleState::InService => Some(InstanceState::Running),
        // Standby and warm-pool instances take no jobs and the group does
        // not count them in its capacity.
        LifecycleState::Standby
        | LifecycleState::Terminated
        | LifecycleState::Detached
        | LifecycleState::WarmedHibernated => None,
        lifecycle if lifecycle.as_str().starts_with("Warmed") => None,
        // Terminating, detaching, entering standby, replacing volumes:
        // still billed, no longer dependable.
        _ => Some(InstanceState::Draining),
    }
}

#[async_trait]
impl Fleet for AsgFleet {
    async fn list(&self) -> Result<Vec<Instance>, FleetError> {
        let group = self.describe_group().await?.ok_or_else(|| {
            FleetError::List(format!(
                "Auto Scaling group {} does not exist (run `imagefleet aws setup --asg`)",
                self.group
            ))
        })?;
        let members = group.instances();
        let ids: Vec<String> = members
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect();
        let details = self.details(&ids).await?;
        let now_ms = unix_millis();
        let mut instances = Vec::new();
        for member in members {
            let (Some(id), Some(mut state)) = (
                member.instance_id(),
                member.lifecycle_state().and_then(state_of),
            ) else {
                continue;
            };
            let detail = details.get(id);
            let unhealthy = member
                .health_status()
                .is_some_and(|h| h.eq_ignore_ascii_case("unhealthy"));
            if unhealthy {
                state = InstanceState::Draining;
            } else if state == InstanceState::Running && !detail.is_some_and(|d| d.worker_ready) {
                // In service as far as the group knows, but its worker has
                // not started yet (booting, loading the model)...
                state = InstanceState::Pending;
                // ...or never will.
                if detail.is_some_and(|d| {
                    now_ms.saturating_sub(d.launched_at_ms) > self.ready_timeout_ms
                }) {
                    if self.replacing {
                        self.replace(id).await;
                    }
                    state = InstanceState::Draining;
                }
            }
            instances.push(Instance {
                id: id.to_owned(),
                state,
                // The worker's scale-in protection says it holds a job.
                busy: (state == InstanceState::Running)
                    .then(|| member.protected_from_scale_in().unwrap_or(false)),
                launched_at_ms: detail.map_or(0, |d| d.launched_at_ms),
            });
        }
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        let active = instances
            .iter()
            .filter(|i| i.state != InstanceState::Draining)
            .count() as u32;
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Observed {
            active,
            desired: group.desired_capacity().unwrap_or(0).max(0) as u32,
            max_size: group.max_size().unwrap_or(0).max(0) as u32,
        };
        Ok(instances)
    }

    /// Raises the desired capacity to the active count plus `count` (within
    /// the group's maximum); the group launches. Returns no ids: the group
    /// names its instances, and the next listing shows them.
    async fn launch(&self, count: usize) -> Result<Vec<String>, FleetError> {
        let last = self.observed();
        let target = (last.active + count as u32).min(last.max_size.max(1));
        // The group may already be on its way there (instances not listed
        // yet); asking again would change nothing.
        if target != last.desired {
            self.set_desired(target).await?;
        }
        Ok(Vec::new())
    }

    /// Lowers the desired capacity by `ids.len()`. The group chooses which
    /// instances go among those not protected from scale-in, i.e. idle
    /// ones; a busy one is taken once its worker has dropped protection.
    async fn terminate(&self, ids: &[String]) -> Result<(), FleetError> {
        if ids.is_empty() {
            return Ok(());
        }
        let last = self.observed();
        let target = last.active.saturating_sub(ids.len() as u32);
        // Even when the desired capacity is already there: a group that
        // could not scale in (every instance protected) acts on a new
        // request as soon as one is unprotected.
        self.set_desired(target)
            .await
            .map_err(|e| FleetError::Terminate(e.to_string()))
    }
}
