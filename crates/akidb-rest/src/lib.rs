//! `akidb-rest`: the AkiDB embedding HTTP service.
//!
//! Serves one or more [`EmbeddingProvider`](akidb_embedding_core::EmbeddingProvider)s over
//! HTTP, with OpenAI- and text-embeddings-inference-compatible routes, admission control,
//! dynamic batching, API-key authentication and Prometheus metrics. Laid out by layer, arrows
//! pointing down (server → http → engine → provider):
//!
//! - [`config`]: flags and `AKIDB_*` environment variables, with their defaults;
//! - `server`: binds the sockets, loads the models in the background, shuts down gracefully
//!   ([`Server`], [`serve`]);
//! - `net`: accepts and serves connections within their bounds (how many, how long a client
//!   may stall) and drains them;
//! - `http`: the three dialects (the service's own, OpenAI, text-embeddings-inference),
//!   request extraction ([`request`]), the error table ([`ApiError`]), authentication, request
//!   ids and timing headers;
//! - [`engine`]: the served models and their names, admission (every unit of work estimated
//!   before it starts), the bounded tokenisation pool, the batcher, load status; no HTTP
//!   inside;
//! - `metrics`: counters and histograms (Prometheus exposition);
//! - [`logging`]: the log's set-up.
//!
//! ```no_run
//! use akidb_rest::{Config, serve};
//!
//! # async fn run() -> Result<(), akidb_rest::ServeError> {
//! let config = Config {
//!     provider: akidb_rest::config::ProviderKind::Mock,
//!     bind: "127.0.0.1:0".parse().unwrap(),
//!     ..Config::default()
//! };
//! serve(config).await // until SIGINT or SIGTERM
//! # }
//! ```

pub mod config;
pub mod engine;
pub(crate) mod http;
pub mod logging;
pub(crate) mod memory;
pub(crate) mod metrics;
pub(crate) mod net;
pub(crate) mod server;

pub use config::Config;
pub use http::error::{ApiError, Dialect, Field};
pub use http::state::{AppState, Limits};
pub use http::{metrics_router, router};
pub use server::{ServeError, Server, serve};

/// Request bodies at the edge and their parsing, as the handlers and the fuzz targets use
/// them.
pub mod request {
    pub use crate::http::request::*;
}
