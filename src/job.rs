//! What travels between the tiers: the request message, and the result
//! (stored in the output bucket and sent back as the result message).

use std::time::{SystemTime, UNIX_EPOCH};

use imagefleet_worker::{ClassifyError, Prediction, StageTimings};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A job gets this many attempts. A worker whose attempt fails for a
/// reason that may pass (a bucket or queue briefly down, a crash) leaves it
/// for a retry; on the last attempt it gives up: the job gets a failed
/// result (its client an answer) and its request goes to the dead-letter
/// queue, from where `imagefleet dlq redrive` can send it again.
pub const MAX_ATTEMPTS: u32 = 3;

/// The queues' own safety net (SQS redrive policy; the same rule in the
/// SQLite queue): a request received this many times without a delete moves
/// to the dead-letter queue without an answer. Above [`MAX_ATTEMPTS`], so
/// it only acts when the workers could not even record their giving up.
pub const MAX_RECEIVES: u32 = MAX_ATTEMPTS + 2;

/// Job ids are UUIDs chosen by the web tier; every object key derives from
/// one, so a client never names a file on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(Uuid);

impl JobId {
    pub fn new() -> JobId {
        JobId(Uuid::new_v4())
    }

    pub fn parse(text: &str) -> Option<JobId> {
        Uuid::try_parse(text).ok().map(JobId)
    }

    pub fn input_key(&self) -> String {
        self.0.to_string()
    }

    pub fn output_key(&self) -> String {
        format!("{}.json", self.0)
    }
}

impl Default for JobId {
    fn default() -> Self {
        JobId::new()
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The request-queue message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRequest {
    pub job_id: JobId,
    pub input_key: String,
    /// The client's file name, for display only.
    pub file_name: String,
    pub content_type: String,
    pub submitted_at_ms: u64,
    pub attempt: u32,
    /// The queue of the web tier replica waiting for the result (AWS: each
    /// replica has its own). None: the shared result queue. Older messages
    /// lack the field and still parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// The web request that queued the job (its `X-Request-Id`), so the
    /// worker's log lines can be found from the client's. Absent in
    /// messages queued before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Keep the input once the job is answered (the upload page shows it
    /// back), until the retention; by default it is deleted then.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_input: bool,
}

/// The result object (output bucket, key `JobId::output_key`) and the
/// result-queue message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub id: JobId,
    pub file_name: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub model: String,
    pub worker_id: String,
    /// Which attempt produced it (1 = the first; a worker that stops and
    /// hands a job back does not use up an attempt).
    #[serde(default)]
    pub attempt: u32,
    pub submitted_at_ms: u64,
    pub completed_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Done {
        label: String,
        probability: f32,
        top5: Vec<Prediction>,
        width: u32,
        height: u32,
        timings: JobTimings,
    },
    Failed {
        #[serde(rename = "error")]
        kind: FailureKind,
        message: String,
    },
}

/// Why a job has no label. Travels as a stable snake_case string (the
/// `error` field of a failed result); the web tier maps each kind to a
/// status code by an exhaustive match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The upload had no bytes.
    Empty,
    /// Not an image format the worker reads.
    UnsupportedFormat,
    /// More pixels than the worker's limit.
    TooManyPixels,
    /// Looked like an image, could not be decoded.
    Undecodable,
    /// The model failed on a decoded image.
    Inference,
    /// The input object was gone when the worker came to it.
    InputMissing,
    /// Every attempt failed (see [`MAX_ATTEMPTS`]); the request is in the
    /// dead-letter queue.
    AttemptsExhausted,
    /// The request message could not be read; it is in the dead-letter
    /// queue.
    MalformedMessage,
    /// A kind this version does not know (written by a newer one).
    #[serde(other)]
    Unknown,
}

impl FailureKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureKind::Empty => "empty",
            FailureKind::UnsupportedFormat => "unsupported_format",
            FailureKind::TooManyPixels => "too_many_pixels",
            FailureKind::Undecodable => "undecodable",
            FailureKind::Inference => "inference",
            FailureKind::InputMissing => "input_missing",
            FailureKind::AttemptsExhausted => "attempts_exhausted",
            FailureKind::MalformedMessage => "malformed_message",
            FailureKind::Unknown => "unknown",
        }
    }
}

impl From<&ClassifyError> for FailureKind {
    fn from(error: &ClassifyError) -> FailureKind {
        match error {
            ClassifyError::Empty => FailureKind::Empty,
            ClassifyError::UnsupportedFormat => FailureKind::UnsupportedFormat,
            ClassifyError::TooManyPixels { .. } | ClassifyError::TooMuchMemory { .. } => {
                FailureKind::TooManyPixels
            }
            ClassifyError::Undecodable(_) => FailureKind::Undecodable,
            ClassifyError::Inference(_) => FailureKind::Inference,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct JobTimings {
    /// From submission until a worker picked the job up.
    pub queue_wait_ms: f64,
    #[serde(flatten)]
    pub stages: StageTimings,
    /// Fetch, classify and store, as the worker saw it.
    pub worker_ms: f64,
}

pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_round_trip_with_a_status_tag() {
        let result = JobResult {
            id: JobId::new(),
            file_name: "cat.jpg".into(),
            outcome: Outcome::Failed {
                kind: FailureKind::Undecodable,
                message: "bad huffman code".into(),
            },
            model: "m".into(),
            worker_id: "w".into(),
            attempt: 1,
            submitted_at_ms: 1,
            completed_at_ms: 2,
        };
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["status"], "failed");
        assert_eq!(json["error"], "undecodable");
        let back: JobResult = serde_json::from_value(json).unwrap();
        assert_eq!(back, result);
    }

    #[test]
    fn failure_kinds_keep_their_wire_names() {
        for kind in [
            FailureKind::Empty,
            FailureKind::UnsupportedFormat,
            FailureKind::TooManyPixels,
            FailureKind::Undecodable,
            FailureKind::Inference,
            FailureKind::InputMissing,
            FailureKind::AttemptsExhausted,
            FailureKind::MalformedMessage,
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        let newer: FailureKind = serde_json::from_value("from_the_future".into()).unwrap();
        assert_eq!(newer, FailureKind::Unknown);
    }

    #[test]
    fn requests_without_a_reply_queue_still_parse() {
        let old = r#"{"job_id":"6f1d2c56-8a4e-4a55-9d38-1b3c1f0e9a11","input_key":"k",
            "file_name":"a.jpg","content_type":"image/jpeg","submitted_at_ms":1,"attempt":1}"#;
        let request: JobRequest = serde_json::from_str(old).unwrap();
        assert_eq!(request.reply_to, None);
        assert!(!serde_json::to_string(&request)
            .unwrap()
            .contains("reply_to"));
        let routed = JobRequest {
            reply_to: Some("imagefleet-demo-reply_abc".into()),
            ..request
        };
        let back: JobRequest =
            serde_json::from_str(&serde_json::to_string(&routed).unwrap()).unwrap();
        assert_eq!(back, routed);
    }

    #[test]
    fn requests_without_a_request_id_still_parse() {
        let old = r#"{"job_id":"5b0c0a5e-0a43-4a37-9d43-7a1b0c2d3e4f","input_key":"k",
            "file_name":"a.png","content_type":"image/png","submitted_at_ms":1,"attempt":1}"#;
        let request: JobRequest = serde_json::from_str(old).unwrap();
        assert_eq!(request.request_id, None);
    }

    #[test]
    fn job_ids_only_parse_from_uuids() {
        assert!(JobId::parse("../../etc/passwd").is_none());
        let id = JobId::new();
        assert_eq!(JobId::parse(&id.to_string()), Some(id));
    }
}
