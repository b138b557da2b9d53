//! The provider trait.

use async_trait::async_trait;

use crate::{EmbedRequest, EmbedResponse, ModelInfo, Result};

/// Something that turns texts into vectors.
///
/// Object-safe and `Send + Sync`, so services hold it as `Arc<dyn EmbeddingProvider>` and
/// call it from many tasks at once; implementations do their blocking work off the async
/// worker threads.
#[async_trait]
pub trait EmbeddingProvider: Send + Sync {
    /// Embeds every text of the request; vectors come back in input order.
    async fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse>;

    /// Token count of each text of `request`, as [`embed`](Self::embed) would count it (prompt
    /// and special tokens included; after truncation, unless the request refuses it, in which
    /// case an over-long text is [`EmbeddingError::TextTooLong`](crate::EmbeddingError)),
    /// without running the model. Services check their per-request token limits with it
    /// before a request waits for the model (see [`crate::validate::check_total_tokens`]).
    async fn token_counts(&self, request: &EmbedRequest) -> Result<Vec<usize>>;

    /// Describes the model: id, dimensions, token limit, prompts.
    fn model_info(&self) -> &ModelInfo;

    /// Runs the model on a short text and checks the result, so a passing health check means
    /// the provider can really serve requests.
    async fn health_check(&self) -> Result<()>;
}
