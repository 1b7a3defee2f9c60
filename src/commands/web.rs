//! `imagefleet web`: the web tier alone.

use std::time::Duration;

use anyhow::Context;

use crate::cli::WebArgs;
use crate::shutdown::{on_signals, Shutdown};
use crate::web::{self, WebSettings, WebState};

impl WebArgs {
    pub fn settings(&self) -> WebSettings {
        WebSettings {
            max_upload_bytes: self.max_upload_mib * 1024 * 1024,
            result_timeout: Duration::from_secs(self.result_timeout_secs),
        }
    }

    pub async fn bind(&self) -> anyhow::Result<tokio::net::TcpListener> {
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .with_context(|| format!("cannot listen on {}", self.listen))?;
        tracing::info!(address = %listener.local_addr()?, "web tier listening");
        Ok(listener)
    }
}

pub async fn run(args: WebArgs) -> anyhow::Result<()> {
    let (trigger, shutdown) = Shutdown::new();
    on_signals(trigger);
    let services = args.backend.services(&args.data.data_dir).await?;
    let listener = args.bind().await?;
    web::serve(listener, WebState::new(services, args.settings()), shutdown).await
}
