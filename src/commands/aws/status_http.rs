//! `controller --status-listen ADDR`: the controller's status (the last
//! plan, the instances, the policy, the last error, such as a launch that
//! is backing off) as JSON on `GET /status`. On AWS the controller runs on
//! its own, without the web tier that shows it under `serve`.

use std::net::SocketAddr;

use anyhow::Context;
use axum::routing::get;
use axum::{Json, Router};

use crate::controller::SharedStatus;
use crate::shutdown::Shutdown;

/// Binds `addr` now (so a bad address fails at start) and serves until
/// shutdown.
pub async fn serve_status(
    addr: SocketAddr,
    status: SharedStatus,
    mut shutdown: Shutdown,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(address = %listener.local_addr()?, "controller status on GET /status");
    let app = Router::new()
        .route(
            "/status",
            get(move || {
                let status = status.clone();
                async move { Json(status.snapshot()) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.requested().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "controller status server failed");
        }
    }))
}
