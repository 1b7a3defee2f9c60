//! The `ObjectStore` seam: one bucket of immutable-ish objects addressed by
//! keys the service generates (never a client's file name).

mod dir;
mod s3;
mod s3_writer;

use async_trait::async_trait;
use bytes::Bytes;

pub use dir::DirStore;
pub use s3::S3Store;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("bucket {bucket} is unavailable ({operation} {key}): {message}")]
    Unavailable {
        bucket: String,
        operation: &'static str,
        key: String,
        message: String,
    },
}

/// An object written piece by piece, so an upload streams to its bucket
/// instead of sitting whole in memory. Nothing is visible under its key
/// until `finish`; `abort` (or dropping it) leaves no object behind.
#[async_trait]
pub trait ObjectWriter: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError>;
    async fn finish(self: Box<Self>) -> Result<(), StoreError>;
    async fn abort(self: Box<Self>);
}

#[async_trait]
pub trait ObjectStore: Send + Sync {
    fn bucket(&self) -> &str;
    /// Stores `bytes` under `key` atomically: readers see the old object or
    /// the whole new one, never a part.
    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<(), StoreError>;
    /// Stores `bytes` under `key` only if no object is there yet, atomically
    /// (the first writer wins, whoever else tries at the same time). True
    /// when this call created the object.
    async fn put_if_absent(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
    ) -> Result<bool, StoreError>;
    /// Starts writing `key` piece by piece (see [`ObjectWriter`]); like
    /// `put`, it replaces an existing object when finished.
    async fn writer(
        &self,
        key: &str,
        content_type: &str,
    ) -> Result<Box<dyn ObjectWriter>, StoreError>;
    /// `None` when there is no such object.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError>;
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;
    /// All keys starting with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
}

/// Keys are ASCII letters, digits and `-_.`, with `/` between non-empty
/// segments; no segment starts with a dot. That keeps every key a safe,
/// portable relative path on disk and a plain S3 key.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let invalid = |reason| StoreError::InvalidKey {
        key: key.to_owned(),
        reason,
    };
    if key.is_empty() || key.len() > 512 {
        return Err(invalid("must be 1 to 512 characters"));
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return Err(invalid("has an empty path segment"));
        }
        if segment.starts_with('.') {
            return Err(invalid("has a segment starting with '.'"));
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(invalid(
                "may only hold letters, digits, '-', '_', '.' and '/'",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_key;

    #[test]
    fn keys_cannot_escape_the_bucket() {
        for bad in [
            "", "../x", "a/../b", "/abs", "a//b", ".hidden", "a b", "a\\b", "é",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["0f3c.json", "inputs/2026/abc-def_1.jpg"] {
            validate_key(good).unwrap();
        }
    }
}
