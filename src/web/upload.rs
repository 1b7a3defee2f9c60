//! Reading the image out of a multipart upload.

use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::http::StatusCode;
use bytes::Bytes;

use super::error::ApiError;

/// The classic workload generator sends `myfile`; `file` and `image` are what
/// other clients tend to use.
pub const FILE_FIELDS: [&str; 3] = ["myfile", "file", "image"];

pub struct Upload {
    pub file_name: String,
    pub bytes: Bytes,
}

pub async fn read_upload(
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Upload, ApiError> {
    let mut multipart = multipart.map_err(|rejection| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not_multipart",
            format!("send the image as multipart/form-data in field `myfile` ({rejection})"),
        )
    })?;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        if !field.name().is_some_and(|name| FILE_FIELDS.contains(&name)) {
            continue;
        }
        let file_name = display_name(field.file_name().unwrap_or("upload"));
        let bytes = field.bytes().await.map_err(multipart_error)?;
        return Ok(Upload { file_name, bytes });
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "no_file",
        "no file in the upload: send it as multipart field `myfile` (or `file`, `image`)",
    ))
}

fn multipart_error(e: MultipartError) -> ApiError {
    let status = e.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "too_large"
    } else {
        "bad_multipart"
    };
    ApiError::new(status, code, e.body_text())
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
