//! The provider trait.

use async_trait::async_trait;

use crate::pipeline::{self, Encoding, TokenizedRequest};
use crate::{EmbedRequest, EmbedResponse, EmbeddingError, ModelInfo, Result};

/// Something that turns texts into vectors, in two steps a service can drive separately.
///
/// 1. [`tokenize`](Self::tokenize) validates a request once, applies its prompt and truncation
///    and returns its encodings ([`pipeline::tokenize`] does the work; implementations only
///    decide where it runs);
/// 2. [`run`](Self::run) runs the model over a batch of encodings, which may come from several
///    requests, and returns raw pooled vectors.
///
/// [`embed`](Self::embed) chains both and [`pipeline::finish`] for callers that hold one
/// request. Object-safe and `Send + Sync`, so services hold it as `Arc<dyn EmbeddingProvider>`
/// and call it from many tasks at once; implementations do their blocking work off the async
/// worker threads.
#[async_trait]
pub trait EmbeddingProvider: Send + Sync {
    /// Describes the model: id, dimensions, token limit, prompts.
    fn model_info(&self) -> &ModelInfo;

    /// Validates `request` and tokenises each of its texts exactly once (through
    /// [`pipeline::tokenize`]). Invalid requests and over-long texts under
    /// [`Truncation::Error`](crate::Truncation::Error) fail here, before any model work.
    async fn tokenize(&self, request: EmbedRequest) -> Result<TokenizedRequest>;

    /// Runs the model over `batch` and returns one raw pooled vector per encoding, in order:
    /// full dimension, not normalised (see [`pipeline::finish`]). The batch may mix encodings
    /// of several requests; a provider splits it into as many model runs as its own memory
    /// bounds need. An error that concerns one text names its position in `batch`.
    async fn run(&self, batch: Vec<Encoding>) -> Result<Vec<Vec<f32>>>;

    /// Embeds every text of the request; vectors come back in input order.
    async fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse> {
        let tokenized = self.tokenize(request).await?;
        let token_counts = tokenized.token_counts();
        let raw = self.run(tokenized.encodings).await?;
        pipeline::finish(raw, token_counts, tokenized.output)
    }

    /// Runs the model on a short text and checks the result, so a passing health check means
    /// the provider can really serve requests.
    async fn health_check(&self) -> Result<()> {
        let expected = self.model_info().dimension;
        let response = self.embed(EmbedRequest::new(["health check"])).await?;
        match response.embeddings.first() {
            Some(vector) if vector.len() == expected => Ok(()),
            _ => Err(EmbeddingError::Inference(format!(
                "health check: the model returned no vector of {expected} values"
            ))),
        }
    }
}
