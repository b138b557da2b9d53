//! The root package's integration tests, in one binary (one link instead of one per file):
//! cross-crate behaviour of the providers on real models, the hub, model files, errors, and
//! the reference vectors of `../shared/reference`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod consistency;
mod consumer;
mod errors;
mod hub;
mod model_files;
mod proptest_unicode;
mod reference;
mod runtime_missing;
mod truncation;

use akidb_embedding_onnx::LoadOptions;

/// Load options for `model` that find this project's ONNX Runtime as the service and the
/// examples do (`akidb_embeddings::install::runtime_search`), and nothing else: tests name
/// their model folders. ONNX Runtime is loaded once per process, so every test of this binary
/// goes through here (except `runtime_missing`, which runs in a process of its own).
pub fn load_options(model: impl Into<String>) -> LoadOptions {
    LoadOptions::new(model).with_runtime_search(akidb_embeddings::install::runtime_search())
}
