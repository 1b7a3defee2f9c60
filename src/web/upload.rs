//! Reading the image out of a multipart upload, straight into the input
//! bucket: the bytes stream through in the chunks the connection delivers,
//! the size limit is enforced as they arrive, and the format is sniffed
//! from the first bytes. An upload never sits whole in memory.

use std::time::Duration;

use axum::extract::multipart::{Field, Multipart, MultipartError, MultipartRejection};
use axum::http::StatusCode;
use bytes::{Bytes, BytesMut};
use imagefleet_worker::decode::{mime_type, sniff_format};
use imagefleet_worker::ClassifyError;

use super::error::ApiError;
use crate::store::ObjectStore;

/// The classic workload generator sends `myfile`; `file` and `image` are what
/// other clients tend to use.
pub const FILE_FIELDS: [&str; 3] = ["myfile", "file", "image"];

/// Enough leading bytes to tell every accepted format apart.
const SNIFF_BYTES: usize = 16;

pub struct Upload {
    pub file_name: String,
    /// The sniffed format's MIME type.
    pub content_type: String,
    pub size: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    pub max_bytes: u64,
    /// Longest wait for the next piece of the body before giving up.
    pub stall: Duration,
}

/// Streams the upload's image into `store` under `key`. On any error
/// nothing is left under `key`.
pub async fn store_upload(
    multipart: Result<Multipart, MultipartRejection>,
    store: &dyn ObjectStore,
    key: &str,
    limits: UploadLimits,
) -> Result<Upload, ApiError> {
    let mut multipart = multipart.map_err(|rejection| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not_multipart",
            format!("send the image as multipart/form-data in field `myfile` ({rejection})"),
        )
    })?;
    while let Some(field) = stalled(limits.stall, multipart.next_field())
        .await?
        .map_err(multipart_error)?
    {
        if !field.name().is_some_and(|name| FILE_FIELDS.contains(&name)) {
            continue;
        }
        let file_name = display_name(field.file_name().unwrap_or("upload"));
        return stream_field(field, file_name, store, key, limits).await;
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "no_file",
        "no file in the upload: send it as multipart field `myfile` (or `file`, `image`)",
    ))
}

async fn stream_field(
    mut field: Field<'_>,
    file_name: String,
    store: &dyn ObjectStore,
    key: &str,
    limits: UploadLimits,
) -> Result<Upload, ApiError> {
    // The first bytes decide the format before anything is stored.
    let mut head = BytesMut::new();
    while head.len() < SNIFF_BYTES {
        match next_chunk(&mut field, limits).await? {
            Some(chunk) => head.extend_from_slice(&chunk),
            None => break,
        }
    }
    let format = sniff_format(&head).map_err(|e| match e {
        ClassifyError::Empty => ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty",
            "the uploaded file is empty",
        ),
        other => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_format",
            other.to_string(),
        ),
    })?;
    let content_type = mime_type(format).to_owned();
    let mut writer = store
        .writer(key, &content_type)
        .await
        .map_err(|e| unavailable(&e))?;
    let mut size = 0u64;
    let mut chunk = Some(head.freeze());
    let streamed = async {
        while let Some(bytes) = chunk.take() {
            size += bytes.len() as u64;
            if size > limits.max_bytes {
                return Err(too_large(limits.max_bytes));
            }
            writer.write(bytes).await.map_err(|e| unavailable(&e))?;
            chunk = next_chunk(&mut field, limits).await?;
        }
        Ok(())
    }
    .await;
    match streamed {
        Ok(()) => {
            writer.finish().await.map_err(|e| unavailable(&e))?;
            Ok(Upload {
                file_name,
                content_type,
                size,
            })
        }
        Err(e) => {
            writer.abort().await;
            Err(e)
        }
    }
}

async fn next_chunk(
    field: &mut Field<'_>,
    limits: UploadLimits,
) -> Result<Option<Bytes>, ApiError> {
    stalled(limits.stall, field.chunk())
        .await?
        .map_err(multipart_error)
}

/// `future`, or 408 when the client sends nothing for `stall`.
async fn stalled<T>(
    stall: Duration,
    future: impl std::future::Future<Output = T>,
) -> Result<T, ApiError> {
    tokio::time::timeout(stall, future).await.map_err(|_| {
        tracing::info!(
            stall_s = stall.as_secs(),
            "client stalled mid-upload; dropped"
        );
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "stalled",
            format!(
                "the upload stalled: nothing arrived for {} s",
                stall.as_secs()
            ),
        )
    })
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!(
            "the upload is larger than the limit of {} MiB",
            max / (1024 * 1024)
        ),
    )
}

fn unavailable(e: &dyn std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("cannot store the image: {e}"),
    )
}

fn multipart_error(e: MultipartError) -> ApiError {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(status, "too_large", e.body_text());
    }
    // A body that ends early or breaks off is the client going away (or
    // sending garbage): its business, not a server error (multer calls a
    // body that stopped arriving a 500).
    tracing::info!(error = %e.body_text(), "upload ended early (client disconnected or sent a broken body)");
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_multipart",
        format!("the upload could not be read: {}", e.body_text()),
    )
}

/// The client's file name, kept for display only: no directories, no
/// control characters, bounded length.
pub fn display_name(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = base.chars().filter(|c| !c.is_control()).take(200).collect();
    if clean.trim().is_empty() {
        "upload".to_owned()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::display_name;

    #[test]
    fn file_names_lose_paths_and_control_characters() {
        assert_eq!(display_name("../../etc/passwd"), "passwd");
        assert_eq!(display_name("C:\\photos\\cat.jpg"), "cat.jpg");
        assert_eq!(display_name("a\u{0}b\nc.png"), "abc.png");
        assert_eq!(display_name(""), "upload");
        assert_eq!(display_name(&"x".repeat(1000)).len(), 200);
    }
}
