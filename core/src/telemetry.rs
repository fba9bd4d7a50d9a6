//! Log set-up, one for every binary: `RUST_LOG` filters (default per binary), logs go to stderr
//! (stdout carries the EMF metric lines and the CLI's answers), as one JSON object per line where
//! CloudWatch reads them, as text on a terminal.

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logs {
    /// One JSON object per line, with the current span: what CloudWatch Logs Insights queries.
    Json,
    /// Human-readable lines, for a terminal.
    Text,
}

/// Installs the process's log subscriber: `RUST_LOG` when set, else `default_filter` (such as
/// `info`). Call once, first thing in `main`; a second call is ignored.
pub fn init(logs: Logs, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match logs {
        Logs::Json => builder.json().with_current_span(true).try_init(),
        Logs::Text => builder.try_init(),
    };
}
