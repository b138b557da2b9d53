#![doc = include_str!("../README.md")]
//!
//! This crate re-exports the library crates:
//! - [`core`]: the `EmbeddingProvider` trait and its request/response/error types;
//! - [`onnx`]: the ONNX Runtime provider (EmbeddingGemma-300m, all-MiniLM-L6-v2, your own models);
//! - [`mock`]: a deterministic provider for tests.
//!
//! and holds the one piece of deployment knowledge the libraries leave out: [`install`], where
//! `scripts/setup.sh` puts ONNX Runtime and the models, used by the service, the examples and
//! the benches.

pub use akidb_embedding_core as core;
pub use akidb_embedding_mock as mock;
pub use akidb_embedding_onnx as onnx;

pub mod install;
