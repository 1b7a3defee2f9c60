//! The dashboard's event stream over plain HTTP: the history first, then a
//! look at the service every second; and it ends when the service stops,
//! so an open dashboard does not hold up a shutdown.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use crate::support::{exit_within, signal, Server};

#[test]
fn the_event_stream_sends_history_then_live_and_ends_on_shutdown() {
    let mut server = Server::start(&["serve", "--workers", "1"]);
    let page = reqwest::blocking::get(server.url("/dashboard")).unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().unwrap().contains(r#"<svg id="chart""#));

    let response = reqwest::blocking::Client::new()
        .get(server.url("/dashboard/events"))
        .send()
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut lines = BufReader::new(response).lines();
    let mut next_event = || {
        let mut event = (String::new(), String::new());
        for line in lines.by_ref() {
            // A connection cut (rather than ended) counts as the end: the
            // timing below tells the two apart.
            let Ok(line) = line else { return None };
            if let Some(name) = line.strip_prefix("event: ") {
                event.0 = name.to_owned();
            } else if let Some(data) = line.strip_prefix("data: ") {
                event.1.push_str(data);
            } else if line.is_empty() && !event.0.is_empty() {
                return Some(event);
            }
        }
        None
    };
    let (name, data) = next_event().expect("a first event");
    assert_eq!(name, "history");
    let history: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert!(history["samples"].is_array(), "{history}");
    let started = Instant::now();
    let (name, data) = next_event().expect("a live event");
    assert_eq!(name, "live");
    assert!(started.elapsed() < Duration::from_secs(3));
    let live: serde_json::Value = serde_json::from_str(&data).unwrap();
    for field in [
        "visible",
        "in_flight",
        "dead_letters",
        "results_per_s",
        "done",
    ] {
        assert!(live["sample"][field].is_number(), "{field}: {live}");
    }
    assert_eq!(live["controller"]["limits"]["max"], 1, "{live}");

    // SIGTERM with the stream open: it ends, and serve exits long before
    // its 30 s drain deadline.
    let stopping = Instant::now();
    signal(server.child.id(), libc::SIGTERM);
    while next_event().is_some() {}
    let status = exit_within(
        &mut server.child,
        Duration::from_secs(10),
        "serve with a dashboard open",
    );
    assert!(status.success());
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "{:?}",
        stopping.elapsed()
    );
}
