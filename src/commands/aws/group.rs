//! `aws setup --asg` and its teardown: the fleet as an EC2 Auto Scaling
//! group. A launch template says how a worker instance starts (the AMI,
//! IMDSv2 only, the worker role, the user data, the fleet's tags); the group
//! `imagefleet-FLEET-workers` (min 0, max 20, desired 0 until the controller
//! says otherwise) spreads over several subnets, mixes the instance types
//! and, with `--spot`, runs on spot capacity with capacity rebalancing.

use aws_sdk_autoscaling::types::{
    InstancesDistribution, LaunchTemplate, LaunchTemplateOverrides, LaunchTemplateSpecification,
    MixedInstancesPolicy,
};
use aws_sdk_ec2::types::{
    Filter, InstanceType, LaunchTemplateHttpTokensState,
    LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMetadataEndpointState, LaunchTemplateInstanceMetadataOptionsRequest,
    LaunchTemplateTagSpecificationRequest, RequestLaunchTemplateData, ResourceType, Tag,
    TagSpecification,
};
use base64::Engine;
use serde::Serialize;

use super::resources::{error, ResourceError};
use super::setup::{Outcome, SetupStep};
use crate::aws::clients::describe;
use crate::aws::config::FLEET_TAG;
use crate::aws::{user_data, AwsClients, AwsConfig};

/// Until the worker has started, a new instance is not judged by EC2's
/// health checks; the controller replaces one whose worker never reports
/// ready (`workers.ready_timeout_secs`).
const HEALTH_CHECK_GRACE_SECS: i32 = 300;

/// What the launch template says, in one value: its hash goes in the
/// version description, so a second setup sees whether anything changed.
#[derive(Debug, Serialize)]
struct TemplateSpec {
    image_id: String,
    instance_type: String,
    instance_profile: Option<String>,
    security_group_ids: Vec<String>,
    key_name: Option<String>,
    user_data: String,
    fleet: String,
}

impl TemplateSpec {
    fn of(clients: &AwsClients, config: &AwsConfig) -> Result<TemplateSpec, ResourceError> {
        let w = &config.workers;
        let image_id = w.image_id.clone().ok_or_else(|| {
            error(
                "creating launch template",
                &config.autoscaling_group,
                "no worker AMI: set workers.image_id or IMAGEFLEET_WORKER_IMAGE_ID".into(),
            )
        })?;
        Ok(TemplateSpec {
            image_id,
            instance_type: w.instance_type.clone(),
            instance_profile: w.instance_profile.clone(),
            security_group_ids: w.security_group_ids.clone(),
            key_name: w.key_name.clone(),
            user_data: user_data::render(config, clients.region.as_deref()),
            fleet: config.fleet.clone(),
        })
    }

    fn version_description(&self) -> String {
        let json = serde_json::to_string(self).expect("specs serialise");
        format!("imagefleet spec {:016x}", fnv1a(json.as_bytes()))
    }

    fn data(&self) -> RequestLaunchTemplateData {
        let tags = |resource: ResourceType| {
            LaunchTemplateTagSpecificationRequest::builder()
                .resource_type(resource)
                .tags(Tag::builder().key(FLEET_TAG).value(&self.fleet).build())
                .tags(
                    Tag::builder()
                        .key("Name")
                        .value(format!("imagefleet-{}-worker", self.fleet))
                        .build(),
                )
                .build()
        };
        let mut data = RequestLaunchTemplateData::builder()
            .image_id(&self.image_id)
            .instance_type(InstanceType::from(self.instance_type.as_str()))
            .user_data(base64::engine::general_purpose::STANDARD.encode(&self.user_data))
            // IMDSv2 only, one hop: the worker role's credentials need a
            // session token a request forwarded from elsewhere cannot get.
            .metadata_options(
                LaunchTemplateInstanceMetadataOptionsRequest::builder()
                    .http_tokens(LaunchTemplateHttpTokensState::Required)
                    .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::Enabled)
                    .http_put_response_hop_limit(1)
                    .build(),
            )
            .tag_specifications(tags(ResourceType::Instance))
            .tag_specifications(tags(ResourceType::Volume))
            .set_key_name(self.key_name.clone());
        if !self.security_group_ids.is_empty() {
            data = data.set_security_group_ids(Some(self.security_group_ids.clone()));
        }
        if let Some(profile) = &self.instance_profile {
            data = data.iam_instance_profile(
                LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                    .name(profile)
                    .build(),
            );
        }
        data.build()
    }
}

/// FNV-1a: a stable hash (std's may change between releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Creates or updates the launch template and the group.
pub async fn setup_group(
    clients: &AwsClients,
    config: &AwsConfig,
) -> Result<Vec<SetupStep>, ResourceError> {
    let spec = TemplateSpec::of(clients, config)?;
    let template = ensure_template(clients, config, &spec).await?;
    let group = ensure_group(clients, config).await?;
    Ok(vec![template, group])
}

/// The launch template's id and the description of its default version.
async fn find_template(
    clients: &AwsClients,
    name: &str,
) -> Result<Option<(String, Vec<aws_sdk_ec2::types::Tag>)>, ResourceError> {
    let found = clients
        .ec2
        .describe_launch_templates()
        .filters(
            Filter::builder()
                .name("launch-template-name")
                .values(name)
                .build(),
        )
        .send()
        .await
        .map_err(|e| error("reading launch template", name, describe(&e)))?;
    Ok(found
        .launch_templates()
        .iter()
        .find(|t| t.launch_template_name() == Some(name))
        .and_then(|t| Some((t.launch_template_id()?.to_owned(), t.tags().to_vec()))))
}

async fn ensure_template(
    clients: &AwsClients,
    config: &AwsConfig,
    spec: &TemplateSpec,
) -> Result<SetupStep, ResourceError> {
    let name = &config.autoscaling_group;
    let description = spec.version_description();
    let step = |outcome| SetupStep {
        kind: "launch template",
        name: name.clone(),
        outcome,
    };
    let Some((id, tags)) = find_template(clients, name).await? else {
        clients
            .ec2
            .create_launch_template()
            .launch_template_name(name)
            .version_description(&description)
            .launch_template_data(spec.data())
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::LaunchTemplate)
                    .tags(Tag::builder().key(FLEET_TAG).value(&config.fleet).build())
                    .build(),
            )
            .send()
            .await
            .map_err(|e| error("creating launch template", name, describe(&e)))?;
        tracing::info!(template = %name, "created launch template");
        return Ok(step(Outcome::Created));
    };
    check_tag(
        "launch template",
        name,
        tags.iter()
            .find(|t| t.key() == Some(FLEET_TAG))
            .and_then(|t| t.value()),
        &config.fleet,
    )?;
    let default = clients
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(&id)
        .versions("$Default")
        .send()
        .await
        .map_err(|e| error("reading launch template", name, describe(&e)))?;
    let current = default
        .launch_template_versions()
        .first()
        .and_then(|v| v.version_description());
    if current == Some(description.as_str()) {
        return Ok(step(Outcome::Existed));
    }
    // A new version, made the default: the group launches from `$Default`,
    // so new instances get it; running ones keep theirs.
    let created = clients
        .ec2
        .create_launch_template_version()
        .launch_template_id(&id)
        .version_description(&description)
        .launch_template_data(spec.data())
        .send()
        .await
        .map_err(|e| error("updating launch template", name, describe(&e)))?;
    let version = created
        .launch_template_version()
        .and_then(|v| v.version_number())
        .ok_or_else(|| error("updating launch template", name, "no version number".into()))?;
    clients
        .ec2
        .modify_launch_template()
        .launch_template_id(&id)
        .default_version(version.to_string())
        .send()
        .await
        .map_err(|e| error("updating launch template", name, describe(&e)))?;
    tracing::info!(template = %name, version, "launch template updated");
    Ok(step(Outcome::Updated))
}

fn check_tag(kind: &str, name: &str, tag: Option<&str>, fleet: &str) -> Result<(), ResourceError> {
    match tag {
        Some(tag) if tag == fleet => Ok(()),
        other => Err(error(
            "refusing to touch",
            name,
            format!(
                "the {kind} is not tagged {FLEET_TAG}={fleet} (found {other:?}); \
                 tag it, or use another name"
            ),
        )),
    }
}

/// The subnets to launch into: the configured ones, else the default
/// VPC's (one per availability zone).
async fn subnets(clients: &AwsClients, config: &AwsConfig) -> Result<Vec<String>, ResourceError> {
    if !config.workers.subnet_ids.is_empty() {
        return Ok(config.workers.subnet_ids.clone());
    }
    let output = clients
        .ec2
        .describe_subnets()
        .filters(
            Filter::builder()
                .name("default-for-az")
                .values("true")
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            error(
                "finding subnets for",
                &config.autoscaling_group,
                describe(&e),
            )
        })?;
    let mut ids: Vec<String> = output
        .subnets()
        .iter()
        .filter_map(|s| s.subnet_id().map(str::to_owned))
        .collect();
    ids.sort();
    if ids.is_empty() {
        return Err(error(
            "finding subnets for",
            &config.autoscaling_group,
            "no default VPC: set workers.subnet_ids or IMAGEFLEET_WORKER_SUBNETS".into(),
        ));
    }
    Ok(ids)
}

fn mixed_instances(config: &AwsConfig) -> MixedInstancesPolicy {
    let w = &config.workers;
    let mut template = LaunchTemplate::builder().launch_template_specification(
        LaunchTemplateSpecification::builder()
            .launch_template_name(&config.autoscaling_group)
            .version("$Default")
            .build(),
    );
    for instance_type in config.group_instance_types() {
        template = template.overrides(
            LaunchTemplateOverrides::builder()
                .instance_type(instance_type)
                .build(),
        );
    }
    MixedInstancesPolicy::builder()
        .launch_template(template.build())
        .instances_distribution(
            InstancesDistribution::builder()
                // The types in the order given: the first is the fastest.
                .on_demand_allocation_strategy("prioritized")
                .on_demand_base_capacity(w.on_demand_base as i32)
                // With --spot, everything above the base runs on spot.
                .on_demand_percentage_above_base_capacity(if w.spot { 0 } else { 100 })
                .spot_allocation_strategy("price-capacity-optimized")
                .build(),
        )
        .build()
}

async fn ensure_group(
    clients: &AwsClients,
    config: &AwsConfig,
) -> Result<SetupStep, ResourceError> {
    let name = &config.autoscaling_group;
    let subnets = subnets(clients, config).await?.join(",");
    let existing = clients
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .map_err(|e| error("reading group", name, describe(&e)))?;
    let step = |outcome| SetupStep {
        kind: "group",
        name: name.clone(),
        outcome,
    };
    if let Some(group) = existing.auto_scaling_groups().first() {
        check_tag(
            "group",
            name,
            group
                .tags()
                .iter()
                .find(|t| t.key() == Some(FLEET_TAG))
                .and_then(|t| t.value()),
            &config.fleet,
        )?;
        // Everything but the desired capacity, which is the controller's.
        clients
            .autoscaling
            .update_auto_scaling_group()
            .auto_scaling_group_name(name)
            .min_size(0)
            .max_size(config.workers.max_size as i32)
            .vpc_zone_identifier(&subnets)
            .mixed_instances_policy(mixed_instances(config))
            .capacity_rebalance(config.workers.spot)
            .health_check_type("EC2")
            .health_check_grace_period(HEALTH_CHECK_GRACE_SECS)
            .send()
            .await
            .map_err(|e| error("updating group", name, describe(&e)))?;
        return Ok(step(Outcome::Existed));
    }
    clients
        .autoscaling
        .create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .min_size(0)
        .max_size(config.workers.max_size as i32)
        .desired_capacity(0)
        .vpc_zone_identifier(&subnets)
        .mixed_instances_policy(mixed_instances(config))
        .capacity_rebalance(config.workers.spot)
        .health_check_type("EC2")
        .health_check_grace_period(HEALTH_CHECK_GRACE_SECS)
        // Workers protect themselves while busy; new instances start idle.
        .new_instances_protected_from_scale_in(false)
        .tags(
            aws_sdk_autoscaling::types::Tag::builder()
                .key(FLEET_TAG)
                .value(&config.fleet)
                .resource_id(name)
                .resource_type("auto-scaling-group")
                // The launch template tags the instances.
                .propagate_at_launch(false)
                .build(),
        )
        .send()
        .await
        .map_err(|e| error("creating group", name, describe(&e)))?;
    tracing::info!(group = %name, "created Auto Scaling group");
    Ok(step(Outcome::Created))
}

/// Deletes the group (terminating its instances) and the launch template,
/// if they exist and carry the fleet's tag; the names removed.
pub async fn teardown_group(
    clients: &AwsClients,
    config: &AwsConfig,
) -> Result<Vec<String>, ResourceError> {
    let name = &config.autoscaling_group;
    let mut removed = Vec::new();
    let existing = clients
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .map_err(|e| error("reading group", name, describe(&e)))?;
    if let Some(group) = existing.auto_scaling_groups().first() {
        check_tag(
            "group",
            name,
            group
                .tags()
                .iter()
                .find(|t| t.key() == Some(FLEET_TAG))
                .and_then(|t| t.value()),
            &config.fleet,
        )?;
        clients
            .autoscaling
            .delete_auto_scaling_group()
            .auto_scaling_group_name(name)
            // Terminate its instances too, protected or not.
            .force_delete(true)
            .send()
            .await
            .map_err(|e| error("deleting group", name, describe(&e)))?;
        wait_until_gone(clients, name).await?;
        removed.push(format!("group {name}"));
    }
    if let Some((id, tags)) = find_template(clients, name).await? {
        check_tag(
            "launch template",
            name,
            tags.iter()
                .find(|t| t.key() == Some(FLEET_TAG))
                .and_then(|t| t.value()),
            &config.fleet,
        )?;
        clients
            .ec2
            .delete_launch_template()
            .launch_template_id(id)
            .send()
            .await
            .map_err(|e| error("deleting launch template", name, describe(&e)))?;
        removed.push(format!("launch template {name}"));
    }
    Ok(removed)
}

/// A force-deleted group goes once its instances have terminated, which
/// takes a few minutes; the launch template cannot go before it.
async fn wait_until_gone(clients: &AwsClients, name: &str) -> Result<(), ResourceError> {
    for _ in 0..120 {
        let output = clients
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| error("reading group", name, describe(&e)))?;
        if output.auto_scaling_groups().is_empty() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
    Err(error(
        "deleting group",
        name,
        "still there after 10 minutes; run teardown again later".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spot_takes_everything_above_the_base() {
        let mut config = AwsConfig::derived("demo", false);
        config.workers.instance_types = vec!["c7i.large".into(), "c6i.large".into()];
        let policy = mixed_instances(&config);
        let distribution = policy.instances_distribution().unwrap();
        assert_eq!(
            distribution.on_demand_percentage_above_base_capacity(),
            Some(100)
        );
        let types: Vec<&str> = policy
            .launch_template()
            .unwrap()
            .overrides()
            .iter()
            .filter_map(|o| o.instance_type())
            .collect();
        assert_eq!(types, ["c7i.large", "c6i.large"]);
        config.workers.spot = true;
        let policy = mixed_instances(&config);
        assert_eq!(
            policy
                .instances_distribution()
                .unwrap()
                .on_demand_percentage_above_base_capacity(),
            Some(0)
        );
    }

    #[test]
    fn the_spec_hash_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
