//! Exact text embeddings on ONNX Runtime: EmbeddingGemma-300m, all-MiniLM-L6-v2, or any ONNX
//! sentence-embedding model you describe with a [`ModelSpec`].
//!
//! ```no_run
//! use akidb_embedding_core::EmbedRequest;
//! use akidb_embedding_onnx::{LoadOptions, OnnxEmbeddingProvider};
//!
//! # fn main() -> Result<(), akidb_embedding_core::EmbeddingError> {
//! // A built-in id (fetched from the Hugging Face hub into its cache) or a local folder; the
//! // ONNX Runtime library comes from ORT_DYLIB_PATH or `with_runtime_library`/`with_runtime_search`.
//! let provider = OnnxEmbeddingProvider::load(
//!     LoadOptions::new("onnx-community/embeddinggemma-300m-ONNX").with_intra_threads(2),
//! )?;
//! let response = provider.embed_blocking(
//!     EmbedRequest::new(["Where is the nearest train station?"]).with_prompt("query"),
//! )?;
//! assert_eq!(response.dimension, 768);
//! # Ok(())
//! # }
//! ```
//!
//! The pipeline runs one way, through the core crate's [`akidb_embedding_core::pipeline`]:
//! validate and prompt (once) → [`tokenize`] → [`batching`] (least-padding runs) → a session
//! run on ONNX Runtime (`session`, inputs and outputs as `ndarray` views) → [`pooling`] →
//! Matryoshka cut and normalisation ([`akidb_embedding_core::pipeline::finish`]).
//! What to load is said with [`LoadOptions`]; the model's files are found by [`source`]; what
//! a model needs is described by [`ModelSpec`] (built-in rows in [`model_spec`], overridden by
//! the sentence-transformers files of a folder, read in [`st_config`]); the runtime library is
//! found by [`runtime`] from what the caller names (this crate knows no install layout). Split
//! weights are mapped from a private copy ([`weights`]), so changes to the model folder cannot
//! harm a loaded model.
//! [`quantize`] makes the project's own `q8` variant (`MatMulNBits` weights) from an fp32
//! graph, ahead of time or at first load ([`OnnxVariant::Q8`]).
//! [`quantize::fuse`] rewrites a graph into ONNX Runtime's fused operators; loading does it
//! by default ([`LoadOptions::with_fused_graph`]), cached like `q8`.

pub mod model_spec;
mod options;
pub mod pooling;
mod provider;
pub mod q8_matmul;
pub mod quantize;
pub mod row_ops;
pub mod runtime;
mod session;
pub mod source;
pub mod st_config;
pub mod tokenize;
pub mod tokenizer_file;
pub mod weights;

/// The least-padding planner, shared with services that merge requests (see
/// [`akidb_embedding_core::batching`]).
pub use akidb_embedding_core::batching;

pub use model_spec::{ModelSpec, OnnxVariant, Pooling};
pub use options::{LoadOptions, OptimizationLevel};
pub use provider::OnnxEmbeddingProvider;
pub use source::DownloadProgress;
pub use weights::WeightsMapping;
