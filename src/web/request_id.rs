//! A request id for every HTTP request: the client's `X-Request-Id` when it
//! sends a sensible one (a proxy or a caller tracing its own calls), else a
//! new UUID. It names the request's tracing span, travels in the job's
//! queue message to the worker's log lines, and comes back to the client
//! in the `X-Request-Id` header, so one id finds every line about one
//! upload, whichever process wrote it.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id taken from a client; longer ones are replaced.
const MAX_LEN: usize = 128;

tokio::task_local! {
    /// The id of the request this task serves. A task-local rather than a
    /// handler argument, so the code that builds the job message reads it
    /// without every handler passing it along.
    static CURRENT: String;
}

/// The id of the request being served, if called while serving one.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// The client's id if it is short and plain (it goes into log lines and
/// queue messages), else a new one.
fn choose(request: &Request) -> String {
    request
        .headers()
        .get(&HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| acceptable(id))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&b))
}

/// Middleware: picks the id, serves the request inside a span carrying it
/// and returns it in the response header.
pub async fn layer(request: Request, next: Next) -> Response {
    let id = choose(&request);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let mut response = CURRENT
        .scope(id.clone(), next.run(request))
        .instrument(span)
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::acceptable;

    #[test]
    fn only_short_plain_ids_are_taken_from_clients() {
        assert!(acceptable("5b0c0a5e-0a43-4a37-9d43-7a1b0c2d3e4f"));
        assert!(acceptable("lb:abc/123"));
        assert!(!acceptable(""));
        assert!(!acceptable("two words"));
        assert!(!acceptable("line\nbreak"));
        assert!(!acceptable(&"x".repeat(129)));
    }
}
