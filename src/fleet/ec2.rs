//! The `Fleet` seam on EC2: the fleet is every instance tagged with its
//! name, so a restarted controller finds (adopts) the instances it launched
//! before, and nothing else is ever touched.

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    Filter, IamInstanceProfileSpecification, InstanceStateName, InstanceType, ResourceType, Tag,
    TagSpecification,
};
use aws_sdk_ec2::Client;
use base64::Engine;

use super::{Fleet, FleetError, Instance, InstanceState};
use crate::aws::clients::{describe, AwsClients};
use crate::aws::config::AwsConfig;
use crate::aws::user_data;

/// The tag that marks an instance as a member of a fleet (value: its name).
/// The IAM policies in worker/ami/iam/ key on it too.
pub const FLEET_TAG: &str = "imagefleet:fleet";

#[derive(Debug, Clone)]
pub struct Ec2Fleet {
    client: Client,
    fleet: String,
    launch: LaunchSpec,
}

/// Everything RunInstances needs, resolved once.
#[derive(Debug, Clone)]
struct LaunchSpec {
    image_id: Option<String>,
    instance_type: String,
    instance_profile: Option<String>,
    subnet_id: Option<String>,
    security_group_ids: Vec<String>,
    key_name: Option<String>,
    user_data_base64: String,
}

impl Ec2Fleet {
    /// The fleet `config` names, on the clients' account and region.
    /// Without an AMI in the config it can list and terminate, not launch.
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
                subnet_id: w.subnet_id.clone(),
                security_group_ids: w.security_group_ids.clone(),
                key_name: w.key_name.clone(),
                user_data_base64: base64::engine::general_purpose::STANDARD.encode(user_data),
            },
        }
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
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| FleetError::List(format!("user data of {id} is not base64: {e}")))?;
        String::from_utf8(bytes)
            .map_err(|e| FleetError::List(format!("user data of {id} is not UTF-8: {e}")))
    }
}

fn state_of(name: &InstanceStateName) -> Option<InstanceState> {
    match name {
        InstanceStateName::Pending => Some(InstanceState::Pending),
        InstanceStateName::Running => Some(InstanceState::Running),
        // Still billed and still counted against the cap until gone.
        InstanceStateName::ShuttingDown | InstanceStateName::Stopping => {
            Some(InstanceState::Draining)
        }
        _ => None,
    }
}

#[async_trait]
impl Fleet for Ec2Fleet {
    async fn list(&self) -> Result<Vec<Instance>, FleetError> {
        let mut pages = self
            .client
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{FLEET_TAG}"))
                    .values(&self.fleet)
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .values("shutting-down")
                    .values("stopping")
                    .build(),
            )
            .into_paginator()
            .send();
        let mut instances = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| FleetError::List(describe(&e)))?;
            for reservation in page.reservations() {
                for instance in reservation.instances() {
                    let (Some(id), Some(state)) = (
                        instance.instance_id(),
                        instance.state().and_then(|s| s.name()).and_then(state_of),
                    ) else {
                        continue;
                    };
                    instances.push(Instance {
                        id: id.to_owned(),
                        state,
                        // EC2 cannot tell whether the worker holds a job.
                        busy: None,
                        launched_at_ms: instance
                            .launch_time()
                            .and_then(|t| t.to_millis().ok())
                            .map_or(0, |ms| ms.max(0) as u64),
                    });
                }
            }
        }
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(instances)
    }

    async fn launch(&self, count: usize) -> Result<Vec<String>, FleetError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let spec = &self.launch;
        let image_id = spec.image_id.as_deref().ok_or_else(|| {
            FleetError::Launch(
                "no worker AMI configured: set workers.image_id or IMAGEFLEET_WORKER_IMAGE_ID"
                    .into(),
            )
        })?;
        // One token per call: the SDK resends the same request on a retry,
        // so a timed-out RunInstances does not launch a second batch.
        let token = uuid::Uuid::new_v4().to_string();
        let mut request = self
            .client
            .run_instances()
            .image_id(image_id)
            .instance_type(InstanceType::from(spec.instance_type.as_str()))
            // All or nothing: a partial launch would leave the controller
            // guessing, and the next reconcile asks again anyway.
            .min_count(count as i32)
            .max_count(count as i32)
            .client_token(&token)
            .user_data(&spec.user_data_base64)
            .tag_specifications(self.tags(ResourceType::Instance))
            .tag_specifications(self.tags(ResourceType::Volume))
            .set_subnet_id(spec.subnet_id.clone())
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
        let output = request
            .send()
            .await
            .map_err(|e| FleetError::Launch(describe(&e)))?;
        let ids: Vec<String> = output
            .instances()
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect();
        if ids.len() < count {
            tracing::warn!(
                asked = count,
                got = ids.len(),
                "EC2 launched fewer instances than asked"
            );
        }
        tracing::info!(fleet = %self.fleet, ?ids, "launched instances");
        Ok(ids)
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), FleetError> {
        if ids.is_empty() {
            return Ok(());
        }
        // Never terminate what is not ours, whatever a caller passes in.
        let ours: Vec<String> = self.list().await?.into_iter().map(|i| i.id).collect();
        if let Some(stranger) = ids.iter().find(|id| !ours.contains(id)) {
            return Err(FleetError::Terminate(format!(
                "instance {stranger} is not a live member of fleet {}",
                self.fleet
            )));
        }
        self.client
            .terminate_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| FleetError::Terminate(describe(&e)))?;
        tracing::info!(fleet = %self.fleet, ?ids, "terminating instances");
        Ok(())
    }
}
