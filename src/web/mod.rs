//! The web tier: accepts uploads, stores each image, queues a job and
//! answers with the label once a worker has classified it.

mod error;
mod results;
mod upload;
// For people (issue 16): pages, dashboard, metrics, request ids.
mod dashboard;
mod html;
mod pages;
mod request_id;
mod telemetry;

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use imagefleet_worker::decode::{mime_type, sniff_format};
use imagefleet_worker::ClassifyError;
use serde_json::json;

pub use error::ApiError;
pub use results::ResultRouter;

use crate::controller::SharedStatus;
use crate::job::{unix_millis, FailureKind, JobId, JobRequest, JobResult, Outcome};
use crate::services::Services;
use crate::shutdown::Shutdown;
use telemetry::{ResultTap, Telemetry};
use upload::{read_upload, Upload};

#[derive(Debug, Clone)]
pub struct WebSettings {
    /// Largest accepted request body.
    pub max_upload_bytes: usize,
    /// How long `POST /` waits for the label before answering 504.
    pub result_timeout: Duration,
    /// After a stop is requested, how long open requests may still wait for
    /// their results; then they are answered 503 and the tier exits.
    pub drain_timeout: Duration,
}

impl Default for WebSettings {
    fn default() -> Self {
        WebSettings {
            max_upload_bytes: 20 * 1024 * 1024,
            result_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(25),
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
    /// Metrics, and the dashboard's history and live feed.
    telemetry: Telemetry,
}

impl WebState {
    pub fn new(services: Services, settings: WebSettings) -> WebState {
        WebState {
            services,
            router: ResultRouter::default(),
            settings,
            controller: None,
            // Fails only if two metrics share a name: a bug, found by any test.
            telemetry: Telemetry::new().expect("the metrics register"),
        }
    }

    pub fn with_controller(mut self, status: SharedStatus) -> WebState {
        self.controller = Some(status);
        self
    }
}

pub fn router(state: WebState) -> Router {
    let limit = state.settings.max_upload_bytes;
    Router::new()
        .route("/", post(classify_upload))
        .route("/upload", post(classify_upload))
        .route("/jobs", post(submit_job))
        .route("/jobs/{id}", get(job_status))
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .route("/metrics", get(telemetry::metrics))
        .merge(pages::routes())
        .merge(dashboard::routes())
        .layer(DefaultBodyLimit::max(limit))
        // Outermost last: a request gets its id first, then is counted,
        // then (from a browser) answered as a page.
        .layer(middleware::from_fn(pages::html_for_browsers))
        .layer(middleware::from_fn_with_state(
            state.telemetry.clone(),
            telemetry::track_uploads,
        ))
        .layer(middleware::from_fn(request_id::layer))
        .with_state(state)
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
    let mut stop = shutdown.clone();
    let server = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { stop.requested().await })
        .into_future();
    tokio::pin!(server);
    let mut stop = shutdown.clone();
    let deadline = async move {
        stop.requested().await;
        tokio::time::sleep(drain).await;
    };
    let served = tokio::select! {
        served = &mut server => served,
        () = deadline => {
            let waiting = router_handle.waiting();
            tracing::warn!(waiting, "drain deadline passed; answering the requests still waiting");
            router_handle.close();
            // A moment for those answers to be written; connections that
            // are still open after it (a client sending nothing) are cut.
            match tokio::time::timeout(Duration::from_secs(2), &mut server).await {
                Ok(served) => served,
                Err(_) => {
                    tracing::warn!("connections still open after the drain deadline; closing them");
                    Ok(())
                }
            }
        }
    };
    pump_trigger.trigger();
    let _ = pump.await;
    let _ = sampler.await;
    served?;
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
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let json = wants_json(&headers);
    let started = Instant::now();
    let result = async {
        let upload = read_upload(multipart).await?;
        let id = JobId::new();
        let mut waiter = state.router.wait_for(id);
        submit(&state, id, upload).await?;
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
        let upload = read_upload(multipart).await?;
        let id = JobId::new();
        submit(&state, id, upload).await?;
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

/// Checks the upload is an image we can read, stores it under a key derived
/// from the job id and queues the job.
async fn submit(state: &WebState, id: JobId, upload: Upload) -> Result<(), ApiError> {
    let format = sniff_format(&upload.bytes).map_err(|e| match e {
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
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("cannot {what}: {e}"),
        )
    };
    let content_type = mime_type(format).to_owned();
    let input_key = id.input_key();
    state
        .services
        .inputs
        .put(&input_key, upload.bytes, &content_type)
        .await
        .map_err(|e| unavailable("store the image", &e))?;
    let request = JobRequest {
        job_id: id,
        input_key: input_key.clone(),
        file_name: upload.file_name,
        content_type,
        submitted_at_ms: unix_millis(),
        attempt: 1,
        request_id: request_id::current(),
    };
    let body = serde_json::to_string(&request).expect("job requests serialise");
    if let Err(e) = state.services.requests.send(&body).await {
        // Nothing will ever process this image; do not keep it.
        let _ = state.services.inputs.delete(&input_key).await;
        return Err(unavailable("queue the job", &e));
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
