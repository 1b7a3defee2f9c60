//! The AWS configuration: one validated struct naming the fleet and every
//! resource. Sources, later ones winning: names derived from the fleet name,
//! an optional TOML file, `IMAGEFLEET_*` environment variables, flags.
//! Credentials, region and endpoints are not here: they come from
//! aws-config's default chain (env, profile, instance metadata), so the
//! standard AWS variables are all a user needs.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// After this many receives without a delete, SQS moves a request to the
/// dead-letter queue (the local backend uses the same number).
pub use crate::job::MAX_RECEIVES;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read AWS config file {path}: {message}")]
    File { path: String, message: String },
    #[error("invalid AWS configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// Names the fleet: tags its instances and, by default, every resource.
    pub fleet: String,
    /// Written into the workers' user data; `None` = aws-config's chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub requests_queue: String,
    pub results_queue: String,
    pub dead_letter_queue: String,
    /// FIFO request queue (and DLQ): names end in `.fifo`, a message group
    /// per job so workers still run in parallel, dedup id = job id.
    #[serde(default)]
    pub fifo: bool,
    pub max_receives: u32,
    pub input_bucket: String,
    pub output_bucket: String,
    /// Days S3 keeps inputs and results (a lifecycle rule on both buckets;
    /// S3 counts whole days) and SQS keeps requests (at most 14).
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// The Auto Scaling group (and its launch template) when the fleet is
    /// one; `aws setup --asg` creates it, the controller detects it.
    #[serde(default)]
    pub autoscaling_group: String,
    pub workers: WorkerLaunch,
}

fn default_retention_days() -> u32 {
    1
}

/// How the fleet launches worker instances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerLaunch {
    /// The AMI: a baked one (worker/ami/bake.sh), or a stock Amazon Linux
    /// 2023 image together with `artifacts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The instance type of raw launches, and the first choice of the
    /// Auto Scaling group.
    pub instance_type: String,
    /// More types the Auto Scaling group may use (spot capacity comes from
    /// several pools); raw launches use `instance_type` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_types: Vec<String>,
    /// Instance profile name (the worker role; worker/ami/iam/).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile: Option<String>,
    /// Subnets to launch into: raw launches take them in turn, the group
    /// spreads over them (one per availability zone is the point). Empty:
    /// the default VPC's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnet_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_group_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// `s3://bucket/prefix` holding `imagefleet` (the binary) and `models/`:
    /// set it to boot a stock AMI that fetches both at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<String>,
    /// The group's spot share: instances above `on_demand_base` run on
    /// spot capacity (`aws setup --spot`).
    #[serde(default)]
    pub spot: bool,
    /// Instances of the group that always run on demand (when it has any).
    #[serde(default)]
    pub on_demand_base: u32,
    /// The group's maximum size.
    #[serde(default = "default_group_max")]
    pub max_size: u32,
    /// An instance whose worker has not reported ready this long after
    /// launch is replaced (a bad AMI, a worker that cannot start).
    #[serde(default = "default_ready_timeout_secs")]
    pub ready_timeout_secs: u64,
}

fn default_group_max() -> u32 {
    20
}

fn default_ready_timeout_secs() -> u64 {
    600
}

/// What the file may set: everything optional, merged over the defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    fleet: Option<String>,
    region: Option<String>,
    requests_queue: Option<String>,
    results_queue: Option<String>,
    dead_letter_queue: Option<String>,
    fifo: Option<bool>,
    max_receives: Option<u32>,
    input_bucket: Option<String>,
    output_bucket: Option<String>,
    retention_days: Option<u32>,
    autoscaling_group: Option<String>,
    #[serde(default)]
    workers: FileWorkers,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWorkers {
    image_id: Option<String>,
    instance_type: Option<String>,
    instance_types: Option<Vec<String>>,
    instance_profile: Option<String>,
    subnet_ids: Option<Vec<String>>,
    /// One subnet, as files written before `subnet_ids` say it.
    subnet_id: Option<String>,
    security_group_ids: Option<Vec<String>>,
    key_name: Option<String>,
    artifacts: Option<String>,
    spot: Option<bool>,
    on_demand_base: Option<u32>,
    max_size: Option<u32>,
    ready_timeout_secs: Option<u64>,
}

/// x86_64 with AVX-512 (Sapphire Rapids), where the classifier's fastest
/// kernels run; `scripts/build-worker` builds the binary for it.
pub const DEFAULT_INSTANCE_TYPE: &str = "c7i.large";

/// The tag that marks a resource (instance, queue, bucket, group) as a
/// member of a fleet; its value is the fleet's name. Teardown deletes only
/// what carries it, and the IAM policies in worker/ami/iam/ key on it.
pub const FLEET_TAG: &str = "imagefleet:fleet";

/// The tag a worker writes on its own instance: `idle` or `busy` on a raw
/// instance, `ready` in an Auto Scaling group (where scale-in protection
/// says busy). Present means the worker started.
pub const WORKER_STATE_TAG: &str = "imagefleet:worker";

impl AwsConfig {
    /// Every name derived from `fleet`; nothing else set.
    pub fn derived(fleet: &str, fifo: bool) -> AwsConfig {
        let suffix = if fifo { ".fifo" } else { "" };
        AwsConfig {
            fleet: fleet.to_owned(),
            region: None,
            requests_queue: format!("imagefleet-{fleet}-requests{suffix}"),
            results_queue: format!("imagefleet-{fleet}-results"),
            dead_letter_queue: format!("imagefleet-{fleet}-requests-dlq{suffix}"),
            fifo,
            max_receives: MAX_RECEIVES,
            input_bucket: format!("imagefleet-{fleet}-input"),
            output_bucket: format!("imagefleet-{fleet}-output"),
            retention_days: default_retention_days(),
            autoscaling_group: format!("imagefleet-{fleet}-workers"),
            workers: WorkerLaunch {
                instance_type: DEFAULT_INSTANCE_TYPE.to_owned(),
                max_size: default_group_max(),
                ready_timeout_secs: default_ready_timeout_secs(),
                ..WorkerLaunch::default()
            },
        }
    }

    /// Every web tier replica's reply queue is named this plus a replica
    /// id. The `_` cannot occur in a fleet name, so no other fleet's
    /// resource (nor an IAM pattern for one) starts with it.
    pub fn reply_queue_prefix(&self) -> String {
        format!("imagefleet-{}-reply_", self.fleet)
    }

    /// The reply queue of web tier replica `replica`.
    pub fn reply_queue(&self, replica: &str) -> String {
        format!("{}{replica}", self.reply_queue_prefix())
    }

    /// The group's instance types: the main one first, no repeats.
    pub fn group_instance_types(&self) -> Vec<String> {
        let mut types = vec![self.workers.instance_type.clone()];
        for t in &self.workers.instance_types {
            if !types.contains(t) {
                types.push(t.clone());
            }
        }
        types
    }

    /// Loads the configuration: `file` (if any), then the environment as
    /// seen through `env`, then `fleet_flag`. Validated.
    pub fn load(
        fleet_flag: Option<&str>,
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<AwsConfig, ConfigError> {
        let from_file = match file {
            None => FileConfig::default(),
            Some(path) => {
                let file_error = |message: String| ConfigError::File {
                    path: path.display().to_string(),
                    message,
                };
                let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
                toml::from_str(&text).map_err(|e| file_error(e.to_string()))?
            }
        };
        let fleet = fleet_flag
            .map(str::to_owned)
            .or_else(|| env("IMAGEFLEET_FLEET"))
            .or(from_file.fleet.clone())
            .ok_or_else(|| {
                ConfigError::Invalid(
                    "no fleet name: pass --fleet NAME or set IMAGEFLEET_FLEET".into(),
                )
            })?;
        let fifo = match env("IMAGEFLEET_QUEUE_FIFO") {
            Some(text) => parse_bool("IMAGEFLEET_QUEUE_FIFO", &text)?,
            None => from_file.fifo.unwrap_or(false),
        };
        let mut config = AwsConfig::derived(&fleet, fifo);
        config.apply_file(from_file);
        config.apply_env(&env)?;
        config.validate()?;
        Ok(config)
    }

    fn apply_file(&mut self, file: FileConfig) {
        set(&mut self.requests_queue, file.requests_queue);
        set(&mut self.results_queue, file.results_queue);
        set(&mut self.dead_letter_queue, file.dead_letter_queue);
        set(&mut self.input_bucket, file.input_bucket);
        set(&mut self.output_bucket, file.output_bucket);
        set(&mut self.max_receives, file.max_receives);
        set(&mut self.retention_days, file.retention_days);
        set(&mut self.autoscaling_group, file.autoscaling_group);
        if file.region.is_some() {
            self.region = file.region;
        }
        let w = &mut self.workers;
        set(&mut w.instance_type, file.workers.instance_type);
        set(&mut w.instance_types, file.workers.instance_types);
        set(
            &mut w.subnet_ids,
            file.workers.subnet_id.map(|one| vec![one]),
        );
        set(&mut w.subnet_ids, file.workers.subnet_ids);
        set(&mut w.security_group_ids, file.workers.security_group_ids);
        set(&mut w.spot, file.workers.spot);
        set(&mut w.on_demand_base, file.workers.on_demand_base);
        set(&mut w.max_size, file.workers.max_size);
        set(&mut w.ready_timeout_secs, file.workers.ready_timeout_secs);
        for (slot, value) in [
            (&mut w.image_id, file.workers.image_id),
            (&mut w.instance_profile, file.workers.instance_profile),
            (&mut w.key_name, file.workers.key_name),
            (&mut w.artifacts, file.workers.artifacts),
        ] {
            if value.is_some() {
                *slot = value;
            }
        }
    }

    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        set(&mut self.requests_queue, env("IMAGEFLEET_REQUESTS_QUEUE"));
        set(&mut self.results_queue, env("IMAGEFLEET_RESULTS_QUEUE"));
        set(
            &mut self.dead_letter_queue,
            env("IMAGEFLEET_DEAD_LETTER_QUEUE"),
        );
        set(&mut self.input_bucket, env("IMAGEFLEET_INPUT_BUCKET"));
        set(&mut self.output_bucket, env("IMAGEFLEET_OUTPUT_BUCKET"));
        if let Some(text) = env("IMAGEFLEET_MAX_RECEIVES") {
            self.max_receives = text.parse().map_err(|_| {
                ConfigError::Invalid(format!("IMAGEFLEET_MAX_RECEIVES={text:?} is not a number"))
            })?;
        }
        if let Some(region) = env("IMAGEFLEET_REGION") {
            self.region = Some(region);
        }
        set(
            &mut self.autoscaling_group,
            env("IMAGEFLEET_AUTOSCALING_GROUP"),
        );
        if let Some(text) = env("IMAGEFLEET_RETENTION_DAYS") {
            self.retention_days = parse_number("IMAGEFLEET_RETENTION_DAYS", &text)?;
        }
        let w = &mut self.workers;
        set(&mut w.instance_type, env("IMAGEFLEET_WORKER_INSTANCE_TYPE"));
        for (slot, name) in [
            (
                &mut w.security_group_ids,
                "IMAGEFLEET_WORKER_SECURITY_GROUPS",
            ),
            (&mut w.instance_types, "IMAGEFLEET_WORKER_INSTANCE_TYPES"),
        ] {
            if let Some(list) = env(name) {
                *slot = split_list(&list);
            }
        }
        // One subnet or several; either name works.
        if let Some(list) =
            env("IMAGEFLEET_WORKER_SUBNETS").or_else(|| env("IMAGEFLEET_WORKER_SUBNET"))
        {
            w.subnet_ids = split_list(&list);
        }
        if let Some(text) = env("IMAGEFLEET_WORKER_SPOT") {
            w.spot = parse_bool("IMAGEFLEET_WORKER_SPOT", &text)?;
        }
        if let Some(text) = env("IMAGEFLEET_WORKER_READY_TIMEOUT_SECS") {
            w.ready_timeout_secs = parse_number("IMAGEFLEET_WORKER_READY_TIMEOUT_SECS", &text)?;
        }
        for (slot, name) in [
            (&mut w.image_id, "IMAGEFLEET_WORKER_IMAGE_ID"),
            (
                &mut w.instance_profile,
                "IMAGEFLEET_WORKER_INSTANCE_PROFILE",
            ),
            (&mut w.key_name, "IMAGEFLEET_WORKER_KEY_NAME"),
            (&mut w.artifacts, "IMAGEFLEET_WORKER_ARTIFACTS"),
        ] {
            if let Some(value) = env(name) {
                *slot = Some(value);
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.fleet.is_empty()
            || self.fleet.len() > 32
            || !self
                .fleet
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            || self.fleet.starts_with('-')
            || self.fleet.ends_with('-')
        {
            return invalid(format!(
                "fleet name {:?}: 1 to 32 lowercase letters, digits and inner '-' (it becomes part of bucket names)",
                self.fleet
            ));
        }
        for bucket in [&self.input_bucket, &self.output_bucket] {
            validate_bucket(bucket)?;
        }
        if self.input_bucket == self.output_bucket {
            return invalid("input and output bucket must differ".into());
        }
        for queue in [&self.requests_queue, &self.dead_letter_queue] {
            validate_queue(queue, self.fifo)?;
        }
        validate_queue(&self.results_queue, self.results_queue.ends_with(".fifo"))?;
        let names = [
            &self.requests_queue,
            &self.results_queue,
            &self.dead_letter_queue,
        ];
        if names[0] == names[1] || names[0] == names[2] || names[1] == names[2] {
            return invalid("the three queues need three different names".into());
        }
        if !(1..=1000).contains(&self.max_receives) {
            return invalid(format!(
                "max_receives {} must be 1 to 1000 (SQS's range)",
                self.max_receives
            ));
        }
        if self.workers.instance_type.is_empty() {
            return invalid("workers.instance_type is empty".into());
        }
        if !(1..=3650).contains(&self.retention_days) {
            return invalid(format!(
                "retention_days {} must be 1 to 3650",
                self.retention_days
            ));
        }
        if self.autoscaling_group.is_empty() || self.autoscaling_group.len() > 128 {
            return invalid(format!(
                "autoscaling_group {:?} must be 1 to 128 characters (it also names the launch template)",
                self.autoscaling_group
            ));
        }
        if self.workers.max_size == 0 {
            return invalid("workers.max_size must be at least 1".into());
        }
        if let Some(artifacts) = &self.workers.artifacts {
            if !artifacts.starts_with("s3://") || artifacts.len() <= "s3://".len() {
                return invalid(format!(
                    "workers.artifacts {artifacts:?} must look like s3://bucket/prefix"
                ));
            }
        }
        Ok(())
    }

    /// The configuration as the TOML file `load` reads.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the config always serialises")
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_number<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, ConfigError> {
    text.trim()
        .parse()
        .map_err(|_| ConfigError::Invalid(format!("{name}={text:?} is not a number")))
}

fn parse_bool(name: &str, text: &str) -> Result<bool, ConfigError> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" | "" => Ok(false),
        _ => Err(ConfigError::Invalid(format!(
            "{name}={text:?} is not a boolean"
        ))),
    }
}

/// S3's naming rules, so setup fails before any API call.
fn validate_bucket(name: &str) -> Result<(), ConfigError> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "bucket name {name:?}: 3 to 63 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
        )))
    }
}

/// SQS's naming rules; FIFO queues must end in `.fifo`, others must not.
fn validate_queue(name: &str, fifo: bool) -> Result<(), ConfigError> {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    if fifo != name.ends_with(".fifo") {
        return Err(ConfigError::Invalid(format!(
            "queue name {name:?}: FIFO queues end in .fifo and standard ones do not (fifo = {fifo})"
        )));
    }
    if name.is_empty()
        || name.len() > 80
        || !base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ConfigError::Invalid(format!(
            "queue name {name:?}: 1 to 80 letters, digits, '-' and '_'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn names_derive_from_the_fleet() {
        let config = AwsConfig::load(Some("demo"), None, env_of(&[])).unwrap();
        assert_eq!(config.requests_queue, "imagefleet-demo-requests");
        assert_eq!(config.dead_letter_queue, "imagefleet-demo-requests-dlq");
        assert_eq!(config.input_bucket, "imagefleet-demo-input");
        assert_eq!(config.max_receives, MAX_RECEIVES);
        let fifo = AwsConfig::load(
            Some("demo"),
            None,
            env_of(&[("IMAGEFLEET_QUEUE_FIFO", "1")]),
        )
        .unwrap();
        assert_eq!(fifo.requests_queue, "imagefleet-demo-requests.fifo");
        assert_eq!(fifo.dead_letter_queue, "imagefleet-demo-requests-dlq.fifo");
    }

    #[test]
    fn file_then_env_then_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aws.toml");
        std::fs::write(
            &path,
            "fleet = \"fromfile\"\ninput_bucket = \"my-in\"\noutput_bucket = \"my-out\"\n\
             [workers]\nimage_id = \"ami-1\"\nsecurity_group_ids = [\"sg-1\"]\n",
        )
        .unwrap();
        let env = env_of(&[
            ("IMAGEFLEET_OUTPUT_BUCKET", "env-out"),
            ("IMAGEFLEET_WORKER_SECURITY_GROUPS", "sg-2, sg-3"),
        ]);
        let config = AwsConfig::load(None, Some(&path), &env).unwrap();
        assert_eq!(config.fleet, "fromfile");
        assert_eq!(config.input_bucket, "my-in");
        assert_eq!(config.output_bucket, "env-out");
        assert_eq!(config.workers.image_id.as_deref(), Some("ami-1"));
        assert_eq!(config.workers.security_group_ids, ["sg-2", "sg-3"]);
        assert_eq!(config.requests_queue, "imagefleet-fromfile-requests");
        let flagged = AwsConfig::load(Some("flag"), Some(&path), &env).unwrap();
        assert_eq!(flagged.requests_queue, "imagefleet-flag-requests");
        // What setup prints loads back to the same configuration.
        std::fs::write(&path, flagged.to_toml()).unwrap();
        assert_eq!(
            AwsConfig::load(None, Some(&path), env_of(&[])).unwrap(),
            flagged
        );
    }

    #[test]
    fn group_settings_from_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aws.toml");
        // A file written before subnets were a list still loads.
        std::fs::write(
            &path,
            "fleet = \"demo\"\n[workers]\nsubnet_id = \"subnet-1\"\n",
        )
        .unwrap();
        let config = AwsConfig::load(None, Some(&path), env_of(&[])).unwrap();
        assert_eq!(config.workers.subnet_ids, ["subnet-1"]);
        assert_eq!(config.autoscaling_group, "imagefleet-demo-workers");
        assert_eq!(config.workers.instance_type, "c7i.large");
        assert_eq!((config.workers.max_size, config.retention_days), (20, 1));
        assert!(!config.workers.spot);
        let env = env_of(&[
            ("IMAGEFLEET_WORKER_SUBNETS", "subnet-a, subnet-b"),
            ("IMAGEFLEET_WORKER_INSTANCE_TYPES", "c7i.large,c6i.large"),
            ("IMAGEFLEET_WORKER_SPOT", "true"),
            ("IMAGEFLEET_WORKER_READY_TIMEOUT_SECS", "30"),
            ("IMAGEFLEET_RETENTION_DAYS", "3"),
        ]);
        let config = AwsConfig::load(None, Some(&path), env).unwrap();
        assert_eq!(config.workers.subnet_ids, ["subnet-a", "subnet-b"]);
        assert_eq!(config.group_instance_types(), ["c7i.large", "c6i.large"]);
        assert!(config.workers.spot);
        assert_eq!(
            (config.workers.ready_timeout_secs, config.retention_days),
            (30, 3)
        );
        // What setup writes loads back the same.
        std::fs::write(&path, config.to_toml()).unwrap();
        assert_eq!(
            AwsConfig::load(None, Some(&path), env_of(&[])).unwrap(),
            config
        );
        assert_eq!(config.reply_queue("a1"), "imagefleet-demo-reply_a1");
    }

    #[test]
    fn rejects_bad_names() {
        assert!(AwsConfig::load(None, None, env_of(&[])).is_err());
        for fleet in ["", "Demo", "a_b", "-a", &"x".repeat(33)] {
            assert!(
                AwsConfig::load(Some(fleet), None, env_of(&[])).is_err(),
                "{fleet:?}"
            );
        }
        let bad = [
            ("IMAGEFLEET_INPUT_BUCKET", "Upper"),
            ("IMAGEFLEET_REQUESTS_QUEUE", "x.fifo"),
            ("IMAGEFLEET_RESULTS_QUEUE", "imagefleet-demo-requests"),
            ("IMAGEFLEET_MAX_RECEIVES", "0"),
            ("IMAGEFLEET_WORKER_ARTIFACTS", "https://x"),
            ("IMAGEFLEET_QUEUE_FIFO", "maybe"),
        ];
        for pair in bad {
            assert!(
                AwsConfig::load(Some("demo"), None, env_of(&[pair])).is_err(),
                "{pair:?}"
            );
        }
    }
}
