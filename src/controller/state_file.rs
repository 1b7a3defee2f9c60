//! The policies' `state` across restarts: `DATA/policy-state.json`, written
//! whole to a temporary file, fsynced and renamed over the old one after a
//! tick that changed it, so a crash leaves the old state or the new one,
//! never half of either.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::policy::empty_state;

/// The live policy's state, and each shadow policy's by its path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedStates {
    pub live: Value,
    #[serde(default)]
    pub shadows: BTreeMap<String, Value>,
}

impl Default for SavedStates {
    fn default() -> Self {
        SavedStates {
            live: empty_state(),
            shadows: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(path: impl Into<PathBuf>) -> StateFile {
        StateFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved states; none saved yet is empty states. A file that cannot
    /// be read is an error: the caller decides whether to start afresh.
    pub fn load(&self) -> anyhow::Result<SavedStates> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SavedStates::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.path.display())),
        }
    }

    /// Replaces the file atomically. Blocking: call it off the runtime.
    pub fn save(&self, states: &SavedStates) -> anyhow::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut temp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        serde_json::to_writer_pretty(&mut temp, states)?;
        temp.write_all(b"\n")?;
        temp.as_file().sync_all()?;
        temp.persist(&self.path)
            .with_context(|| format!("replacing {}", self.path.display()))?;
        // The rename itself survives power loss once the directory is synced.
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_survive_a_round_trip_and_start_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("policy-state.json"));
        assert_eq!(file.load().unwrap(), SavedStates::default());
        let mut states = SavedStates {
            live: serde_json::json!({ "n": 3, "peak": [1, 2] }),
            ..SavedStates::default()
        };
        states
            .shadows
            .insert("policies/x.rhai".into(), serde_json::json!({ "m": 1 }));
        file.save(&states).unwrap();
        assert_eq!(file.load().unwrap(), states);
        // No temporary files left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        std::fs::write(file.path(), "{ torn").unwrap();
        assert!(file.load().is_err());
    }
}
