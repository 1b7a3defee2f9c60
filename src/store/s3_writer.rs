//! Streaming writes to S3. Small objects (an upload of a few MB) are one
//! PutObject from memory; past [`PART_SIZE`] the writer switches to a
//! multipart upload and sends each part as it fills, so one upload never
//! holds more than a part in memory.

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};

use super::{ObjectWriter, StoreError};
use crate::aws::clients::describe;

/// S3's smallest part but the last.
pub const PART_SIZE: usize = 5 * 1024 * 1024;

pub struct S3Writer {
    client: Client,
    bucket: String,
    key: String,
    content_type: String,
    buffer: BytesMut,
    /// Set once the object outgrew one part.
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
}

impl S3Writer {
    pub fn new(client: Client, bucket: &str, key: &str, content_type: &str) -> S3Writer {
        S3Writer {
            client,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            content_type: content_type.to_owned(),
            buffer: BytesMut::new(),
            upload_id: None,
            parts: Vec::new(),
        }
    }

    fn unavailable(&self, operation: &'static str, message: String) -> StoreError {
        StoreError::Unavailable {
            bucket: self.bucket.clone(),
            operation,
            key: self.key.clone(),
            message,
        }
    }

    async fn upload_id(&mut self) -> Result<String, StoreError> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type(&self.content_type)
            .send()
            .await
            .map_err(|e| self.unavailable("CreateMultipartUpload", describe(&e)))?;
        let id = created
            .upload_id
            .ok_or_else(|| self.unavailable("CreateMultipartUpload", "no upload id".into()))?;
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    async fn send_part(&mut self, body: Bytes) -> Result<(), StoreError> {
        let upload_id = self.upload_id().await?;
        let number = self.parts.len() as i32 + 1;
        let sent = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.unavailable("UploadPart", describe(&e)))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(sent.e_tag)
                .build(),
        );
        Ok(())
    }
}

#[async_trait]
impl ObjectWriter for S3Writer {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        self.buffer.extend_from_slice(&chunk);
        while self.buffer.len() >= PART_SIZE {
            let part = self.buffer.split_to(PART_SIZE).freeze();
            if let Err(e) = self.send_part(part).await {
                self.abort_upload().await;
                return Err(e);
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<(), StoreError> {
        let rest = self.buffer.split().freeze();
        let Some(upload_id) = self.upload_id.clone() else {
            // One request; a PUT replaces atomically.
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .content_type(&self.content_type)
                .body(ByteStream::from(rest))
                .send()
                .await
                .map_err(|e| self.unavailable("PutObject", describe(&e)))?;
            return Ok(());
        };
        if !rest.is_empty() {
            if let Err(e) = self.send_part(rest).await {
                self.abort_upload().await;
                return Err(e);
            }
        }
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(std::mem::take(&mut self.parts)))
            .build();
        let done = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&upload_id)
            .multipart_upload(completed)
            .send()
            .await;
        if let Err(e) = done {
            self.abort_upload().await;
            return Err(self.unavailable("CompleteMultipartUpload", describe(&e)));
        }
        Ok(())
    }

    async fn abort(mut self: Box<Self>) {
        self.abort_upload().await;
    }
}

impl S3Writer {
    /// Frees the parts stored so far (S3 keeps and bills them otherwise).
    async fn abort_upload(&mut self) {
        if let Some(upload_id) = self.upload_id.take() {
            if let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(&upload_id)
                .send()
                .await
            {
                tracing::warn!(key = %self.key, error = %describe(&e),
                    "could not abort a multipart upload; a bucket lifecycle rule should clear it");
            }
        }
    }
}
