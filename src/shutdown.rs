//! A cloneable "stop now" signal shared by the tasks of one process.

use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
}

#[derive(Clone)]
pub struct ShutdownTrigger {
    sender: watch::Sender<bool>,
}

impl Shutdown {
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (sender, receiver) = watch::channel(false);
        (ShutdownTrigger { sender }, Shutdown { receiver })
    }

    pub fn is_requested(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Resolves once shutdown is requested (at once if it already was).
    pub async fn requested(&mut self) {
        let _ = self.receiver.wait_for(|stop| *stop).await;
    }
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.sender.send(true);
    }
}

/// Triggers `trigger` on SIGTERM or Ctrl-C (SIGINT).
pub fn on_signals(trigger: ShutdownTrigger) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received, shutting down"),
        }
        trigger.trigger();
    });
}
