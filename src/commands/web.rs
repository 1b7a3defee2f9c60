//! `imagefleet web`: the web tier alone.

use std::time::Duration;

use super::args::WebArgs;
use crate::shutdown::{on_signals, Shutdown};
use crate::web::{self, WebState};

pub async fn run(args: WebArgs) -> anyhow::Result<()> {
    let (trigger, shutdown) = Shutdown::new();
    on_signals(trigger);
    let services = args.backend.services(&args.data.data_dir).await?;
    let listener = args.bind().await?;
    let settings = args.settings(Duration::ZERO);
    web::serve(listener, WebState::new(services, settings), shutdown).await
}
