//! Exact text embeddings on ONNX Runtime: EmbeddingGemma-300m, all-MiniLM-L6-v2, or any ONNX
//! sentence-embedding model you describe with a [`ModelSpec`].
//!
//! ```no_run
//! use akidb_embedding_core::EmbedRequest;
//! use akidb_embedding_onnx::{LoadOptions, OnnxEmbeddingProvider};
//!
//! # fn main() -> Result<(), akidb_embedding_core::EmbeddingError> {
//! // A built-in id (fetched from the Hugging Face hub into its cache) or a local folder.
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
//! The pipeline runs one way: validate → [`tokenize`] → [`batching`] (length-sorted runs) →
//! ONNX Runtime ([`runtime`]) → [`pooling`] → normalise ([`akidb_embedding_core::vector`]).
//! Model files are found by [`source`]; what a model needs is described by [`ModelSpec`]
//! (built-in rows in [`model_spec`], overridden by the sentence-transformers files of a folder,
//! read in [`st_config`]). Split weights are mapped from a private copy ([`weights`]), so
//! changes to the model folder cannot harm a loaded model.

pub mod batching;
pub mod model_spec;
pub mod pooling;
mod provider;
pub mod runtime;
pub mod source;
pub mod st_config;
pub mod tokenize;
pub mod weights;

pub use model_spec::{ModelSpec, OnnxVariant, Pooling};
pub use provider::{LoadOptions, OnnxEmbeddingProvider, OptimizationLevel};
pub use source::DownloadProgress;
pub use weights::WeightsMapping;
