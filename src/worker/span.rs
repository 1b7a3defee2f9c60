//! The tracing span a job runs in: its id and the id of the web request
//! that queued it, so the lines this worker writes about the job are found
//! by the id the client got back in `X-Request-Id`.

use serde::Deserialize;

use crate::queue::ReceivedMessage;

/// The ids as far as the message names them (a malformed message still
/// gets a span, with what it has).
#[derive(Default, Deserialize)]
struct Ids {
    job_id: Option<String>,
    request_id: Option<String>,
}

pub(super) fn for_message(message: &ReceivedMessage) -> tracing::Span {
    let ids: Ids = serde_json::from_str(&message.body).unwrap_or_default();
    tracing::info_span!(
        "job",
        id = ids.job_id.as_deref(),
        request_id = ids.request_id.as_deref(),
        attempt = message.receive_count,
    )
}
