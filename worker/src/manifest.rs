//! The model manifest (`models/model.toml`): which ONNX file, which labels,
//! and the preprocessing the model was trained with.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::ModelError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    pub name: String,
    /// ONNX file, relative to the manifest.
    pub file: PathBuf,
    /// Labels file (one class name per line), relative to the manifest.
    pub labels: PathBuf,
    pub input_name: String,
    /// Side of the square model input, e.g. 224.
    pub input_size: u32,
    /// The shorter side is resized to this before the center crop, e.g. 256.
    pub resize_shorter: u32,
    /// Per-channel mean and standard deviation in 0..255 pixel units.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// True when the graph outputs logits (softmax is applied by the worker);
    /// false when it already outputs probabilities.
    #[serde(default = "default_true")]
    pub output_is_logits: bool,
}

fn default_true() -> bool {
    true
}

impl ModelManifest {
    /// Reads and validates a manifest; relative paths in it are resolved
    /// against the manifest's folder.
    pub fn load(path: &Path) -> Result<ModelManifest, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|reason| ModelError::Read {
            path: path.to_owned(),
            reason,
        })?;
        let invalid = |message: String| ModelError::Manifest {
            path: path.to_owned(),
            message,
        };
        let mut manifest: ModelManifest =
            toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        manifest.validate().map_err(invalid)?;
        let base = path.parent().unwrap_or(Path::new("."));
        manifest.file = base.join(&manifest.file);
        manifest.labels = base.join(&manifest.labels);
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), String> {
        if self.input_size == 0 || self.input_size > 4096 {
            return Err(format!("input_size {} is not in 1..=4096", self.input_size));
        }
        if self.resize_shorter < self.input_size {
            return Err(format!(
                "resize_shorter {} is smaller than input_size {}: the center crop would not fit",
                self.resize_shorter, self.input_size
            ));
        }
        if let Some(s) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(format!("std values must be positive, got {s}"));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return Err("mean values must be finite".into());
        }
        Ok(())
    }
}
