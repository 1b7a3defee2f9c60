//! HTTP errors: a status, a stable code and a sentence, as JSON for JSON
//! clients and as plain text otherwise.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::job::{FailureKind, JobId};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub job_id: Option<JobId>,
    /// For a failed job: why, in the job contract's words.
    pub kind: Option<FailureKind>,
    /// Seconds after which the client may try again (a `Retry-After`).
    pub retry_after: Option<u32>,
    pub json: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            job_id: None,
            kind: None,
            retry_after: None,
            json: false,
        }
    }

    pub fn for_job(mut self, id: JobId) -> ApiError {
        self.job_id = Some(id);
        self
    }

    pub fn with_kind(mut self, kind: FailureKind) -> ApiError {
        self.kind = Some(kind);
        self
    }

    pub fn retry_after(mut self, seconds: u32) -> ApiError {
        self.retry_after = Some(seconds);
        self
    }

    pub fn as_json(mut self, json: bool) -> ApiError {
        self.json = json;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, code = self.code, message = %self.message, "request failed");
        }
        let mut response = if self.json {
            let mut body = serde_json::json!({
                "error": self.code,
                "message": self.message,
                "id": self.job_id,
            });
            if let Some(kind) = self.kind {
                body["kind"] = serde_json::json!(kind);
            }
            (self.status, Json(body)).into_response()
        } else {
            let body = match self.job_id {
                Some(id) => format!("error: {} (job {id})\n", self.message),
                None => format!("error: {}\n", self.message),
            };
            (self.status, body).into_response()
        };
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(id) = self.job_id {
            if let Ok(location) = HeaderValue::from_str(&format!("/jobs/{id}")) {
                response.headers_mut().insert(header::LOCATION, location);
            }
        }
        response
    }
}
