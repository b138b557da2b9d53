//! Tokenisation as admitted work: a bounded pool, one text at a time, cancellable between texts.
//!
//! Every request's texts are tokenised here, whatever its route (embedding in any dialect,
//! `/tokenize`): at most `workers` texts are tokenised at once per model, each as a request of
//! its own through the provider (which moves a large text off the async threads), so a request
//! of many texts never holds the pool for long. Between two texts the request checks its
//! deadline; when the request itself ends (answered, timed out, client gone) its future is
//! dropped and no further text of it is tokenised. Each text's measured time teaches the
//! model's [`Admission`] what tokenisation costs.

use std::sync::Arc;
use std::time::Duration;

use akidb_embedding_core::{
    EmbedRequest, EmbeddingError, EmbeddingProvider, Encoding, TokenSpan, TokenizedRequest,
};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::EngineError;
use super::admission::Admission;

/// Most bytes of a text the tokenizer is assumed to read: a text to be cut at the model's cap
/// is read only as far as its first tokens can come from (see `akidb_embedding_onnx`'s
/// tokenizer), about this many bytes per token of the cap.
const BYTES_READ_PER_CAPPED_TOKEN: usize = 16;

/// The tokenisation workers of one model.
#[derive(Debug, Clone)]
pub struct TokenizerPool {
    permits: Arc<Semaphore>,
    workers: usize,
}

impl TokenizerPool {
    /// A pool that tokenises at most `workers` texts at once (at least one).
    pub fn new(workers: usize) -> Self {
        let workers = workers.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(workers)),
            workers,
        }
    }

    /// How many texts are tokenised at once, at most.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Bytes of `text` the tokenizer reads for a model with a cap of `max_tokens` tokens: the
    /// figure tokenisation costs are estimated and learned by.
    pub fn bytes_read(text_bytes: usize, max_tokens: usize) -> usize {
        text_bytes.min(
            max_tokens
                .saturating_add(64)
                .saturating_mul(BYTES_READ_PER_CAPPED_TOKEN),
        )
    }

    /// Tokenises every text of `request` as the provider's `tokenize` would, one text at a
    /// time on the pool. Stops with [`EngineError::Timeout`] between texts once `deadline` has
    /// passed; `on_text` hears of each text done (its estimated share can be released).
    pub async fn tokenize(
        &self,
        provider: &Arc<dyn EmbeddingProvider>,
        request: EmbedRequest,
        deadline: Option<Instant>,
        admission: &Admission,
        mut on_text: impl FnMut(usize),
    ) -> Result<TokenizedRequest, EngineError> {
        let max_tokens = provider.model_info().max_tokens;
        let (template, texts) = split(request);
        let mut encodings: Vec<Encoding> = Vec::with_capacity(texts.len());
        let mut output = None;
        for (index, text) in texts.into_iter().enumerate() {
            let bytes = Self::bytes_read(text.len(), max_tokens);
            let one = with_text(&template, text);
            let (tokenized, elapsed) = self.on_worker(deadline, || provider.tokenize(one)).await?;
            let mut tokenized = tokenized.map_err(|error| at_index(error, index))?;
            let Some(encoding) = tokenized.encodings.pop() else {
                return Err(EngineError::Embedding(EmbeddingError::Inference(
                    "the tokenizer gave no encoding for a text".into(),
                )));
            };
            admission.tokenized(bytes, encoding.len(), elapsed);
            encodings.push(encoding);
            output = Some(tokenized.output);
            on_text(bytes);
        }
        let Some(output) = output else {
            // No text: the provider refuses the empty request with its own error.
            return Ok(provider.tokenize(template).await?);
        };
        Ok(TokenizedRequest { encodings, output })
    }

    /// The tokens of every text of `request` with their spans, as the provider's
    /// `token_spans` gives them, one text at a time on the pool (see [`Self::tokenize`]).
    pub async fn token_spans(
        &self,
        provider: &Arc<dyn EmbeddingProvider>,
        request: EmbedRequest,
        deadline: Option<Instant>,
        mut on_text: impl FnMut(usize),
    ) -> Result<Vec<Vec<TokenSpan>>, EngineError> {
        let max_tokens = provider.model_info().max_tokens;
        let (template, texts) = split(request);
        if texts.is_empty() {
            return Ok(provider.token_spans(template).await?);
        }
        let mut spans = Vec::with_capacity(texts.len());
        for (index, text) in texts.into_iter().enumerate() {
            let bytes = Self::bytes_read(text.len(), max_tokens);
            let one = with_text(&template, text);
            let (result, _) = self
                .on_worker(deadline, || provider.token_spans(one))
                .await?;
            let mut tokens = result.map_err(|error| at_index(error, index))?;
            spans.push(tokens.pop().unwrap_or_default());
            on_text(bytes);
        }
        Ok(spans)
    }

    /// Runs one text's tokenisation once a worker is free and the deadline has not passed.
    async fn on_worker<F, T>(
        &self,
        deadline: Option<Instant>,
        work: impl FnOnce() -> F,
    ) -> Result<(T, Duration), EngineError>
    where
        F: Future<Output = T>,
    {
        let expired = || deadline.is_some_and(|deadline| Instant::now() >= deadline);
        if expired() {
            return Err(EngineError::Timeout);
        }
        let _worker = self.permits.acquire().await.map_err(|_| {
            EngineError::Embedding(EmbeddingError::Inference(
                "the tokenisation pool is closed".into(),
            ))
        })?;
        if expired() {
            return Err(EngineError::Timeout);
        }
        let started = Instant::now();
        let result = work().await;
        Ok((result, started.elapsed()))
    }
}

/// The request without its texts (its options), and the texts.
fn split(mut request: EmbedRequest) -> (EmbedRequest, Vec<String>) {
    let texts = std::mem::take(&mut request.texts);
    (request, texts)
}

/// A one-text request with `template`'s options.
fn with_text(template: &EmbedRequest, text: String) -> EmbedRequest {
    EmbedRequest {
        texts: vec![text],
        ..template.clone()
    }
}

/// A one-text request's error, told of the text's place in the whole request.
fn at_index(error: EmbeddingError, index: usize) -> EngineError {
    EngineError::Embedding(match error {
        EmbeddingError::TextTooLong {
            tokens, max_tokens, ..
        } => EmbeddingError::TextTooLong {
            index,
            tokens,
            max_tokens,
        },
        EmbeddingError::InvalidInput(message) => {
            EmbeddingError::InvalidInput(message.replace("text 0", &format!("text {index}")))
        }
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use akidb_embedding_core::Truncation;
    use akidb_embedding_mock::MockEmbeddingProvider;

    fn mock(max_tokens: usize) -> (Arc<MockEmbeddingProvider>, Arc<dyn EmbeddingProvider>) {
        let mock = Arc::new(MockEmbeddingProvider::new(8).with_max_tokens(max_tokens));
        let provider: Arc<dyn EmbeddingProvider> = mock.clone();
        (mock, provider)
    }

    #[tokio::test]
    async fn text_by_text_gives_what_the_provider_gives_for_the_whole_request() {
        let (_, provider) = mock(64);
        let pool = TokenizerPool::new(2);
        let request = EmbedRequest::new(["one two", "three", "four five six"])
            .with_prompt("query")
            .with_dimensions(4);
        let mut done = Vec::new();
        let ours = pool
            .tokenize(
                &provider,
                request.clone(),
                None,
                &Admission::default(),
                |bytes| done.push(bytes),
            )
            .await
            .unwrap();
        assert_eq!(ours, provider.tokenize(request.clone()).await.unwrap());
        assert_eq!(done, [7, 5, 13]);
        let spans = pool
            .token_spans(&provider, request.clone(), None, |_| {})
            .await
            .unwrap();
        assert_eq!(spans, provider.token_spans(request).await.unwrap());
    }

    #[tokio::test]
    async fn errors_name_the_texts_place_in_the_request() {
        let (_, provider) = mock(4);
        let pool = TokenizerPool::new(1);
        let request = EmbedRequest::new(["a", "b", "c d e f g"]).with_truncation(Truncation::Error);
        let error = pool
            .tokenize(&provider, request, None, &Admission::default(), |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                EngineError::Embedding(EmbeddingError::TextTooLong { index: 2, .. })
            ),
            "{error:?}"
        );
        let empty = pool
            .tokenize(
                &provider,
                EmbedRequest::new(Vec::<String>::new()),
                None,
                &Admission::default(),
                |_| {},
            )
            .await
            .unwrap_err();
        assert_eq!(empty, EngineError::Embedding(EmbeddingError::EmptyBatch));
    }

    #[tokio::test]
    async fn a_past_deadline_stops_before_the_next_text() {
        let (mock, provider) = mock(64);
        let pool = TokenizerPool::new(1);
        let past = Instant::now();
        let error = pool
            .tokenize(
                &provider,
                EmbedRequest::new(["a", "b"]),
                Some(past),
                &Admission::default(),
                |_| {},
            )
            .await
            .unwrap_err();
        assert_eq!(error, EngineError::Timeout);
        assert_eq!(mock.tokenizer_calls(), 0);
    }

    #[tokio::test]
    async fn a_dropped_request_tokenises_no_further_text_and_frees_its_worker() {
        let (mock, provider) = mock(64);
        let pool = TokenizerPool::new(1);
        // The only worker is busy: the request waits for it, then is dropped (its client went).
        let held = Arc::clone(&pool.permits).acquire_owned().await.unwrap();
        let waiting = {
            let (pool, provider) = (pool.clone(), Arc::clone(&provider));
            tokio::spawn(async move {
                pool.tokenize(
                    &provider,
                    EmbedRequest::new(["a", "b"]),
                    None,
                    &Admission::default(),
                    |_| {},
                )
                .await
            })
        };
        tokio::task::yield_now().await;
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        drop(held);
        assert_eq!(
            mock.tokenizer_calls(),
            0,
            "nothing of the dropped request ran"
        );
        assert_eq!(pool.permits.available_permits(), 1);
    }
}
