//! The contract between AkiDB and whatever turns text into vectors.
//!
//! Consumers hold an [`EmbeddingProvider`] as `Arc<dyn EmbeddingProvider>` and send it an
//! [`EmbedRequest`]; providers (ONNX Runtime in `akidb-embedding-onnx`, a deterministic mock in
//! `akidb-embedding-mock`) answer with an [`EmbedResponse`] or a typed [`EmbeddingError`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use akidb_embedding_core::{EmbedRequest, EmbeddingProvider};
//!
//! async fn index(provider: Arc<dyn EmbeddingProvider>) -> Result<(), akidb_embedding_core::EmbeddingError> {
//!     let request = EmbedRequest::new(["The train station is two blocks north."])
//!         .with_prompt("document")
//!         .with_dimensions(256);
//!     let response = provider.embed(request).await?;
//!     assert_eq!(response.count(), 1);
//!     assert_eq!(response.dimension, 256);
//!     Ok(())
//! }
//! ```
//!
//! A request goes through [`pipeline::tokenize`] (validation, prompt, truncation: once), a
//! model run over a batch of [`Encoding`]s (formed by [`batching::plan_runs`]), and
//! [`pipeline::finish`] (Matryoshka cut, normalisation, non-finite check). Services drive the
//! steps themselves to merge requests into shared runs; [`EmbeddingProvider::embed`] chains
//! them for everyone else. [`EmbeddingProvider::token_spans`] shows what the model reads: each
//! token's id and the bytes of the caller's text it stands for ([`TokenSpan`]), under the same
//! prompt and truncation rules.
//!
//! This crate is deliberately light (no ONNX Runtime, no tokenizer, no HTTP): it holds the
//! types, the pipeline every provider shares, the validation it applies ([`validate`]) and the
//! vector post-processing ([`vector`]).

pub mod batching;
mod error;
mod model_info;
pub mod pipeline;
mod provider;
mod request;
mod response;
pub mod token_span;
pub mod validate;
pub mod vector;

pub use error::{EmbeddingError, ErrorKind, Result};
pub use model_info::ModelInfo;
pub use pipeline::{Encoding, OutputOptions, TextEncoder, TokenizedRequest};
pub use provider::EmbeddingProvider;
pub use request::{EmbedRequest, Truncation};
pub use response::EmbedResponse;
pub use token_span::{TokenKind, TokenSpan};
