//! `imagefleet web`: the web tier alone.

use std::time::Duration;

use super::args::WebArgs;
use super::aws::replica::{close_reply_queue, open_reply_queue};
use crate::shutdown::{on_signals, Shutdown};
use crate::web::{self, WebState};

pub async fn run(args: WebArgs) -> anyhow::Result<()> {
    let (trigger, shutdown) = Shutdown::new();
    on_signals(trigger);
    let services = args.backend.services(&args.data.data_dir).await?;
    let listener = args.bind().await?;
    let mut state = WebState::new(services, args.settings(Duration::ZERO));
    // AWS: this replica's own reply queue, deleted again when it stops.
    let reply = open_reply_queue(&args).await?;
    if let Some(reply) = &reply {
        state = state.with_reply_queue(reply.queue());
    }
    let result = web::serve(listener, state, shutdown).await;
    close_reply_queue(reply).await;
    result
}
