//! Bearer-token authentication for every route but `/healthz` (which load
//! balancers and supervisors probe without credentials). Browsers, which
//! cannot add a header to a plain form post, send the same token as the
//! `imagefleet_token` cookie: a browser turned away gets a small form that
//! posts the token to `/login`, which sets the cookie.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// The cookie a browser may carry the token in.
pub const TOKEN_COOKIE: &str = "imagefleet_token";

/// How much of a refused request's body is read before the answer.
const DRAIN_BYTES: usize = 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Routes open without a token: the health probe, the login form's target,
/// and the pages' static assets (the same for everyone, no data).
const OPEN_PATHS: &[&str] = &["/healthz", "/login"];
const OPEN_PREFIXES: &[&str] = &["/assets/"];

/// The form a browser without the token gets (styled by the page's own
/// stylesheet, no script).
const LOGIN_PAGE: &str = r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>imagefleet: token needed</title><link rel="stylesheet" href="/assets/style.css"></head><body><main><h1>imagefleet</h1><p>This service needs its access token.</p><form method="post" action="/login"><label>Token <input type="password" name="token" autocomplete="current-password" required></label> <button type="submit">Continue</button></form></main></body></html>"#;

#[derive(Clone)]
pub struct Token(pub std::sync::Arc<str>);

pub async fn require_token(State(token): State<Token>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let open = OPEN_PATHS.contains(&path) || OPEN_PREFIXES.iter().any(|p| path.starts_with(p));
    if open || presented(request.headers(), &token) {
        return next.run(request).await;
    }
    let json = wants_json(request.headers());
    let browser = super::pages::prefers_html(request.headers());
    // Read (and drop) a small body first: a client still sending it would
    // otherwise see the connection break instead of this answer.
    let body = request.into_body();
    let _ = tokio::time::timeout(DRAIN_TIME, axum::body::to_bytes(body, DRAIN_BYTES)).await;
    if browser {
        let page = (StatusCode::UNAUTHORIZED, axum::response::Html(LOGIN_PAGE)).into_response();
        return super::pages::with_page_headers(page);
    }
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this service needs a token: send `Authorization: Bearer TOKEN`",
    )
    .as_json(json)
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"imagefleet\""),
    );
    response
}

#[derive(serde::Deserialize)]
pub struct Login {
    token: String,
}

/// `POST /login` (the form above): the right token becomes a cookie the
/// browser sends from then on (HttpOnly: no script reads it; SameSite:
/// no other site's page can use it); a wrong one gets the form again.
pub async fn login(State(token): State<Token>, axum::Form(login): axum::Form<Login>) -> Response {
    if !same(login.token.trim(), &token.0) {
        let page = (StatusCode::UNAUTHORIZED, axum::response::Html(LOGIN_PAGE)).into_response();
        return super::pages::with_page_headers(page);
    }
    let cookie = format!(
        "{TOKEN_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        token.0
    );
    let mut response = axum::response::Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

fn presented(headers: &HeaderMap, token: &Token) -> bool {
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.strip_prefix("Bearer "))
        .any(|given| same(given.trim(), &token.0));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == TOKEN_COOKIE && same(value, &token.0));
    bearer || cookie
}

/// Compares in time independent of where the strings differ, so the
/// token cannot be guessed byte by byte from response times.
fn same(given: &str, expected: &str) -> bool {
    let (given, expected) = (given.as_bytes(), expected.as_bytes());
    if given.len() != expected.len() {
        return false;
    }
    given
        .iter()
        .zip(expected)
        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn the_token_counts_as_a_bearer_header_or_a_cookie_and_nothing_else() {
        let token = Token("s3cret-token".into());
        assert!(presented(
            &headers(&[(header::AUTHORIZATION, "Bearer s3cret-token")]),
            &token
        ));
        assert!(presented(
            &headers(&[(header::COOKIE, "theme=dark; imagefleet_token=s3cret-token")]),
            &token
        ));
        for wrong in [
            "Bearer s3cret-tokeN",
            "Bearer s3cret-token2",
            "Basic s3cret-token",
            "s3cret-token",
            "Bearer ",
        ] {
            assert!(
                !presented(&headers(&[(header::AUTHORIZATION, wrong)]), &token),
                "{wrong}"
            );
        }
        assert!(!presented(
            &headers(&[(header::COOKIE, "token=s3cret-token")]),
            &token
        ));
        assert!(!presented(&HeaderMap::new(), &token));
    }
}
