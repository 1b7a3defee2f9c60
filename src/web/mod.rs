//! The web tier: accepts uploads, stores each image, queues a job and
//! answers with the label once a worker has classified it.

mod auth;
mod error;
mod listener;
mod results;
mod upload;
// For people (issue 16): pages, dashboard, metrics, request ids.
mod dashboard;
mod html;
mod pages;
mod request_id;
mod telemetry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::Semaphore;

pub use auth::TOKEN_COOKIE;
pub use error::ApiError;
pub use listener::ConnectionLimits;
pub use results::ResultRouter;

use crate::controller::{Arrivals, SharedStatus};
use crate::job::{unix_millis, FailureKind, JobId, JobRequest, JobResult, Outcome};
use crate::services::Services;
use crate::shutdown::Shutdown;
use telemetry::{ResultTap, Telemetry};
use upload::{store_upload, UploadLimits};

#[derive(Debug, Clone)]
pub struct WebSettings {
    /// Largest accepted request body.
    pub max_upload_bytes: usize,
    /// How long `POST /` waits for the label before answering 504.
    pub result_timeout: Duration,
    /// After a stop is requested, how long open requests may still wait for
    /// their results; then they are answered 503 and the tier exits.
    pub drain_timeout: Duration,
    /// Uploads streaming in at once; past it, 503 with Retry-After.
    pub max_uploads: usize,
    /// Longest pause inside an upload's body before it is dropped (408).
    pub body_stall_timeout: Duration,
    /// Open connections, their timeouts and buffers.
    pub connections: ConnectionLimits,
    /// Bearer token required on every route but `/healthz`.
    pub auth_token: Option<String>,
}

impl Default for WebSettings {
    fn default() -> Self {
        WebSettings {
            max_upload_bytes: 20 * 1024 * 1024,
            result_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(25),
            max_uploads: 128,
            body_stall_timeout: Duration::from_secs(15),
            connections: ConnectionLimits::default(),
            auth_token: None,
        }
    }
}

#[derive(Clone)]
pub struct WebState {
    services: Services,
    router: ResultRouter,
    settings: WebSettings,
    /// The controller's view, when one runs in this process.
    controller: Option<SharedStatus>,
    /// One permit per upload streaming in.
    uploads: Arc<Semaphore>,
    /// This replica's own reply queue (AWS), named in every job it queues;
    /// `None`: the shared result queue.
    reply_to: Option<String>,
    /// Metrics, and the dashboard's history and live feed.
    telemetry: Telemetry,
    /// Rung for each job queued: wakes the controller in this process.
    arrivals: Option<Arc<Arrivals>>,
}

impl WebState {
    pub fn new(services: Services, settings: WebSettings) -> WebState {
        WebState {
            services,
            router: ResultRouter::default(),
            uploads: Arc::new(Semaphore::new(settings.max_uploads)),
            settings,
            controller: None,
            reply_to: None,
            // Fails only if two metrics share a name: a bug, found by any test.
            telemetry: Telemetry::new().expect("the metrics register"),
            arrivals: None,
        }
    }

    /// Results come back on `queue`, this replica's own: jobs name it as
    /// their reply-to and the result router drains it instead of the
    /// shared result queue.
    pub fn with_reply_queue(mut self, queue: Arc<dyn crate::queue::Queue>) -> WebState {
        self.reply_to = Some(queue.name().to_owned());
        self.services.results = queue;
        self
    }

    pub fn with_controller(mut self, status: SharedStatus) -> WebState {
        self.controller = Some(status);
        self
    }

    /// Tells the controller in this process of each job queued, so the
    /// first job at an empty fleet starts a worker at once.
    pub fn with_arrivals(mut self, arrivals: Arc<Arrivals>) -> WebState {
        self.arrivals = Some(arrivals);
        self
    }
}

pub fn router(state: WebState) -> Router {
    // The multipart framing around the file counts against the body limit
    // too; the file itself is held to `max_upload_bytes` as it streams.
    let body_limit = state.settings.max_upload_bytes + 64 * 1024;
    let token = state.settings.auth_token.clone();
    let router = Router::new()
        .route("/", post(classify_upload))
        .route("/upload", post(classify_upload))
        .route("/jobs", post(submit_job))
        .route("/jobs/{id}", get(job_status))
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .route("/metrics", get(telemetry::metrics))
        .merge(pages::routes())
        .merge(dashboard::routes())
        .layer(DefaultBodyLimit::max(body_limit))
        // Outermost last: a request gets its id first, then is counted,
        // then (from a browser) answered as a page.
        .layer(middleware::from_fn(pages::html_for_browsers))
        .layer(middleware::from_fn_with_state(
            state.telemetry.clone(),
            telemetry::track_uploads,
        ))
        .layer(middleware::from_fn(request_id::layer))
        .with_state(state);
    match token {
        Some(token) => {
            let token = auth::Token(token.into());
            router
                .route("/login", post(auth::login).with_state(token.clone()))
                .layer(axum::middleware::from_fn_with_state(
                    token,
                    auth::require_token,
                ))
        }
        None => router,
    }
}

/// Serves until `shutdown`, routing results back to waiting requests.
/// On shutdown it stops accepting connections but keeps routing results
/// until every open request is answered; at the drain deadline the requests
/// still waiting are answered 503 (their jobs stay queued) and it returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: WebState,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    // The pump outlives the listener: it stops only once the open requests
    // are answered, with its own signal.
    let (pump_trigger, pump_shutdown) = Shutdown::new();
    let results = ResultTap::wrap(Arc::clone(&state.services.results), state.telemetry.clone());
    let pump = tokio::spawn(state.router.clone().pump(results, pump_shutdown));
    // Stops with the listener, which ends the dashboards' event streams
    // (they would otherwise hold the graceful shutdown open).
    let sampler = tokio::spawn(telemetry::sample_until(state.clone(), shutdown.clone()));
    let router_handle = state.router.clone();
    let drain = state.settings.drain_timeout;
    let limits = state.settings.connections;
    let server = listener::run(listener, router(state), limits, shutdown.clone());
    tokio::pin!(server);
    let mut stop = shutdown.clone();
    let deadline = async move {
        stop.requested().await;
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        () = &mut server => {}
        () = deadline => {
            let waiting = router_handle.waiting();
            tracing::warn!(waiting, "drain deadline passed; answering the requests still waiting");
            router_handle.close();
            // A moment for those answers to be written; connections that
            // are still open after it (a client sending nothing) are cut.
            if tokio::time::timeout(Duration::from_secs(2), &mut server).await.is_err() {
                tracing::warn!("connections still open after the drain deadline; closing them");
            }
        }
    };
    pump_trigger.trigger();
    let _ = pump.await;
    let _ = sampler.await;
    Ok(())
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json"))
}

/// `POST /` and `POST /upload`: the label as text, or the whole result as
/// JSON, once a worker has classified the image.
async fn classify_upload(
    State(state): State<WebState>,
    headers: HeaderMap,
    keep_input: Option<axum::Extension<pages::KeepInput>>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let json = wants_json(&headers);
    let started = Instant::now();
    let result = async {
        let id = JobId::new();
        let mut waiter = state.router.wait_for(id);
        submit(&state, id, multipart, keep_input.is_some()).await?;
        let waited = tokio::select! {
            received = tokio::time::timeout(state.settings.result_timeout, &mut waiter.receiver) => {
                received.ok().and_then(Result::ok)
            }
            () = waiter.closing.closed() => {
                return match stored_result(&state, id).await? {
                    Some(result) => Ok(result),
                    None => Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "shutting_down",
                        format!("the service is stopping; the job stays queued, poll GET /jobs/{id}"),
                    )
                    .for_job(id)),
                };
            }
        };
        let result =
            match waited {
                Some(result) => result,
                // The result message may have been missed (e.g. routed before a
                // restart); the output bucket is the record.
                None => stored_result(&state, id).await?.ok_or_else(|| {
                    ApiError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "timeout",
                        format!(
                            "no result within {} s; the job stays queued, poll GET /jobs/{id}",
                            state.settings.result_timeout.as_secs()
                        ),
                    )
                    .for_job(id)
                })?,
            };
        Ok::<_, ApiError>(result)
    }
    .await;
    match result {
        Ok(result) => answer(result, json, started),
        Err(e) => e.as_json(json).into_response(),
    }
}

fn answer(result: JobResult, json: bool, started: Instant) -> Response {
    let id = result.id;
    match &result.outcome {
        Outcome::Done { label, .. } if !json => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            label.clone(),
        )
            .into_response(),
        Outcome::Done { .. } => {
            let mut body = serde_json::to_value(&result).unwrap_or_default();
            body["timings"]["total_ms"] = json!(started.elapsed().as_secs_f64() * 1e3);
            Json(body).into_response()
        }
        Outcome::Failed { kind, message } => {
            let (status, code) = failure_status(*kind);
            ApiError::new(status, code, message.clone())
                .for_job(id)
                .with_kind(*kind)
                .as_json(json)
                .into_response()
        }
    }
}

/// The status and error code a client sees for a job that failed: the
/// client's own fault carries its kind, the service's a generic code.
fn failure_status(kind: FailureKind) -> (StatusCode, &'static str) {
    match kind {
        FailureKind::TooManyPixels => (StatusCode::PAYLOAD_TOO_LARGE, kind.as_str()),
        FailureKind::UnsupportedFormat => (StatusCode::UNSUPPORTED_MEDIA_TYPE, kind.as_str()),
        FailureKind::Empty => (StatusCode::BAD_REQUEST, kind.as_str()),
        FailureKind::Undecodable => (StatusCode::UNPROCESSABLE_ENTITY, kind.as_str()),
        FailureKind::Inference
        | FailureKind::InputMissing
        | FailureKind::AttemptsExhausted
        | FailureKind::MalformedMessage
        | FailureKind::Unknown => (StatusCode::INTERNAL_SERVER_ERROR, "job_failed"),
    }
}

/// `POST /jobs`: queue the image and answer at once with its id.
async fn submit_job(
    State(state): State<WebState>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let result = async {
        let id = JobId::new();
        submit(&state, id, multipart, false).await?;
        Ok::<_, ApiError>(id)
    }
    .await;
    match result {
        Ok(id) => (
            StatusCode::ACCEPTED,
            [(header::LOCATION, format!("/jobs/{id}"))],
            Json(json!({ "id": id, "status": "queued", "location": format!("/jobs/{id}") })),
        )
            .into_response(),
        Err(e) => e.as_json(true).into_response(),
    }
}

/// How long an upload waits for one of the `max_uploads` turns.
const UPLOAD_QUEUE_WAIT: Duration = Duration::from_secs(5);

/// Streams the upload (an image we can read, by its first bytes) into the
/// input bucket under a key derived from the job id, then queues the job.
/// At most `max_uploads` stream at once; an upload past that waits for a
/// turn (its bytes wait in the network, not in memory) and after
/// [`UPLOAD_QUEUE_WAIT`] is asked to come back (503 with Retry-After).
async fn submit(
    state: &WebState,
    id: JobId,
    multipart: Result<Multipart, MultipartRejection>,
    keep_input: bool,
) -> Result<(), ApiError> {
    let turn = tokio::time::timeout(UPLOAD_QUEUE_WAIT, state.uploads.clone().acquire_owned());
    let _permit = turn.await.ok().and_then(Result::ok).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!(
                "{} uploads are in progress, the most this service takes at once; retry shortly",
                state.settings.max_uploads
            ),
        )
        .retry_after(1)
    })?;
    let input_key = id.input_key();
    let limits = UploadLimits {
        max_bytes: state.settings.max_upload_bytes as u64,
        stall: state.settings.body_stall_timeout,
    };
    let upload = store_upload(
        multipart,
        state.services.inputs.as_ref(),
        &input_key,
        limits,
    )
    .await?;
    tracing::debug!(job = %id, bytes = upload.size, "upload stored");
    let request = JobRequest {
        job_id: id,
        input_key: input_key.clone(),
        file_name: upload.file_name,
        content_type: upload.content_type,
        submitted_at_ms: unix_millis(),
        attempt: 1,
        reply_to: state.reply_to.clone(),
        keep_input,
        request_id: request_id::current(),
    };
    let body = serde_json::to_string(&request).expect("job requests serialise");
    if let Err(e) = state.services.requests.send(&body).await {
        // Nothing will ever process this image; do not keep it.
        let _ = state.services.inputs.delete(&input_key).await;
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("cannot queue the job: {e}"),
        ));
    }
    if let Some(arrivals) = &state.arrivals {
        arrivals.arrived();
    }
    Ok(())
}

async fn stored_result(state: &WebState, id: JobId) -> Result<Option<JobResult>, ApiError> {
    let stored = state
        .services
        .outputs
        .get(&id.output_key())
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            )
        })?;
    Ok(stored.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// `GET /jobs/{id}`: the stored result, or `pending` while the image waits.
async fn job_status(State(state): State<WebState>, Path(id): Path<String>) -> Response {
    let result = async {
        let id = JobId::parse(&id).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_id",
                "job ids are UUIDs as returned by POST /jobs",
            )
        })?;
        if let Some(result) = stored_result(&state, id).await? {
            return Ok(Json(serde_json::to_value(result).unwrap_or_default()));
        }
        let known = state
            .services
            .inputs
            .exists(&id.input_key())
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    e.to_string(),
                )
            })?;
        if known {
            Ok(Json(json!({ "id": id, "status": "pending" })))
        } else {
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no job {id}"),
            ))
        }
    }
    .await;
    match result {
        Ok(body) => body.into_response(),
        Err(e) => e.as_json(true).into_response(),
    }
}

async fn healthz(State(state): State<WebState>) -> Response {
    match state.services.requests.depth().await {
        Ok(depth) => Json(json!({ "status": "ok", "queue": depth })).into_response(),
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
        .as_json(true)
        .into_response(),
    }
}

/// `GET /status`: queue depths, requests waiting here, and the controller's
/// view (policy, last decision, errors) when it runs in this process.
async fn status(State(state): State<WebState>) -> Response {
    let depth = |q: &Arc<dyn crate::queue::Queue>| {
        let q = Arc::clone(q);
        async move { q.depth().await.map_err(|e| e.to_string()) }
    };
    let mut body = json!({
        "queue": match depth(&state.services.requests).await { Ok(d) => json!(d), Err(e) => json!({"error": e}) },
        "dead_letters": match depth(&state.services.dead_letters).await { Ok(d) => json!(d), Err(e) => json!({"error": e}) },
        "waiting_requests": state.router.waiting(),
    });
    if let Some(controller) = &state.controller {
        body["controller"] = serde_json::to_value(controller.snapshot()).unwrap_or_default();
    }
    Json(body).into_response()
}
