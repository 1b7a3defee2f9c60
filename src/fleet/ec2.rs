//! The `Fleet` seam on raw EC2 instances: the fleet is every instance
//! tagged with its name, so a restarted controller finds (adopts) the
//! instances it launched before, and nothing else is ever touched.
//!
//! What EC2 does not do for us, this does:
//! - launched instances are remembered until DescribeInstances lists them
//!   (it is eventually consistent), so the cap holds (`launches.rs`);
//! - failed launches back off instead of being retried every tick
//!   (`backoff.rs`);
//! - each worker tags its own instance `imagefleet:worker=idle|busy`, so an
//!   instance without the tag is still starting, and scale-in takes idle
//!   instances first, as locally;
//! - instances whose worker never reports ready, and stopped instances
//!   (which would count against nothing and cost their volumes), are
//!   terminated, and the plan replaces them.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    Filter, HttpTokensState, IamInstanceProfileSpecification, InstanceMetadataEndpointState,
    InstanceMetadataOptionsRequest, InstanceStateName, InstanceType, ResourceType,
    ShutdownBehavior, Tag, TagSpecification,
};
use aws_sdk_ec2::Client;
use base64::Engine;

use super::backoff::Backoff;
use super::launches::LaunchMemory;
use super::{Fleet, FleetError, Instance, InstanceState};
use crate::aws::clients::{describe, AwsClients};
use crate::aws::config::{AwsConfig, WORKER_STATE_TAG};
use crate::aws::user_data;
use crate::job::unix_millis;

pub use crate::aws::config::FLEET_TAG;

/// Clones share their memory of launches and their backoff.
#[derive(Debug, Clone)]
pub struct Ec2Fleet {
    client: Client,
    fleet: String,
    launch: LaunchSpec,
    ready_timeout_ms: u64,
    /// Whether listing terminates stopped and never-ready instances (not
    /// when an operator only looks: `aws status`).
    reaping: bool,
    launched: Arc<LaunchMemory>,
    backoff: Arc<Mutex<Backoff>>,
    /// Which subnet the next launch goes to (they are taken in turn).
    next_subnet: Arc<AtomicUsize>,
}

/// Everything RunInstances needs, resolved once.
#[derive(Debug, Clone)]
struct LaunchSpec {
    image_id: Option<String>,
    instance_type: String,
    instance_profile: Option<String>,
    subnet_ids: Vec<String>,
    security_group_ids: Vec<String>,
    key_name: Option<String>,
    user_data_base64: String,
}

/// What a listing found about one instance of the fleet.
enum Listed {
    Member(Instance),
    /// Useless but billed (stopped, or its worker never started): to be
    /// terminated; counted as draining meanwhile.
    Reap(Instance, &'static str),
    Gone,
}

impl Ec2Fleet {
    /// The fleet `config` names, on the clients' account and region.
    /// Without an AMI in the config it can list and terminate, not launch.
    /// Launched instances are remembered in memory only; see
    /// [`Ec2Fleet::remembering_launches_in`].
    pub fn new(clients: &AwsClients, config: &AwsConfig) -> Ec2Fleet {
        let w = &config.workers;
        let user_data = user_data::render(config, clients.region.as_deref());
        Ec2Fleet {
            client: clients.ec2.clone(),
            fleet: config.fleet.clone(),
            launch: LaunchSpec {
                image_id: w.image_id.clone(),
                instance_type: w.instance_type.clone(),
                instance_profile: w.instance_profile.clone(),
                subnet_ids: w.subnet_ids.clone(),
                security_group_ids: w.security_group_ids.clone(),
                key_name: w.key_name.clone(),
                user_data_base64: base64::engine::general_purpose::STANDARD.encode(user_data),
            },
            ready_timeout_ms: w.ready_timeout_secs.saturating_mul(1000),
            reaping: true,
            launched: Arc::new(LaunchMemory::in_memory()),
            backoff: Arc::new(Mutex::new(Backoff::default())),
            next_subnet: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A fleet that only looks: listing reports unusable instances as
    /// draining but leaves them be.
    pub fn read_only(mut self) -> Ec2Fleet {
        self.reaping = false;
        self
    }

    /// Keeps the record of launched-but-unlisted instances in `path`, so a
    /// controller restarted with the same file does not launch them again.
    pub fn remembering_launches_in(mut self, path: &Path) -> Ec2Fleet {
        self.launched = Arc::new(LaunchMemory::persistent(path));
        self
    }

    /// Builds the clients from aws-config's default chain, then the fleet.
    pub async fn connect(config: &AwsConfig) -> Ec2Fleet {
        Ec2Fleet::new(&AwsClients::new(config).await, config)
    }

    pub fn fleet_name(&self) -> &str {
        &self.fleet
    }

    fn tags(&self, resource: ResourceType) -> TagSpecification {
        TagSpecification::builder()
            .resource_type(resource)
            .tags(Tag::builder().key(FLEET_TAG).value(&self.fleet).build())
            .tags(
                Tag::builder()
                    .key("Name")
                    .value(format!("imagefleet-{}-worker", self.fleet))
                    .build(),
            )
            .build()
    }

    /// The user data an instance was launched with (decoded), for
    /// operators and for the tests that mirror instances locally.
    pub async fn user_data(&self, id: &str) -> Result<String, FleetError> {
        let output = self
            .client
            .describe_instance_attribute()
            .instance_id(id)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
            .send()
            .await
            .map_err(|e| FleetError::List(format!("user data of {id}: {}", describe(&e))))?;
        let encoded = output
            .user_data
            .and_then(|v| v.value)
            .ok_or_else(|| FleetError::List(format!("instance {id} has no user data")))?;
        decode_user_data(id, &encoded)
    }

    /// Every instance carrying the fleet's tag, in any state but gone.
    async fn describe(&self) -> Result<Vec<aws_sdk_ec2::types::Instance>, FleetError> {
        let mut pages = self
            .client
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{FLEET_TAG}"))
                    .values(&self.fleet)
                    .build(),
            )
            .into_paginator()
            .send();
        let mut instances = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| FleetError::List(describe(&e)))?;
            for reservation in page.reservations() {
                instances.extend(reservation.instances().iter().cloned());
            }
        }
        Ok(instances)
    }

    fn classify(&self, instance: &aws_sdk_ec2::types::Instance, now_ms: u64) -> Listed {
        let (Some(id), Some(state)) = (
            instance.instance_id(),
            instance.state().and_then(|s| s.name()),
        ) else {
            return Listed::Gone;
        };
        let launched_at_ms = instance
            .launch_time()
            .and_then(|t| t.to_millis().ok())
            .map_or(0, |ms| ms.max(0) as u64);
        let worker = instance
            .tags()
            .iter()
            .find(|t| t.key() == Some(WORKER_STATE_TAG))
            .and_then(|t| t.value());
        let member = |state, busy| Instance {
            id: id.to_owned(),
            state,
            busy,
            launched_at_ms,
        };
        match state {
            InstanceStateName::Pending => Listed::Member(member(InstanceState::Pending, None)),
            InstanceStateName::Running => match worker {
                Some(worker) => {
                    Listed::Member(member(InstanceState::Running, Some(worker == "busy")))
                }
                None if now_ms.saturating_sub(launched_at_ms) > self.ready_timeout_ms => {
                    Listed::Reap(
                        member(InstanceState::Draining, None),
                        "its worker never reported ready",
                    )
                }
                // Booting, or loading the model.
                None => Listed::Member(member(InstanceState::Pending, None)),
            },
            // Still billed and still counted against the cap until gone.
            InstanceStateName::ShuttingDown | InstanceStateName::Stopping => {
                Listed::Member(member(InstanceState::Draining, None))
            }
            InstanceStateName::Stopped => Listed::Reap(
                member(InstanceState::Draining, None),
                "it is stopped (workers terminate on shutdown)",
            ),
            _ => Listed::Gone,
        }
    }

    async fn terminate_now(&self, ids: &[String]) -> Result<(), FleetError> {
        self.client
            .terminate_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| FleetError::Terminate(describe(&e)))?;
        Ok(())
    }

    fn next_subnet(&self) -> Option<String> {
        let subnets = &self.launch.subnet_ids;
        if subnets.is_empty() {
            return None;
        }
        let turn = self.next_subnet.fetch_add(1, Ordering::Relaxed);
        Some(subnets[turn % subnets.len()].clone())
    }

    async fn run_instances(&self, image_id: &str, count: usize) -> Result<Vec<String>, String> {
        let spec = &self.launch;
        // One token per call: the SDK resends the same request on a retry,
        // so a timed-out RunInstances does not launch a second batch.
        let token = uuid::Uuid::new_v4().to_string();
        let mut request = self
            .client
            .run_instances()
            .image_id(image_id)
            .instance_type(InstanceType::from(spec.instance_type.as_str()))
            // Whatever EC2 can give, up to `count`: a partial launch is
            // remembered and the next tick asks for the rest.
            .min_count(1)
            .max_count(count as i32)
            .client_token(&token)
            .user_data(&spec.user_data_base64)
            // IMDSv2 only: a token, and no second hop, before the metadata
            // service hands out the worker role's credentials.
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Required)
                    .http_endpoint(InstanceMetadataEndpointState::Enabled)
                    .http_put_response_hop_limit(1)
                    .build(),
            )
            // A worker that shuts its instance down is done for good; a
            // stopped instance would keep its volume (billed) and count
            // against nothing.
            .instance_initiated_shutdown_behavior(ShutdownBehavior::Terminate)
            .tag_specifications(self.tags(ResourceType::Instance))
            .tag_specifications(self.tags(ResourceType::Volume))
            .set_subnet_id(self.next_subnet())
            .set_key_name(spec.key_name.clone());
        if !spec.security_group_ids.is_empty() {
            request = request.set_security_group_ids(Some(spec.security_group_ids.clone()));
        }
        if let Some(profile) = &spec.instance_profile {
            request = request.iam_instance_profile(
                IamInstanceProfileSpecification::builder()
                    .name(profile)
                    .build(),
            );
        }
        let output = request.send().await.map_err(|e| describe(&e))?;
        Ok(output
            .instances()
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect())
    }
}

fn decode_user_data(id: &str, encoded: &str) -> Result<String, FleetError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| FleetError::List(format!("user data of {id} is not base64: {e}")))?;
    String::from_utf8(bytes)
        .map_err(|e| FleetError::List(format!("user data of {id} is not UTF-8: {e}")))
}

#[async_trait]
impl Fleet for Ec2Fleet {
    async fn list(&self) -> Result<Vec<Instance>, FleetError> {
        let now_ms = unix_millis();
        let described = self.describe().await?;
        let mut seen = HashSet::new();
        let mut instances = Vec::new();
        let mut reap = Vec::new();
        for instance in &described {
            if let Some(id) = instance.instance_id() {
                seen.insert(id.to_owned());
            }
            match self.classify(instance, now_ms) {
                Listed::Member(member) => instances.push(member),
                Listed::Reap(member, why) => {
                    if self.reaping {
                        tracing::warn!(instance = %member.id, "terminating an instance: {why}");
                    }
                    reap.push(member.id.clone());
                    instances.push(member);
                }
                Listed::Gone => {}
            }
        }
        // Launched, not listed yet: pending, so the cap counts them.
        for (id, launched_at_ms) in self.launched.unseen(&seen, now_ms) {
            instances.push(Instance {
                id,
                state: InstanceState::Pending,
                busy: None,
                launched_at_ms,
            });
        }
        if !reap.is_empty() && self.reaping {
            // The listing stands even if this fails; the next one retries.
            if let Err(e) = self.terminate_now(&reap).await {
                tracing::error!(error = %e, "cannot terminate unusable instances");
            }
        }
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(instances)
    }

    async fn launch(&self, count: usize) -> Result<Vec<String>, FleetError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let image_id = self.launch.image_id.as_deref().ok_or_else(|| {
            FleetError::Launch(
                "no worker AMI configured: set workers.image_id or IMAGEFLEET_WORKER_IMAGE_ID"
                    .into(),
            )
        })?;
        let now = Instant::now();
        self.backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check(now)
            .map_err(FleetError::Launch)?;
        match self.run_instances(image_id, count).await {
            Ok(ids) => {
                self.backoff
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .succeeded();
                self.launched.remember(&ids, unix_millis());
                if ids.len() < count {
                    tracing::warn!(
                        asked = count,
                        got = ids.len(),
                        "EC2 launched fewer instances than asked; the next tick asks again"
                    );
                }
                tracing::info!(fleet = %self.fleet, ?ids, "launched instances");
                Ok(ids)
            }
            Err(error) => {
                let delay = self
                    .backoff
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .failed(now, error.clone());
                Err(FleetError::Launch(format!(
                    "{error} (next attempt in {} s)",
                    delay.as_secs()
                )))
            }
        }
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), FleetError> {
        if ids.is_empty() {
            return Ok(());
        }
        // Never terminate what is not ours, whatever a caller passes in.
        let ours: HashSet<String> = self.list().await?.into_iter().map(|i| i.id).collect();
        if let Some(stranger) = ids.iter().find(|id| !ours.contains(*id)) {
            return Err(FleetError::Terminate(format!(
                "instance {stranger} is not a live member of fleet {}",
                self.fleet
            )));
        }
        self.terminate_now(ids).await?;
        tracing::info!(fleet = %self.fleet, ?ids, "terminating instances");
        Ok(())
    }
}
