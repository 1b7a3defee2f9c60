//! `--backend local|aws`: which services a command talks to.

use std::ffi::OsString;
use std::path::Path;

use anyhow::Context;

use crate::aws::{AwsClients, AwsConfig};
use crate::cli::{AwsTarget, Backend, BackendArgs};
use crate::services::Services;

impl AwsTarget {
    /// The validated configuration: file, then `IMAGEFLEET_*` env, then flags.
    pub fn load(&self) -> anyhow::Result<AwsConfig> {
        AwsConfig::load(self.fleet.as_deref(), self.aws_config.as_deref(), |name| {
            std::env::var(name).ok()
        })
        .context("loading the AWS configuration")
    }
}

impl BackendArgs {
    pub async fn services(&self, data_dir: &Path) -> anyhow::Result<Services> {
        match self.backend {
            Backend::Local => Services::local(data_dir),
            Backend::Aws => {
                let config = self.aws.load()?;
                let clients = AwsClients::new(&config).await;
                tracing::info!(fleet = %config.fleet, region = ?clients.region, "using AWS");
                Services::aws(&clients, &config)
                    .await
                    .with_context(|| format!("opening the AWS resources of fleet {}", config.fleet))
            }
        }
    }

    /// The same choice as flags, for child processes (local workers).
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args = Vec::new();
        if self.backend == Backend::Aws {
            args.push("--backend".into());
            args.push("aws".into());
            if let Some(fleet) = &self.aws.fleet {
                args.push("--fleet".into());
                args.push(fleet.into());
            }
            if let Some(file) = &self.aws.aws_config {
                args.push("--aws-config".into());
                args.push(crate::paths::absolute(file).into());
            }
        }
        args
    }
}
