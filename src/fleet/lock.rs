//! One manager per local fleet: an exclusive lock on a file beside the
//! fleet's registry, held for the life of the process. Two controllers on
//! one data dir would each count only what they see and together pass the
//! cap; the second one now refuses to start instead. The kernel drops the
//! lock when the holder exits, however it exits, so a crash leaves no stale
//! lock behind.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another controller (pid {holder}) manages the workers of {}; stop it first, or use another --data-dir", .dir.display())]
    Held { dir: PathBuf, holder: String },
    #[error("cannot lock {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held while alive; released when dropped or when the process exits.
#[derive(Debug)]
pub struct FleetLock {
    _file: File,
}

impl FleetLock {
    pub fn acquire(path: &Path) -> Result<FleetLock, LockError> {
        let io = |source| LockError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        // SAFETY: flock(2) on a descriptor we own; no memory is shared.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(LockError::Held {
                    dir: path.parent().unwrap_or(path).to_owned(),
                    holder: holder.trim().to_owned(),
                });
            }
            return Err(io(error));
        }
        // Who holds it, for the next one's error message.
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(FleetLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.lock");
        let first = FleetLock::acquire(&path).unwrap();
        let err = FleetLock::acquire(&path).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        FleetLock::acquire(&path).unwrap();
    }
}
