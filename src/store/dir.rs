//! A bucket as a directory. Writes go to a temporary file in the same
//! directory tree, are flushed to disk, then renamed into place.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::{validate_key, ObjectStore, ObjectWriter, StoreError};

/// Temporary files live here, inside the bucket so the rename stays on one
/// file system; the leading dot keeps it out of the key space.
const TMP_DIR: &str = ".tmp";

#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
    bucket: String,
}

impl DirStore {
    pub fn open(root: impl Into<PathBuf>) -> std::io::Result<DirStore> {
        let root = root.into();
        std::fs::create_dir_all(root.join(TMP_DIR))?;
        let bucket = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| root.display().to_string());
        Ok(DirStore { root, bucket })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Deletes the objects last written before `cutoff`, and temporary
    /// files a crashed writer left behind; returns how many objects went.
    /// Blocking: for the embedded backend's janitor.
    pub fn expire(&self, cutoff: std::time::SystemTime) -> std::io::Result<usize> {
        let mut removed = 0;
        for key in list_keys(&self.root, "")? {
            let path = self.root.join(&key);
            let modified = match std::fs::metadata(&path).and_then(|m| m.modified()) {
                Ok(modified) => modified,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if modified < cutoff {
                match std::fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        for entry in std::fs::read_dir(self.root.join(TMP_DIR))? {
            let entry = entry?;
            if entry.metadata()?.modified()? < cutoff {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(removed)
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    fn unavailable(&self, operation: &'static str, key: &str, e: impl ToString) -> StoreError {
        StoreError::Unavailable {
            bucket: self.bucket.clone(),
            operation,
            key: key.to_owned(),
            message: e.to_string(),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        operation: &'static str,
        key: &str,
        op: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        match tokio::task::spawn_blocking(op).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.unavailable(operation, key, e)),
            Err(e) => Err(self.unavailable(operation, key, e)),
        }
    }
}

fn write_atomically(root: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // Removed automatically if anything below fails.
    let mut file = tempfile::NamedTempFile::new_in(root.join(TMP_DIR))?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Like [`write_atomically`], but never replaces an existing file: the
/// final step is link(2), which fails if the name exists. False when it did.
fn create_atomically(root: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = tempfile::NamedTempFile::new_in(root.join(TMP_DIR))?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    match file.persist_noclobber(path) {
        Ok(_) => Ok(true),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e.error),
    }
}

/// A temporary file in the bucket's `.tmp`, renamed into place when done.
struct DirWriter {
    store: DirStore,
    key: String,
    path: PathBuf,
    /// Deleted with this value unless persisted.
    temp: Option<tempfile::TempPath>,
    file: tokio::fs::File,
}

#[async_trait]
impl ObjectWriter for DirWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        use tokio::io::AsyncWriteExt;
        self.file
            .write_all(&chunk)
            .await
            .map_err(|e| self.store.unavailable("put", &self.key, e))
    }

    async fn finish(mut self: Box<Self>) -> Result<(), StoreError> {
        use tokio::io::AsyncWriteExt;
        let key = self.key.clone();
        self.file
            .flush()
            .await
            .map_err(|e| self.store.unavailable("put", &key, e))?;
        self.file
            .sync_all()
            .await
            .map_err(|e| self.store.unavailable("put", &key, e))?;
        let temp = self.temp.take().expect("finished once");
        let path = self.path.clone();
        self.store
            .blocking("put", &key, move || {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                temp.persist(&path).map_err(|e| e.error)
            })
            .await
    }

    async fn abort(self: Box<Self>) {
        // Dropping the TempPath removes the file.
    }
}

fn list_keys(root: &Path, prefix: &str) -> std::io::Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut pending = vec![(root.to_owned(), String::new())];
    while let Some((dir, key_prefix)) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let key = format!("{key_prefix}{name}");
            if entry.file_type()?.is_dir() {
                pending.push((entry.path(), format!("{key}/")));
            } else if key.starts_with(prefix) {
                keys.push(key);
            }
        }
    }
    keys.sort();
    Ok(keys)
}

#[async_trait]
impl ObjectStore for DirStore {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn put(&self, key: &str, bytes: Bytes, _content_type: &str) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        let root = self.root.clone();
        self.blocking("put", key, move || write_atomically(&root, &path, &bytes))
            .await
    }

    async fn put_if_absent(
        &self,
        key: &str,
        bytes: Bytes,
        _content_type: &str,
    ) -> Result<bool, StoreError> {
        let path = self.path_of(key)?;
        let root = self.root.clone();
        self.blocking("put", key, move || create_atomically(&root, &path, &bytes))
            .await
    }

    async fn writer(
        &self,
        key: &str,
        _content_type: &str,
    ) -> Result<Box<dyn ObjectWriter>, StoreError> {
        let path = self.path_of(key)?;
        let tmp_dir = self.root.join(TMP_DIR);
        let (file, temp) = self
            .blocking("put", key, move || {
                tempfile::NamedTempFile::new_in(tmp_dir).map(|f| f.into_parts())
            })
            .await?;
        Ok(Box::new(DirWriter {
            store: self.clone(),
            key: key.to_owned(),
            path,
            temp: Some(temp),
            file: tokio::fs::File::from_std(file),
        }))
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let path = self.path_of(key)?;
        self.blocking("get", key, move || match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let path = self.path_of(key)?;
        self.blocking("exists", key, move || path.try_exists())
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let root = self.root.clone();
        let prefix_owned = prefix.to_owned();
        self.blocking("list", prefix, move || list_keys(&root, &prefix_owned))
            .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        self.blocking("delete", key, move || match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path().join("input")).unwrap();
        assert_eq!(store.bucket(), "input");
        store
            .put("b.jpg", Bytes::from_static(b"bee"), "image/jpeg")
            .await
            .unwrap();
        store
            .put("a/c.json", Bytes::from_static(b"{}"), "application/json")
            .await
            .unwrap();
        store
            .put("b.jpg", Bytes::from_static(b"bee2"), "image/jpeg")
            .await
            .unwrap();
        assert_eq!(store.get("b.jpg").await.unwrap().unwrap(), "bee2");
        assert_eq!(store.list("").await.unwrap(), ["a/c.json", "b.jpg"]);
        assert_eq!(store.list("a/").await.unwrap(), ["a/c.json"]);
        assert!(store.exists("a/c.json").await.unwrap());
        store.delete("a/c.json").await.unwrap();
        store.delete("a/c.json").await.unwrap();
        assert_eq!(store.get("a/c.json").await.unwrap(), None);
        // No temporary files are left behind or listed.
        assert_eq!(
            std::fs::read_dir(store.root().join(TMP_DIR))
                .unwrap()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn the_first_writer_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path().join("output")).unwrap();
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let body = Bytes::from(format!("writer {i}"));
                    (i, store.put_if_absent("r.json", body, "x").await.unwrap())
                })
            })
            .collect();
        let mut winners = Vec::new();
        for writer in writers {
            let (i, created) = writer.await.unwrap();
            if created {
                winners.push(i);
            }
        }
        assert_eq!(winners.len(), 1, "exactly one writer creates the object");
        let stored = store.get("r.json").await.unwrap().unwrap();
        assert_eq!(stored, format!("writer {}", winners[0]));
        assert_eq!(
            std::fs::read_dir(store.root().join(TMP_DIR))
                .unwrap()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn written_objects_appear_whole_at_finish_and_aborted_ones_never() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path().join("input")).unwrap();
        let mut writer = store.writer("big", "image/png").await.unwrap();
        for _ in 0..3 {
            writer.write(Bytes::from(vec![7u8; 1000])).await.unwrap();
            assert!(
                !store.exists("big").await.unwrap(),
                "not visible before finish"
            );
        }
        writer.finish().await.unwrap();
        assert_eq!(store.get("big").await.unwrap().unwrap().len(), 3000);

        let mut writer = store.writer("gone", "image/png").await.unwrap();
        writer.write(Bytes::from_static(b"part")).await.unwrap();
        writer.abort().await;
        assert!(!store.exists("gone").await.unwrap());
        let mut dropped = store.writer("dropped", "image/png").await.unwrap();
        dropped.write(Bytes::from_static(b"part")).await.unwrap();
        drop(dropped);
        assert_eq!(
            std::fs::read_dir(store.root().join(TMP_DIR))
                .unwrap()
                .count(),
            0,
            "no temporary file left"
        );
    }

    #[tokio::test]
    async fn hostile_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path().join("input")).unwrap();
        let err = store.put("../escape", Bytes::new(), "x").await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidKey { .. }));
        assert!(!dir.path().join("escape").exists());
    }
}
