//! Pages for people, built into the binary: the upload page (`GET /`), the
//! dashboard (`GET /dashboard`), their stylesheet and scripts. Nothing is
//! loaded from anywhere else (the Content-Security-Policy says so too).
//!
//! The upload page is a plain form posting to `POST /`; a browser asks for
//! HTML, so `html_for_browsers` lets the upload handler answer it as JSON,
//! as for any JSON client, and turns that answer into the page with a
//! result card. curl and the classic workload generator, which do not ask
//! for HTML, keep their text label; JSON clients keep their JSON.

use axum::body::{to_bytes, Body};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use imagefleet_worker::decode::{mime_type, sniff_format};

use super::{html, WebState};
use crate::job::JobId;

const UPLOAD_PAGE: &str = include_str!("assets/upload.html");
/// Where the upload page's result cards go.
const RESULTS_MARKER: &str = "<!--RESULTS-->";

/// Static files: name, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
    (
        "upload.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/upload.js"),
    ),
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/dashboard.js"),
    ),
];

/// Our own origin only; inline styles for the probability bars; images
/// from the page's own blobs (previews before upload).
const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// A JSON answer bigger than this is not an upload's answer.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// The upload page, the pages' assets, and the uploaded images for the
/// result cards.
pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/", get(upload_page))
        .route("/assets/{name}", get(asset))
        .route("/jobs/{id}/image", get(input_image))
}

pub fn with_page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn upload_page_with(cards: &str) -> Response {
    let page = UPLOAD_PAGE.replacen(RESULTS_MARKER, cards, 1);
    with_page_headers(Html(page).into_response())
}

async fn upload_page() -> Response {
    upload_page_with("")
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(asset, _, _)| *asset == name) {
        Some((_, content_type, body)) => {
            with_page_headers(([(header::CONTENT_TYPE, *content_type)], *body).into_response())
        }
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

/// `GET /jobs/{id}/image`: the uploaded image, for the result card's
/// preview. Served only as the image type its bytes show, never as the
/// client claimed, and never to be sniffed or run as anything else.
async fn input_image(State(state): State<WebState>, Path(id): Path<String>) -> Response {
    let Some(id) = JobId::parse(&id) else {
        return (StatusCode::BAD_REQUEST, "job ids are UUIDs\n").into_response();
    };
    let bytes = match state.services.inputs.get(&id.input_key()).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            return (StatusCode::NOT_FOUND, format!("no image for job {id}\n")).into_response()
        }
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    };
    let Ok(format) = sniff_format(&bytes) else {
        return (StatusCode::NOT_FOUND, "not an image\n").into_response();
    };
    let mut response = (
        [(header::CONTENT_TYPE, mime_type(format))],
        Body::from(bytes),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    response
}

/// Whether the client wants a page rather than data: a browser's form post
/// asks for `text/html`; fetch from our script, curl and JSON clients do not.
pub fn prefers_html(headers: &HeaderMap) -> bool {
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    accept.iter().any(|v| v.contains("text/html"))
        && !accept.iter().any(|v| v.contains("application/json"))
}

/// Marks an upload whose input must be kept after its answer.
#[derive(Debug, Clone, Copy)]
pub struct KeepInput;

/// Middleware: a browser's upload gets the upload page with its result.
pub async fn html_for_browsers(mut request: Request, next: Next) -> Response {
    let is_upload =
        request.method() == Method::POST && matches!(request.uri().path(), "/" | "/upload");
    if !is_upload || !prefers_html(request.headers()) {
        return next.run(request).await;
    }
    request
        .headers_mut()
        .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    // The page shows the upload back (`/jobs/{id}/image`), so its input
    // must outlive the answer: kept until the retention instead.
    request.extensions_mut().insert(KeepInput);
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    let answer = match to_bytes(body, MAX_ANSWER_BYTES).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(
            |_| serde_json::json!({ "message": String::from_utf8_lossy(&bytes).trim() }),
        ),
        Err(e) => serde_json::json!({ "message": format!("the answer could not be read: {e}") }),
    };
    let mut page = upload_page_with(&html::card(&answer, parts.status.as_u16()));
    *page.status_mut() = parts.status;
    if let Some(location) = parts.headers.get(header::LOCATION) {
        page.headers_mut()
            .insert(header::LOCATION, location.clone());
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn browsers_get_pages_and_everyone_else_data() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(prefers_html(&accept(browser)));
        assert!(!prefers_html(&accept("*/*")));
        assert!(!prefers_html(&accept("application/json")));
        assert!(!prefers_html(&HeaderMap::new()));
    }

    #[test]
    fn the_page_has_a_place_for_results_and_no_outside_resources() {
        assert!(UPLOAD_PAGE.contains(RESULTS_MARKER));
        for (name, text) in [("upload.html", UPLOAD_PAGE)]
            .into_iter()
            .chain(ASSETS.iter().map(|(name, _, text)| (*name, *text)))
            .chain([("dashboard.html", include_str!("assets/dashboard.html"))])
        {
            for outside in ["http://", "https://", "//fonts", "cdn"] {
                let found = text
                    .match_indices(outside)
                    // The SVG namespace is a name, not a resource.
                    .filter(|(at, _)| !text[*at..].starts_with("http://www.w3.org/2000/svg"))
                    .count();
                assert_eq!(found, 0, "{name} refers to {outside}");
            }
        }
    }
}
