//! Log lines on stderr: readable text by default, one JSON object per line
//! with `--log-format json` (for a log shipper). Spans travel with the
//! lines either way: a web request's id, a worker's job and request ids,
//! a controller's tick.

use tracing_subscriber::EnvFilter;

/// Set for the processes this one starts (local workers), so a fleet
/// logs in one format.
pub const LOG_FORMAT_ENV: &str = "IMAGEFLEET_LOG_FORMAT";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, fields, spans.
    Json,
}

/// Installs the subscriber: `RUST_LOG` filters (default `info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
    let value = match format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    // SAFETY (of the environment): called at start-up, before the runtime
    // or any other thread exists.
    std::env::set_var(LOG_FORMAT_ENV, value);
}
