//! The provider trait.

use async_trait::async_trait;

use crate::pipeline::{self, Encoding, TokenizedRequest};
use crate::{EmbedRequest, EmbedResponse, EmbeddingError, ModelInfo, Result, TokenSpan};

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

    /// The tokens of each text of `request` as the model reads them, with the bytes of the
    /// caller's text each stands for: validated, prompted and truncated exactly as
    /// [`tokenize`](Self::tokenize) does, so the ids are the ones embedding feeds the model
    /// (implementations go through [`pipeline::token_spans`]). Spans are byte offsets on
    /// character boundaries of the text sent; special and prompt tokens have none (see
    /// [`crate::token_span`]). `dimensions` and `normalize` are checked but play no part.
    ///
    /// Optional: the default answers [`EmbeddingError::Unsupported`], for providers whose
    /// tokenizer keeps no offsets.
    async fn token_spans(&self, request: EmbedRequest) -> Result<Vec<Vec<TokenSpan>>> {
        let _ = request;
        Err(EmbeddingError::Unsupported {
            model: self.model_info().id.clone(),
            capability: "token spans".to_string(),
        })
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A provider that implements only what the trait requires.
    struct Minimal(ModelInfo);

    #[async_trait]
    impl EmbeddingProvider for Minimal {
        fn model_info(&self) -> &ModelInfo {
            &self.0
        }
        async fn tokenize(&self, request: EmbedRequest) -> Result<TokenizedRequest> {
            Err(EmbeddingError::InvalidInput(format!(
                "{} texts",
                request.texts.len()
            )))
        }
        async fn run(&self, batch: Vec<Encoding>) -> Result<Vec<Vec<f32>>> {
            Ok(vec![vec![0.0; self.0.dimension]; batch.len()])
        }
    }

    #[tokio::test]
    async fn token_spans_default_to_a_typed_refusal_through_a_trait_object() {
        let provider: Arc<dyn EmbeddingProvider> = Arc::new(Minimal(ModelInfo {
            id: "minimal".into(),
            dimension: 2,
            max_tokens: 8,
            dimensions: vec![2],
            prompts: vec![],
        }));
        let err = provider
            .token_spans(EmbedRequest::new(["a"]))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            EmbeddingError::Unsupported {
                model: "minimal".into(),
                capability: "token spans".into()
            }
        );
        assert!(err.is_invalid_input());
    }
}
