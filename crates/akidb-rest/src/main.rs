//! `akidb-rest`: serves embeddings over HTTP. Configure with flags or `AKIDB_*` variables
//! (`akidb-rest --help` lists them); logs go to stderr, filtered by `RUST_LOG` (default `info`).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = akidb_rest::Config::parse();
    match akidb_rest::serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "akidb-rest stopped");
            ExitCode::FAILURE
        }
    }
}
