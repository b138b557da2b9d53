//! AkiDB Embeddings: one dependency that brings the whole embedding library.
//!
//! - [`core`]: the `EmbeddingProvider` trait and its request/response/error types;
//! - [`onnx`]: the ONNX Runtime provider (EmbeddingGemma-300m, all-MiniLM-L6-v2, your own models);
//! - [`mock`]: a deterministic provider for tests.
//!
//! The examples, benchmarks and cross-crate tests of the workspace live in this package.

pub use akidb_embedding_core as core;
pub use akidb_embedding_mock as mock;
pub use akidb_embedding_onnx as onnx;
