//! One module per subcommand: each wires the pieces together at the edge.

pub mod aws;
mod backend;
pub mod bench;
pub mod classify;
pub mod controller;
pub mod load;
pub mod plan;
pub mod policy;
pub mod serve;
pub mod simulate;
pub mod web;
pub mod worker;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use imagefleet_worker::Classifier;

use crate::cli::ModelArgs;
use crate::paths::default_model_manifest;

impl ModelArgs {
    pub fn manifest_path(&self) -> PathBuf {
        self.model.clone().unwrap_or_else(default_model_manifest)
    }

    pub fn load(&self) -> anyhow::Result<Arc<Classifier>> {
        let path = self.manifest_path();
        let classifier = Classifier::load(&path)
            .with_context(|| format!("loading the model (manifest {})", path.display()))?;
        Ok(Arc::new(classifier))
    }
}
