//! Default locations, so the binary works from a fresh clone, from
//! `target/*/imagefleet`, and from an installed tree (bin/ next to models/).

use std::path::{Path, PathBuf};

pub const DEFAULT_DATA_DIR: &str = "imagefleet-data";
pub const DEFAULT_POLICY: &str = "policies/scale.rhai";

/// The model manifest: `./models/model.toml` if present, else the one next
/// to the executable's tree.
pub fn default_model_manifest() -> PathBuf {
    find_shipped_file(Path::new("models/model.toml"))
}

/// The default policy file, found the same way as the model.
pub fn default_policy() -> PathBuf {
    find_shipped_file(Path::new(DEFAULT_POLICY))
}

fn find_shipped_file(relative: &Path) -> PathBuf {
    if relative.exists() {
        return relative.to_owned();
    }
    if let Ok(exe) = std::env::current_exe() {
        // <root>/target/<profile>/imagefleet, <root>/bin/imagefleet, <root>/imagefleet
        for root in exe.ancestors().skip(1).take(3) {
            let candidate = root.join(relative);
            if candidate.exists() {
                return candidate;
            }
        }
    }
    relative.to_owned()
}

/// Makes `path` absolute without requiring it to exist, so child processes
/// started elsewhere see the same files.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}
