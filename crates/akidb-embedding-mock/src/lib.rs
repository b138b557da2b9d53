//! A deterministic [`EmbeddingProvider`] for tests of code that consumes the trait.
//!
//! The same text always gives the same vector, different texts give different vectors, and the
//! request options (`normalize`, `dimensions`, prompts, truncation) behave as in the real
//! providers, so a service can be tested end to end without a model: requests go through the
//! same core pipeline ([`akidb_embedding_core::pipeline`]), one word per token.
//! Latency and failures ([`FailureMode`]: errors, panics, limits only the model run finds) can
//! be injected into model runs to test timeouts and error paths, and
//! [`MockEmbeddingProvider::tokenizer_calls`] and [`MockEmbeddingProvider::batch_sizes`] show
//! how often a consumer tokenised and how it batched.
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

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use akidb_embedding_core::{
    EmbedRequest, EmbeddingError, EmbeddingProvider, Encoding, ModelInfo, Result, TextEncoder,
    TokenSpan, TokenizedRequest, Truncation, pipeline,
};
use async_trait::async_trait;

/// Which requests an injected failure hits, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureMode {
    /// Never fail.
    Never,
    /// Fail every model run (and so every health check).
    Always,
    /// Fail every n-th model run (1-based: `EveryNth(3)` fails runs 3, 6, 9, …).
    EveryNth(u64),
    /// Fail any model run that holds a text containing this marker.
    WhenTextContains(String),
    /// Panic (a provider bug) in any model run that holds a text containing this marker.
    PanicWhenTextContains(String),
    /// Under-count at tokenisation: over-long texts pass [`EmbeddingProvider::tokenize`]
    /// untruncated and unrefused, whatever the request's truncation, and the model run refuses
    /// them with [`EmbeddingError::TextTooLong`] naming their position in the run: a provider
    /// whose limits only the model finds.
    UnderCountTokens,
}

/// Deterministic provider: one token per whitespace-separated word plus two special tokens,
/// vectors derived from a hash of the token ids (so of the prompted, truncated text).
#[derive(Debug)]
pub struct MockEmbeddingProvider {
    info: ModelInfo,
    prompts: BTreeMap<String, String>,
    latency: Duration,
    latency_per_token: Duration,
    failure: FailureMode,
    calls: AtomicU64,
    tokenizer_calls: AtomicU64,
    seen_batches: Mutex<Vec<usize>>,
    /// Fingerprints of the encodings of texts that hold the failure marker.
    marked: Mutex<HashSet<u64>>,
}

/// Id of the token that opens every text.
const BOS_ID: u32 = 1;
/// Id of the token that closes a text without trailing whitespace.
const EOS_ID: u32 = 2;

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
            latency_per_token: Duration::ZERO,
            failure: FailureMode::Never,
            calls: AtomicU64::new(0),
            tokenizer_calls: AtomicU64::new(0),
            seen_batches: Mutex::new(Vec::new()),
            marked: Mutex::new(HashSet::new()),
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
        self.info.max_tokens = max_tokens.max(3);
        self
    }

    /// Waits this long in every model run (without blocking the async runtime).
    #[must_use]
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Also waits this long per padded token in every model run (texts × the run's longest
    /// text, as a real model pays for padding): a double whose runs cost what a real model's
    /// would, for load tests.
    #[must_use]
    pub fn with_latency_per_token(mut self, latency: Duration) -> Self {
        self.latency_per_token = latency;
        self
    }

    /// Injects failures (see [`FailureMode`]).
    #[must_use]
    pub fn with_failures(mut self, failure: FailureMode) -> Self {
        self.failure = failure;
        self
    }

    /// How many model runs there have been ([`EmbeddingProvider::run`] calls, `embed`
    /// included).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// How many texts have been tokenised: a request of n texts tokenised once counts n.
    pub fn tokenizer_calls(&self) -> u64 {
        self.tokenizer_calls.load(Ordering::SeqCst)
    }

    /// The batch sizes of every model run so far, in call order (lets tests check batching).
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

    /// The raw (unnormalised, full-dimension) vector of an encoding.
    fn raw_vector(&self, encoding: &Encoding) -> Vec<f32> {
        let mut state = fingerprint(encoding);
        (0..self.info.dimension)
            .map(|_| {
                state = splitmix64(state);
                // Uniform in [-1, 1): different texts give unrelated vectors.
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn marker(&self) -> Option<&str> {
        match &self.failure {
            FailureMode::WhenTextContains(marker) | FailureMode::PanicWhenTextContains(marker) => {
                Some(marker)
            }
            _ => None,
        }
    }

    fn holds_marked(&self, batch: &[Encoding]) -> bool {
        self.marked
            .lock()
            .is_ok_and(|marked| batch.iter().any(|e| marked.contains(&fingerprint(e))))
    }
}

impl TextEncoder for MockEmbeddingProvider {
    fn model_info(&self) -> &ModelInfo {
        &self.info
    }

    fn prompt(&self, name: &str) -> Option<&str> {
        self.prompts.get(name).map(String::as_str)
    }

    /// One id per word (a hash of the word and the whitespace before it, so texts that differ
    /// only in whitespace get different vectors, as with a real tokenizer), between a start
    /// token and an end token that carries any trailing whitespace.
    fn encode(&self, text: &str, truncation: Truncation, index: usize) -> Result<Encoding> {
        self.tokenizer_calls.fetch_add(1, Ordering::SeqCst);
        let ids = self
            .split(text, truncation, index)?
            .into_iter()
            .map(|token| token.id)
            .collect();
        let encoding = Encoding::new(ids);
        if let Some(marker) = self.marker()
            && text.contains(marker)
            && let Ok(mut marked) = self.marked.lock()
        {
            marked.insert(fingerprint(&encoding));
        }
        Ok(encoding)
    }

    /// The tokens [`TextEncoder::encode`] gives, with spans: each word token stands for the
    /// word and the whitespace before it, a closing whitespace token for that whitespace.
    fn encode_spans(
        &self,
        text: &str,
        truncation: Truncation,
        index: usize,
    ) -> Result<Vec<TokenSpan>> {
        self.tokenizer_calls.fetch_add(1, Ordering::SeqCst);
        self.split(text, truncation, index)
    }
}

impl MockEmbeddingProvider {
    /// The mock's tokenizer: the start token, one token per word (with the whitespace before
    /// it), then the end token, or a token for trailing whitespace; truncated or refused at
    /// the token limit.
    fn split(&self, text: &str, truncation: Truncation, index: usize) -> Result<Vec<TokenSpan>> {
        let max_words = self.info.max_tokens - 2;
        let words = text.split_whitespace().count();
        let check = self.failure != FailureMode::UnderCountTokens;
        if check && words > max_words && truncation == Truncation::Error {
            return Err(EmbeddingError::TextTooLong {
                index,
                tokens: words + 2,
                max_tokens: self.info.max_tokens,
            });
        }
        let kept = if check { words.min(max_words) } else { words };
        // Cutting the start reads every word and keeps the last ones.
        let skipped = if truncation == Truncation::TruncateStart {
            words - kept
        } else {
            0
        };
        let mut tokens = Vec::with_capacity(kept + 2);
        tokens.push(TokenSpan::special(BOS_ID, "<s>"));
        let mut at = 0;
        for word in 0..skipped + kept {
            let rest = &text[at..];
            let start = rest
                .find(|c: char| !c.is_whitespace())
                .unwrap_or(rest.len());
            let end = rest[start..]
                .find(char::is_whitespace)
                .map_or(rest.len(), |offset| start + offset);
            let piece = &rest[..end];
            if word >= skipped {
                tokens.push(TokenSpan::text(word_id(piece), piece, at..at + end));
            }
            at += end;
        }
        let rest = &text[at..];
        tokens.push(if kept < words || rest.is_empty() {
            TokenSpan::special(EOS_ID, "</s>")
        } else {
            TokenSpan::text(word_id(rest), rest, at..text.len())
        });
        Ok(tokens)
    }
}

#[async_trait]
impl EmbeddingProvider for MockEmbeddingProvider {
    fn model_info(&self) -> &ModelInfo {
        &self.info
    }

    async fn tokenize(&self, request: EmbedRequest) -> Result<TokenizedRequest> {
        // Splitting on whitespace is cheap enough for the calling task.
        pipeline::tokenize(self, &request)
    }

    async fn token_spans(&self, request: EmbedRequest) -> Result<Vec<Vec<TokenSpan>>> {
        pipeline::token_spans(self, &request)
    }

    async fn run(&self, batch: Vec<Encoding>) -> Result<Vec<Vec<f32>>> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if let Ok(mut sizes) = self.seen_batches.lock() {
            sizes.push(batch.len());
        }
        let longest = batch.iter().map(Encoding::len).max().unwrap_or(0);
        let padded = u32::try_from(batch.len() * longest).unwrap_or(u32::MAX);
        let latency = self.latency + self.latency_per_token.saturating_mul(padded);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let injected = || {
            Err(EmbeddingError::Inference(format!(
                "injected failure on run {call}"
            )))
        };
        match &self.failure {
            FailureMode::Never => {}
            FailureMode::Always => return injected(),
            FailureMode::EveryNth(n) => {
                if *n > 0 && call.is_multiple_of(*n) {
                    return injected();
                }
            }
            FailureMode::WhenTextContains(_) => {
                if self.holds_marked(&batch) {
                    return injected();
                }
            }
            FailureMode::PanicWhenTextContains(_) => {
                assert!(
                    !self.holds_marked(&batch),
                    "a provider bug, triggered on purpose (run {call})"
                );
            }
            FailureMode::UnderCountTokens => {
                if let Some((index, encoding)) = batch
                    .iter()
                    .enumerate()
                    .find(|(_, e)| e.len() > self.info.max_tokens)
                {
                    return Err(EmbeddingError::TextTooLong {
                        index,
                        tokens: encoding.len(),
                        max_tokens: self.info.max_tokens,
                    });
                }
            }
        }
        Ok(batch.iter().map(|e| self.raw_vector(e)).collect())
    }

    /// Healthy unless every run fails; unlike the real providers, runs nothing, so health
    /// probes never show up in [`MockEmbeddingProvider::batch_sizes`].
    async fn health_check(&self) -> Result<()> {
        if matches!(self.failure, FailureMode::Always) {
            return Err(EmbeddingError::Inference(
                "injected failure: the mock is set to fail every run".to_string(),
            ));
        }
        Ok(())
    }
}

fn word_id(word: &str) -> u32 {
    // Folded to 32 bits, kept clear of the special ids.
    let hash = fnv1a(word.as_bytes());
    ((hash ^ (hash >> 32)) as u32).max(EOS_ID + 1)
}

fn fingerprint(encoding: &Encoding) -> u64 {
    encoding.ids.iter().fold(0xcbf2_9ce4_8422_2325, |hash, id| {
        id.to_le_bytes().iter().fold(hash, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        })
    })
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
        assert_eq!(two.count(), 2);
        assert_eq!(two.token_counts, vec![3, 3]);
        assert_eq!(two.total_tokens(), 6);
        // Whitespace matters, as with a real tokenizer; the word count alone does not.
        let spaced = mock
            .embed(EmbedRequest::new([
                "alpha ",
                " alpha",
                "alpha  beta",
                "alpha beta",
            ]))
            .await
            .unwrap();
        for (i, a) in spaced.embeddings.iter().enumerate() {
            assert_ne!(a, &one.embeddings[0]);
            for b in &spaced.embeddings[i + 1..] {
                assert_ne!(a, b);
            }
        }
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
        // Tokenising counts what `embed` counts, without running the model (no run is recorded),
        // and a truncated text embeds as its first words.
        let first_words = mock.embed(EmbedRequest::new(["a b c"])).await.unwrap();
        assert_eq!(cut.embeddings, first_words.embeddings);
        // Cutting the start keeps the last words (each with the space before it).
        let end = mock
            .embed(EmbedRequest::new([long]).with_truncation(Truncation::TruncateStart))
            .await
            .unwrap();
        let last_words = mock.embed(EmbedRequest::new([" e f g"])).await.unwrap();
        assert_eq!(end.embeddings, last_words.embeddings);
        assert_ne!(end.embeddings, cut.embeddings);
        let calls = mock.batch_sizes().len();
        let tokenized = mock
            .tokenize(EmbedRequest::new(["ok", long, "one two"]))
            .await
            .unwrap();
        assert_eq!(tokenized.token_counts(), vec![3, 5, 4]);
        assert_eq!(
            mock.tokenize(EmbedRequest::new([long]).with_truncation(Truncation::Error))
                .await
                .map(|t| t.token_counts()),
            Err(EmbeddingError::TextTooLong {
                index: 0,
                tokens: 9,
                max_tokens: 5
            })
        );
        assert_eq!(mock.batch_sizes().len(), calls);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_per_token_is_paid_per_padded_token() {
        let mock = MockEmbeddingProvider::new(8).with_latency_per_token(Duration::from_millis(2));
        let started = tokio::time::Instant::now();
        // Padded to the longer text: 2 texts × 7 tokens × 2 ms = 28 ms.
        let response = mock
            .embed(EmbedRequest::new(["one", "a b c d e"]))
            .await
            .unwrap();
        assert_eq!(response.token_counts, vec![3, 7]);
        assert_eq!(started.elapsed(), Duration::from_millis(28));
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

    #[tokio::test]
    async fn each_text_is_tokenised_once_per_request() {
        let mock = MockEmbeddingProvider::new(8);
        mock.embed(EmbedRequest::new(["a", "b c", "d"]).with_prompt("query"))
            .await
            .unwrap();
        assert_eq!(mock.tokenizer_calls(), 3);
        // Refused before tokenising: an unknown prompt costs no tokenizer call.
        assert!(
            mock.embed(EmbedRequest::new(["a"]).with_prompt("nope"))
                .await
                .is_err()
        );
        assert_eq!(mock.tokenizer_calls(), 3);
    }

    #[tokio::test]
    async fn a_marked_text_makes_its_run_panic() {
        let mock = std::sync::Arc::new(
            MockEmbeddingProvider::new(8)
                .with_failures(FailureMode::PanicWhenTextContains("panic".into())),
        );
        assert!(mock.embed(EmbedRequest::new(["calm"])).await.is_ok());
        let task = {
            let mock = std::sync::Arc::clone(&mock);
            tokio::spawn(async move { mock.embed(EmbedRequest::new(["a", "do panic"])).await })
        };
        assert!(task.await.unwrap_err().is_panic());
    }

    #[tokio::test]
    async fn under_counted_texts_are_refused_by_the_run_naming_their_place_in_it() {
        let mock = MockEmbeddingProvider::new(8)
            .with_max_tokens(4)
            .with_failures(FailureMode::UnderCountTokens);
        let strict = EmbedRequest::new(["ok", "a b c d"]).with_truncation(Truncation::Error);
        let tokenized = mock.tokenize(strict).await.unwrap();
        assert_eq!(tokenized.token_counts(), vec![3, 6]);
        let mut batch = vec![Encoding::new(vec![1, 5, 2])];
        batch.extend(tokenized.encodings);
        assert_eq!(
            mock.run(batch).await,
            Err(EmbeddingError::TextTooLong {
                index: 2,
                tokens: 6,
                max_tokens: 4
            })
        );
    }

    #[tokio::test]
    async fn token_spans_are_the_embedding_tokens_with_their_text() {
        use akidb_embedding_core::TokenKind;
        let mock = MockEmbeddingProvider::new(8).with_max_tokens(5);
        let texts = ["  héllo 東京  ", "a b c d e"];
        for prompt in [None, Some("query")] {
            let mut request = EmbedRequest::new(texts);
            request.prompt_name = prompt.map(str::to_string);
            let spans = mock.token_spans(request.clone()).await.unwrap();
            let tokenized = mock.tokenize(request).await.unwrap();
            for ((text, tokens), encoding) in texts.iter().zip(&spans).zip(&tokenized.encodings) {
                let ids: Vec<u32> = tokens.iter().map(|t| t.id).collect();
                assert_eq!(ids, encoding.ids, "{text:?} with prompt {prompt:?}");
                for token in tokens.iter().filter(|t| t.kind == TokenKind::Text) {
                    let slice = token.slice(text).unwrap();
                    // The mock's token is the text it stands for, but for the prompt's part.
                    assert!(token.token.ends_with(slice), "{token:?} in {text:?}");
                }
            }
            let kinds: Vec<TokenKind> = spans[0].iter().map(|t| t.kind).collect();
            let expected: &[TokenKind] = match prompt {
                None => &[
                    TokenKind::Special,
                    TokenKind::Text,
                    TokenKind::Text,
                    TokenKind::Text,
                ],
                // "query:" is the prompt's; the prompt's space goes with "héllo".
                Some(_) => &[
                    TokenKind::Special,
                    TokenKind::Prompt,
                    TokenKind::Text,
                    TokenKind::Text,
                    TokenKind::Text,
                ],
            };
            assert_eq!(kinds, expected, "prompt {prompt:?}");
        }
        let spans = mock
            .token_spans(EmbedRequest::new(["  héllo 東京  "]))
            .await
            .unwrap();
        let text = "  héllo 東京  ";
        let slices: Vec<&str> = spans[0].iter().filter_map(|t| t.slice(text)).collect();
        assert_eq!(slices, ["  héllo", " 東京", "  "]);
        // Truncated at the limit, like embedding: 3 words, then the end token.
        let spans = mock
            .token_spans(EmbedRequest::new(["a b c d e"]))
            .await
            .unwrap();
        assert_eq!(spans[0].len(), 5);
        assert!(spans[0][4].is_special());
    }
}
