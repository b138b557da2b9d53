//! `akidb-rest`: serves embeddings over HTTP. Configure with flags or `AKIDB_*` variables
//! (`akidb-rest --help` lists them); logs go to stderr, filtered by `RUST_LOG` (default `info`).

use std::process::ExitCode;

use clap::Parser;

// No logger to report a failed logger set-up through: stderr is all there is.
#[allow(clippy::print_stderr)]
#[tokio::main]
async fn main() -> ExitCode {
    // The log format is a setting itself: read it before anything logs (the provider's
    // parser warns about the legacy `python-bridge` name).
    let format = std::env::var("AKIDB_LOG_FORMAT")
        .ok()
        .filter(|format| format.trim().eq_ignore_ascii_case("json"))
        .map_or(akidb_rest::config::LogFormat::Text, |_| {
            akidb_rest::config::LogFormat::Json
        });
    let format = if std::env::args().any(|arg| arg == "--log-format=json")
        || std::env::args()
            .collect::<Vec<_>>()
            .windows(2)
            .any(|pair| pair[0] == "--log-format" && pair[1] == "json")
    {
        akidb_rest::config::LogFormat::Json
    } else {
        format
    };
    if let Err(error) = akidb_rest::logging::init_logging(format) {
        eprintln!("akidb-rest: cannot set up logging: {error}");
    }
    let config = akidb_rest::Config::parse();
    match akidb_rest::serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "akidb-rest stopped");
            ExitCode::FAILURE
        }
    }
}
