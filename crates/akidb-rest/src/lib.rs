//! `akidb-rest`: the AkiDB embedding HTTP service.
//!
//! Serves one or more [`EmbeddingProvider`](akidb_embedding_core::EmbeddingProvider)s over
//! HTTP, with an OpenAI-compatible route, dynamic batching, API-key authentication and
//! Prometheus metrics. The pieces, in the order a request meets them:
//!
//! - [`config`]: flags and `AKIDB_*` environment variables, with their defaults;
//! - [`server`]: binds the socket, loads the models in the background, shuts down gracefully;
//! - [`connections`]: accepts and serves connections within their bounds (how many, how long
//!   a client may stall);
//! - [`routes`]: the HTTP routes and their response shapes;
//! - [`request`]: the request bodies, read with a deadline, parsed and checked against the
//!   limits (the functions the fuzz targets call);
//! - [`auth`]: the `Authorization: Bearer` check;
//! - [`error`]: the one error type and its status codes;
//! - [`state`]: what handlers share (limits, metrics, the loaded models);
//! - [`batcher`]: queues tokenised requests and cuts shared model runs from them, in tokens
//!   (no HTTP inside);
//! - [`admission`]: estimates the work ahead of a request and refuses at once what cannot
//!   finish before its deadline;
//! - [`providers`]: builds the providers the configuration names;
//! - [`metrics`]: counters and histograms (`metrics` crate, Prometheus exposition);
//! - [`openai`], [`tei`]: the OpenAI and text-embeddings-inference dialects;
//! - [`names`]: the names clients address models by (ids, built-in aliases, served names);
//! - [`observability`]: request ids, spans, timing headers, log format;
//! - [`loading`]: each model's loading state and download progress.
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

pub mod admission;
pub mod auth;
pub mod batcher;
pub mod config;
pub mod connections;
pub mod error;
pub mod loading;
pub mod metrics;
pub mod names;
pub mod observability;
pub mod openai;
pub mod providers;
pub mod request;
pub mod routes;
pub mod server;
pub mod state;
pub mod tei;

pub use config::Config;
pub use error::ApiError;
pub use routes::router;
pub use server::{ServeError, Server, serve};
pub use state::AppState;
