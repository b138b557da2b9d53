//! A deterministic [`EmbeddingProvider`] for tests of code that consumes the trait.
//!
//! The same text always gives the same vector, different texts give different vectors, and the
//! request options (`normalize`, `dimensions`, prompts, truncation) behave as in the real
//! providers, so a service can be tested end to end without a model. Latency and failures can
//! be injected to test timeouts and error paths.
//!
//! ```
//! use std::sync::Arc;
//! use akidb_embedding_core::{EmbedRequest, EmbeddingProvider};
//! use akidb_embedding_mock::MockEmbeddingProvider;
//!
//! # tokio_test();
//! # fn tokio_test() {
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let provider: Arc<dyn EmbeddingProvider> = Arc::new(MockEmbeddingProvider::new(64));
//! let a = provider.embed(EmbedRequest::new(["hello"])).await.unwrap();
//! let b = provider.embed(EmbedRequest::new(["hello", "world"])).await.unwrap();
//! assert_eq!(a.embeddings[0], b.embeddings[0]);
//! assert_ne!(b.embeddings[0], b.embeddings[1]);
//! # });
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use akidb_embedding_core::{
    EmbedRequest, EmbedResponse, EmbeddingError, EmbeddingProvider, ModelInfo, Result, Truncation,
    validate, vector,
};
use async_trait::async_trait;

/// Which requests an injected failure hits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureMode {
    /// Never fail.
    Never,
    /// Fail every request.
    Always,
    /// Fail every n-th call of `embed` (1-based: `EveryNth(3)` fails calls 3, 6, 9, …).
    EveryNth(u64),
    /// Fail any request that holds a text containing this marker.
    WhenTextContains(String),
}

/// Deterministic provider: vectors derived from a hash of (prompt + text).
#[derive(Debug)]
pub struct MockEmbeddingProvider {
    info: ModelInfo,
    prompts: BTreeMap<String, String>,
    latency: Duration,
    failure: FailureMode,
    calls: AtomicU64,
    seen_batches: Mutex<Vec<usize>>,
}

impl MockEmbeddingProvider {
    /// A mock producing vectors of `dimension` values, with a 512-token limit, `query` and
    /// `document` prompts, and Matryoshka dimensions `dimension`, `dimension/2`, `dimension/4`.
    pub fn new(dimension: usize) -> Self {
        let dimension = dimension.max(1);
        let mut dimensions = vec![dimension];
        for d in [dimension / 2, dimension / 4] {
            if d > 0 && !dimensions.contains(&d) {
                dimensions.push(d);
            }
        }
        let prompts: BTreeMap<String, String> = [
            ("query".to_string(), "query: ".to_string()),
            ("document".to_string(), "document: ".to_string()),
        ]
        .into();
        Self {
            info: ModelInfo {
                id: "mock".to_string(),
                dimension,
                max_tokens: 512,
                dimensions,
                prompts: prompts.keys().cloned().collect(),
            },
            prompts,
            latency: Duration::ZERO,
            failure: FailureMode::Never,
            calls: AtomicU64::new(0),
            seen_batches: Mutex::new(Vec::new()),
        }
    }

    /// Sets the id the mock reports.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.info.id = id.into();
        self
    }

    /// Sets the token limit (one token per whitespace-separated word, plus two special tokens).
    #[must_use]
    pub fn with_max_tokens(mut self, max_tokens: usize) -> Self {
        self.info.max_tokens = max_tokens.max(2);
        self
    }

    /// Waits this long in every `embed` call (without blocking the async runtime).
    #[must_use]
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Injects failures: matching calls return [`EmbeddingError::Inference`].
    #[must_use]
    pub fn with_failures(mut self, failure: FailureMode) -> Self {
        self.failure = failure;
        self
    }

    /// How many times `embed` has been called.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// The batch sizes of every `embed` call so far, in call order (lets tests check batching).
    pub fn batch_sizes(&self) -> Vec<usize> {
        self.seen_batches
            .lock()
            .map(|sizes| sizes.clone())
            .unwrap_or_default()
    }

    /// Token count of a text as the mock sees it: words plus two special tokens.
    pub fn count_tokens(text: &str) -> usize {
        text.split_whitespace().count() + 2
    }

    /// The mock's tokenisation of text `index`: the prompted, truncated text its vector is
    /// derived from, and its token count (words plus two special tokens).
    fn tokenize(
        &self,
        prompt: &str,
        text: &str,
        index: usize,
        truncation: Truncation,
    ) -> Result<(String, usize)> {
        let max_words = self.info.max_tokens - 2;
        let prompted = format!("{prompt}{text}");
        let words: Vec<&str> = prompted.split_whitespace().collect();
        if words.len() > max_words && truncation == Truncation::Error {
            return Err(EmbeddingError::TextTooLong {
                index,
                tokens: words.len() + 2,
                max_tokens: self.info.max_tokens,
            });
        }
        let kept = words.len().min(max_words);
        // Hash the prompted text itself (not its words) so texts differing only in
        // whitespace still get different vectors, as in a real tokenizer-based model.
        let key = if kept < words.len() {
            words[..kept].join(" ")
        } else {
            prompted
        };
        Ok((key, kept + 2))
    }

    fn prompt(&self, name: Option<&str>) -> Result<&str> {
        validate::resolve_prompt(
            name,
            |name| self.prompts.get(name).map(String::as_str),
            &self.info.prompts,
        )
    }

    /// The raw (unnormalised, full-dimension) vector of an already prompted and truncated text.
    fn raw_vector(&self, text: &str) -> Vec<f32> {
        let mut state = fnv1a(text.as_bytes());
        (0..self.info.dimension)
            .map(|_| {
                state = splitmix64(state);
                // Uniform in [-1, 1): different texts give unrelated vectors.
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn should_fail(&self, call: u64, request: &EmbedRequest) -> bool {
        match &self.failure {
            FailureMode::Never => false,
            FailureMode::Always => true,
            FailureMode::EveryNth(n) => *n > 0 && call.is_multiple_of(*n),
            FailureMode::WhenTextContains(marker) => {
                request.texts.iter().any(|t| t.contains(marker.as_str()))
            }
        }
    }
}

#[async_trait]
impl EmbeddingProvider for MockEmbeddingProvider {
    async fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if let Ok(mut sizes) = self.seen_batches.lock() {
            sizes.push(request.texts.len());
        }
        let dimension = validate::check_request(&request, &self.info)?;
        let prompt = self.prompt(request.prompt_name.as_deref())?;
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if self.should_fail(call, &request) {
            return Err(EmbeddingError::Inference(format!(
                "injected failure on call {call}"
            )));
        }
        let mut embeddings = Vec::with_capacity(request.texts.len());
        let mut token_counts = Vec::with_capacity(request.texts.len());
        for (index, text) in request.texts.iter().enumerate() {
            let (key, tokens) = self.tokenize(prompt, text, index, request.truncation)?;
            let raw = self.raw_vector(&key);
            embeddings.push(vector::finish(raw, dimension, request.normalize, index)?);
            token_counts.push(tokens);
        }
        Ok(EmbedResponse::new(embeddings, dimension, token_counts))
    }

    async fn token_counts(&self, request: &EmbedRequest) -> Result<Vec<usize>> {
        validate::check_request(request, &self.info)?;
        let prompt = self.prompt(request.prompt_name.as_deref())?;
        request
            .texts
            .iter()
            .enumerate()
            .map(|(index, text)| {
                self.tokenize(prompt, text, index, request.truncation)
                    .map(|(_, tokens)| tokens)
            })
            .collect()
    }

    fn model_info(&self) -> &ModelInfo {
        &self.info
    }

    async fn health_check(&self) -> Result<()> {
        if matches!(self.failure, FailureMode::Always) {
            return Err(EmbeddingError::Inference(
                "injected failure: the mock is set to fail every call".to_string(),
            ));
        }
        Ok(())
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use akidb_embedding_core::vector::cosine;

    #[tokio::test]
    async fn deterministic_and_distinct() {
        let mock = MockEmbeddingProvider::new(32);
        let one = mock.embed(EmbedRequest::new(["alpha"])).await.unwrap();
        let two = mock
            .embed(EmbedRequest::new(["beta", "alpha"]))
            .await
            .unwrap();
        assert_eq!(one.embeddings[0], two.embeddings[1]);
        assert!(cosine(&two.embeddings[0], &two.embeddings[1]) < 0.9);
        assert_eq!(two.count, 2);
        assert_eq!(two.token_counts, vec![3, 3]);
        assert_eq!(two.total_tokens, 6);
    }

    #[tokio::test]
    async fn honours_normalize_dimensions_and_prompts() {
        let mock = MockEmbeddingProvider::new(32);
        let raw = mock
            .embed(EmbedRequest::new(["x"]).with_normalize(false))
            .await
            .unwrap();
        let norm: f32 = raw.embeddings[0].iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() > 1e-3, "raw vectors are not unit norm");
        let small = mock
            .embed(EmbedRequest::new(["x"]).with_dimensions(16))
            .await
            .unwrap();
        assert_eq!(small.dimension, 16);
        let norm: f32 = small.embeddings[0]
            .iter()
            .map(|v| v * v)
            .sum::<f32>()
            .sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        let query = mock
            .embed(EmbedRequest::new(["x"]).with_prompt("query"))
            .await
            .unwrap();
        assert_ne!(
            query.embeddings[0],
            mock.embed(EmbedRequest::new(["x"]))
                .await
                .unwrap()
                .embeddings[0]
        );
        assert!(matches!(
            mock.embed(EmbedRequest::new(["x"]).with_prompt("nope"))
                .await,
            Err(EmbeddingError::UnknownPrompt { .. })
        ));
        assert!(matches!(
            mock.embed(EmbedRequest::new(["x"]).with_dimensions(5))
                .await,
            Err(EmbeddingError::UnsupportedDimension { requested: 5, .. })
        ));
    }

    #[tokio::test]
    async fn truncation_policy() {
        let mock = MockEmbeddingProvider::new(8).with_max_tokens(5);
        let long = "a b c d e f g";
        let cut = mock.embed(EmbedRequest::new([long])).await.unwrap();
        assert_eq!(cut.token_counts, vec![5]);
        let err = mock
            .embed(EmbedRequest::new(["ok", long]).with_truncation(Truncation::Error))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            EmbeddingError::TextTooLong {
                index: 1,
                tokens: 9,
                max_tokens: 5
            }
        );
        // Token counts agree with `embed`, without running it (no call is recorded).
        let calls = mock.batch_sizes().len();
        let counts = mock
            .token_counts(&EmbedRequest::new(["ok", long, "one two"]))
            .await
            .unwrap();
        assert_eq!(counts, vec![3, 5, 4]);
        assert_eq!(
            mock.token_counts(&EmbedRequest::new([long]).with_truncation(Truncation::Error))
                .await,
            Err(EmbeddingError::TextTooLong {
                index: 0,
                tokens: 9,
                max_tokens: 5
            })
        );
        assert_eq!(mock.batch_sizes().len(), calls);
    }

    #[tokio::test]
    async fn injected_failures_and_batches_are_observable() {
        let mock = MockEmbeddingProvider::new(8).with_failures(FailureMode::EveryNth(2));
        assert!(mock.embed(EmbedRequest::new(["a"])).await.is_ok());
        assert!(matches!(
            mock.embed(EmbedRequest::new(["a", "b"])).await,
            Err(EmbeddingError::Inference(_))
        ));
        assert_eq!(mock.batch_sizes(), vec![1, 2]);
        let marked = MockEmbeddingProvider::new(8)
            .with_failures(FailureMode::WhenTextContains("boom".into()));
        assert!(marked.embed(EmbedRequest::new(["fine"])).await.is_ok());
        assert!(marked.embed(EmbedRequest::new(["boom"])).await.is_err());
        assert_eq!(
            mock.embed(EmbedRequest::new(Vec::<String>::new())).await,
            Err(EmbeddingError::EmptyBatch)
        );
    }
}
