//! `GET /dashboard`: the fleet at a glance, live. The page is static; its
//! script follows `GET /dashboard/events`, server-sent events carrying the
//! recent history once (`history`) and then each new look at the service
//! (`live`, once a second).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::stream::{self, Stream};
use serde::Serialize;
use tokio::sync::watch;

use super::pages::with_page_headers;
use super::telemetry::{Feed, Live, Sample};
use super::WebState;

const PAGE: &str = include_str!("assets/dashboard.html");

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/events", get(events))
}

async fn page() -> Response {
    with_page_headers(Html(PAGE).into_response())
}

#[derive(Serialize)]
struct History<'a> {
    samples: &'a [Sample],
    live: Option<&'a Live>,
}

/// The state of one connection's event stream.
enum Next {
    History(Feed),
    Live(Feed),
}

async fn events(
    State(state): State<WebState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let feed = state.telemetry.feed();
    let events = stream::unfold(Next::History(feed), |next| async move {
        match next {
            Next::History(mut feed) => {
                let latest = feed.live.borrow_and_update().clone();
                let history = History {
                    samples: &feed.history,
                    live: latest.as_deref(),
                };
                let event = json_event("history", &history);
                feed.history = Vec::new();
                Some((Ok(event), Next::Live(feed)))
            }
            Next::Live(mut feed) => {
                let live = next_live(&mut feed.live, &mut feed.ended).await?;
                Some((Ok(json_event("live", &*live)), Next::Live(feed)))
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// The next look at the service; `None` once the web tier stops sampling
/// (it is shutting down), which ends the stream and frees the connection.
async fn next_live(
    live: &mut watch::Receiver<Option<Arc<Live>>>,
    ended: &mut watch::Receiver<bool>,
) -> Option<Arc<Live>> {
    loop {
        tokio::select! {
            changed = live.changed() => {
                changed.ok()?;
                if let Some(latest) = live.borrow_and_update().clone() {
                    return Some(latest);
                }
            }
            _ = ended.wait_for(|ended| *ended) => return None,
        }
    }
}

fn json_event(name: &str, data: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|e| Event::default().event("error").data(e.to_string()))
}
