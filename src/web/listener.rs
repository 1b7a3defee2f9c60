//! The accept loop, with the bounds axum::serve lacks: a cap on open
//! connections, a deadline for each request's headers that also closes idle
//! keep-alive connections (hyper's header read timeout starts as soon as a
//! connection waits for a request), bounded header buffers, and a graceful
//! stop. Under pressure a new connection takes the place of the oldest one
//! that has not even sent a request yet (so half-sent headers cannot starve
//! real clients, `/healthz` included); when every connection is busy with a
//! request, the newcomer gets 503 with Retry-After at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::shutdown::Shutdown;

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// From a connection's start, or the end of its last response, to the
    /// end of the next request's headers.
    pub header_timeout: Duration,
    /// Largest request head (and read buffer) per connection.
    pub max_header_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
        }
    }
}

/// One open connection, as the accept loop sees it.
struct Tracked {
    /// Requests in a handler or whose response body is still going out.
    busy: Arc<AtomicUsize>,
    /// Notified to drop the connection.
    evict: Arc<Notify>,
    /// Notified when the connection is gone.
    closed: Arc<Notify>,
}

#[derive(Default)]
struct Connections {
    /// By accept order, so the first idle one found is the oldest.
    open: Mutex<BTreeMap<u64, Tracked>>,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Tracked>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the oldest connection with no request under way to close
    /// (it no longer counts as open), and returns what signals that it is
    /// gone; None if every connection is busy.
    fn evict_oldest_idle(&self) -> Option<Arc<Notify>> {
        let mut open = self.lock();
        let id = *open
            .iter()
            .find(|(_, c)| c.busy.load(Ordering::Acquire) == 0)?
            .0;
        let victim = open.remove(&id)?;
        victim.evict.notify_one();
        Some(victim.closed)
    }
}

/// Serves `app` on `listener` until `shutdown`; then stops accepting, lets
/// each connection finish its request in progress, and returns when all
/// are closed. (The caller bounds that wait.)
pub async fn run(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    mut shutdown: Shutdown,
) {
    let connections = Arc::new(Connections::default());
    let mut tasks = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some
                    // to close rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.requested() => break,
        };
        while tasks.try_join_next().is_some() {}
        let open = connections.lock().len();
        if open >= limits.max_connections {
            match connections.evict_oldest_idle() {
                // Wait (briefly) until it is really gone, so the cap holds.
                Some(closed) => {
                    let _ =
                        tokio::time::timeout(Duration::from_millis(100), closed.notified()).await;
                }
                None => {
                    tasks.spawn(refuse(stream));
                    continue;
                }
            }
        }
        next_id += 1;
        let tracked = Tracked {
            busy: Arc::new(AtomicUsize::new(0)),
            evict: Arc::new(Notify::new()),
            closed: Arc::new(Notify::new()),
        };
        let (busy, evict, closed) = (
            Arc::clone(&tracked.busy),
            Arc::clone(&tracked.evict),
            Arc::clone(&tracked.closed),
        );
        connections.lock().insert(next_id, tracked);
        let (app, connections, shutdown, id) = (
            app.clone(),
            Arc::clone(&connections),
            shutdown.clone(),
            next_id,
        );
        tasks.spawn(async move {
            serve_connection(stream, app, limits, busy, evict, shutdown).await;
            connections.lock().remove(&id);
            closed.notify_one();
        });
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: ConnectionLimits,
    busy: Arc<AtomicUsize>,
    evict: Arc<Notify>,
    mut shutdown: Shutdown,
) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let guard = BusyGuard::enter(&busy);
        let app = app.clone();
        async move {
            let response = app.oneshot(request.map(Body::new)).await?;
            // The connection stays busy until the body has gone out (a
            // result stream, a slow reader), not only until the handler
            // returns.
            Ok::<_, std::convert::Infallible>(
                response.map(|body| Body::new(Guarded { body, guard })),
            )
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => log_end(served),
        () = evict.notified() => {
            tracing::debug!("dropped an idle connection to make room for a new one");
        }
        _ = shutdown.requested() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                served = connection.as_mut() => log_end(served),
                () = evict.notified() => {}
            }
        }
    }
}

fn log_end(served: Result<(), hyper::Error>) {
    if let Err(e) = served {
        // Timeouts and resets are what clients do; not server errors.
        tracing::debug!(error = %e, "connection ended");
    }
}

/// The answer to a connection past the cap, written without reading the
/// request: the client learns at once to come back later.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str = "error: too many connections; retry shortly\n";
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Counts a request as under way while alive.
struct BusyGuard(Arc<AtomicUsize>);

impl BusyGuard {
    fn enter(busy: &Arc<AtomicUsize>) -> BusyGuard {
        busy.fetch_add(1, Ordering::AcqRel);
        BusyGuard(Arc::clone(busy))
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted until it is done.
struct Guarded {
    body: Body,
    guard: BusyGuard,
}

impl http_body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let _ = &self.guard;
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
