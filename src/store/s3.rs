//! The `ObjectStore` seam on Amazon S3 (or any S3-compatible server).

use async_trait::async_trait;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use bytes::Bytes;

use super::s3_writer::S3Writer;
use super::{validate_key, ObjectStore, ObjectWriter, StoreError};
use crate::aws::clients::describe;

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
}

impl S3Store {
    /// A bucket that exists (`imagefleet aws setup` creates them); checked
    /// here so a misconfiguration shows at start, not on the first upload.
    pub async fn open(client: Client, bucket: &str) -> Result<S3Store, StoreError> {
        let store = S3Store {
            client,
            bucket: bucket.to_owned(),
        };
        store
            .client
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| {
                store.unavailable(
                    "HeadBucket",
                    "",
                    format!(
                        "the bucket is missing or not ours (did `imagefleet aws setup` run?): {}",
                        describe(&e)
                    ),
                )
            })?;
        Ok(store)
    }

    fn unavailable(&self, operation: &'static str, key: &str, message: String) -> StoreError {
        StoreError::Unavailable {
            bucket: self.bucket.clone(),
            operation,
            key: key.to_owned(),
            message,
        }
    }
}

/// HeadObject has no body, so a missing key shows only as a 404 code.
fn is_not_found<E: ProvideErrorMetadata>(error: &aws_sdk_s3::error::SdkError<E>) -> bool {
    if let Some(service) = error.as_service_error() {
        if matches!(service.code(), Some("NoSuchKey" | "NotFound")) {
            return true;
        }
    }
    error
        .raw_response()
        .is_some_and(|r| r.status().as_u16() == 404)
}

#[async_trait]
impl ObjectStore for S3Store {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        // A PUT replaces the object atomically: readers never see a part.
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| self.unavailable("PutObject", key, describe(&e)))?;
        Ok(())
    }

    /// S3 conditional writes: `If-None-Match: *` makes the PUT fail with 412
    /// when the key exists, atomically on S3's side.
    async fn put_if_absent(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
    ) -> Result<bool, StoreError> {
        validate_key(key)?;
        let sent = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .if_none_match("*")
            .body(ByteStream::from(bytes))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => Ok(false),
            Err(e) => Err(self.unavailable("PutObject", key, describe(&e))),
        }
    }

    async fn writer(
        &self,
        key: &str,
        content_type: &str,
    ) -> Result<Box<dyn ObjectWriter>, StoreError> {
        validate_key(key)?;
        Ok(Box::new(S3Writer::new(
            self.client.clone(),
            &self.bucket,
            key,
            content_type,
        )))
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        validate_key(key)?;
        let output = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.unavailable("GetObject", key, describe(&e))),
        };
        let body =
            output.body.collect().await.map_err(|e| {
                self.unavailable("GetObject", key, format!("reading the body: {e}"))
            })?;
        Ok(Some(body.into_bytes()))
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        validate_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(self.unavailable("HeadObject", key, describe(&e))),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.unavailable("ListObjectsV2", prefix, describe(&e)))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key.clone()));
        }
        keys.sort();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        // S3 answers 204 for a missing key too, which is what the trait wants.
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.unavailable("DeleteObject", key, describe(&e)))?;
        Ok(())
    }
}
