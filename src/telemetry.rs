//! Logs and the request span. Every HTTP request runs in one `request` span (opened by
//! `http::observe`) that the governed call fills in: execution id, tenant, agent, model, outcome
//! and the time spent in admission, upstream and settlement. Logs are JSON in production
//! (`log_format = "json"` / `AEX_LOG_FORMAT=json`) and readable text locally. Request and
//! response bodies and tokens are never logged.

use std::time::Instant;

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Records on the current request span how long a phase took since `since`, in milliseconds.
pub fn record_ms(field: &'static str, since: Instant) {
    let ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::Span::current().record(field, ms);
}

/// An error with its causes, on one line (reqwest's or sqlx's top-level message alone says
/// little).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Records how the governed call ended on the current request span.
pub fn record_outcome(outcome: &str) {
    tracing::Span::current().record("outcome", outcome);
}

fn default_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"))
}

/// The JSON subscriber: one object per line, the event's fields at the top level, the current
/// span's fields under `span` and every enclosing span under `spans`.
pub fn json_subscriber<W>(writer: W, filter: EnvFilter) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .finish()
}

/// Installs the process-wide subscriber, writing to stderr.
pub fn init(format: LogFormat) {
    let installed = match format {
        LogFormat::Json => tracing::subscriber::set_global_default(json_subscriber(
            std::io::stderr,
            default_filter(),
        )),
        LogFormat::Pretty => tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_env_filter(default_filter())
                .with_writer(std::io::stderr)
                .finish(),
        ),
    };
    if let Err(e) = installed {
        eprintln!("logging was already set up: {e}");
    }
}
