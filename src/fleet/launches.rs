//! Instances launched but not listed yet. EC2's DescribeInstances is
//! eventually consistent: an instance RunInstances just returned may be
//! missing from listings for a while, and a controller that believed the
//! listing would launch again on its next tick, past the cap. So launched
//! ids are remembered, and counted as pending, until a listing shows them.
//! The record is kept in a file beside the controller's other state, so a
//! controller restarted within that window remembers them too.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Longer than EC2 ever takes to list a new instance: an id not seen by
/// then was never going to be (a launch that failed after the call).
const REMEMBER_MS: u64 = 10 * 60 * 1000;

#[derive(Debug)]
pub(super) struct LaunchMemory {
    path: Option<PathBuf>,
    /// Instance id -> launched at (Unix ms).
    launched: Mutex<BTreeMap<String, u64>>,
}

impl LaunchMemory {
    pub(super) fn in_memory() -> LaunchMemory {
        LaunchMemory {
            path: None,
            launched: Mutex::new(BTreeMap::new()),
        }
    }

    /// Backed by `path` (read now if it exists, rewritten on each change).
    pub(super) fn persistent(path: &Path) -> LaunchMemory {
        let launched = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable launch record");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        };
        if !launched.is_empty() {
            tracing::info!(
                count = launched.len(),
                "remembering instances an earlier controller launched"
            );
        }
        LaunchMemory {
            path: Some(path.to_owned()),
            launched: Mutex::new(launched),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.launched.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn remember(&self, ids: &[String], at_ms: u64) {
        let mut launched = self.lock();
        for id in ids {
            launched.insert(id.clone(), at_ms);
        }
        self.save(&launched);
    }

    /// After a listing that showed `seen`: forgets those (the listing has
    /// them now) and any too old to still appear; returns the rest, with
    /// their launch times.
    pub(super) fn unseen(&self, seen: &HashSet<String>, now_ms: u64) -> Vec<(String, u64)> {
        let mut launched = self.lock();
        let before = launched.len();
        launched.retain(|id, at| !seen.contains(id) && now_ms.saturating_sub(*at) < REMEMBER_MS);
        if launched.len() != before {
            self.save(&launched);
        }
        launched.iter().map(|(id, at)| (id.clone(), *at)).collect()
    }

    /// Write a temporary file, then rename it over the record: a crash
    /// leaves the old record or the new one.
    fn save(&self, launched: &BTreeMap<String, u64>) {
        let Some(path) = &self.path else { return };
        let write = || -> std::io::Result<()> {
            let dir = path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            let mut file = tempfile::NamedTempFile::new_in(dir)?;
            std::io::Write::write_all(&mut file, &serde_json::to_vec(launched)?)?;
            file.as_file().sync_all()?;
            file.persist(path).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::warn!(path = %path.display(), error = %e, "cannot record launched instances");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_until_seen_or_old_and_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("launches.json");
        let memory = LaunchMemory::persistent(&path);
        memory.remember(&["i-1".into(), "i-2".into()], 1_000);
        memory.remember(&["i-3".into()], 2_000);
        let seen: HashSet<String> = ["i-1".to_owned()].into();
        assert_eq!(
            memory.unseen(&seen, 3_000),
            [("i-2".to_owned(), 1_000), ("i-3".to_owned(), 2_000)]
        );
        // A new controller reads the record.
        let again = LaunchMemory::persistent(&path);
        assert_eq!(again.lock().keys().collect::<Vec<_>>(), ["i-2", "i-3"]);
        assert_eq!(
            again.unseen(&HashSet::new(), 1_000 + REMEMBER_MS),
            [("i-3".to_owned(), 2_000)]
        );
    }
}
