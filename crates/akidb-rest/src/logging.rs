//! The service's log: `tracing` to stderr, as text or JSON lines, filtered by `RUST_LOG`.

use crate::config::LogFormat;

/// Installs the global log subscriber: `format` on stderr, filtered by `RUST_LOG` (default
/// `info`). Fails if one is installed already.
pub fn init_logging(format: LogFormat) -> Result<(), String> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    result.map_err(|error| error.to_string())
}
