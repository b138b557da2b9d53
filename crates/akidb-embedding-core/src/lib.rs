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
//!     assert_eq!(response.embeddings.len(), 1);
//!     assert_eq!(response.dimension, 256);
//!     Ok(())
//! }
//! ```
//!
//! This crate is deliberately light (no ONNX Runtime, no tokenizer, no HTTP): it holds the
//! types, the validation every provider applies in the same way ([`validate`]) and the vector
//! post-processing they share ([`vector`]).

mod error;
mod model_info;
mod provider;
mod request;
mod response;
pub mod validate;
pub mod vector;

pub use error::{EmbeddingError, ErrorKind, Result};
pub use model_info::ModelInfo;
pub use provider::EmbeddingProvider;
pub use request::{EmbedRequest, Truncation};
pub use response::EmbedResponse;
