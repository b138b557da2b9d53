//! The two halves of embedding a request, and the one place that owns what surrounds them.
//!
//! A request flows one way: [`tokenize`] validates it once, applies its prompt and truncation
//! and returns a [`TokenizedRequest`] (one [`Encoding`] per text plus the request's
//! [`OutputOptions`]); a model run turns a batch of encodings (possibly from several
//! requests) into raw pooled vectors; [`finish`] applies each request's Matryoshka cut and
//! normalisation and refuses non-finite values. Providers implement only the model-specific
//! steps ([`TextEncoder::encode`] and [`crate::EmbeddingProvider::run`]); the ONNX provider,
//! the mock and the service all go through these functions, so no step is repeated anywhere.

use crate::token_span::{self, TokenSpan};
use crate::{EmbedRequest, EmbedResponse, EmbeddingError, ModelInfo, Result, Truncation};
use crate::{validate, vector};

/// One text as a model reads it: token ids after prompt, special tokens and truncation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoding {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Segment ids, one per token (all 0 for a single text), for models that take
    /// `token_type_ids`.
    pub type_ids: Vec<u32>,
}

impl Encoding {
    /// An encoding of a single text (every segment id 0).
    pub fn new(ids: Vec<u32>) -> Self {
        let type_ids = vec![0; ids.len()];
        Self { ids, type_ids }
    }

    /// Number of tokens (what the text counts against token limits).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no tokens (never the case for tokenizers that add special tokens).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// What a request asks of its vectors once the model has run, resolved by validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputOptions {
    /// Output dimension: the model's full dimension or a supported Matryoshka cut.
    pub dimensions: usize,
    /// L2-normalise each vector (after the cut).
    pub normalize: bool,
}

/// A request validated and tokenised once: what a model run and [`finish`] need, and nothing
/// that must be checked again.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedRequest {
    /// One encoding per text, in request order.
    pub encodings: Vec<Encoding>,
    /// How the request's vectors are finished.
    pub output: OutputOptions,
}

impl TokenizedRequest {
    /// Number of texts.
    pub fn len(&self) -> usize {
        self.encodings.len()
    }

    /// True when the request holds no texts (never the case after [`tokenize`]).
    pub fn is_empty(&self) -> bool {
        self.encodings.is_empty()
    }

    /// Tokens of each text, prompt and special tokens included, after truncation.
    pub fn token_counts(&self) -> Vec<usize> {
        self.encodings.iter().map(Encoding::len).collect()
    }

    /// Tokens of all texts together (what per-request token limits count).
    pub fn total_tokens(&self) -> usize {
        self.encodings.iter().map(Encoding::len).sum()
    }
}

/// The model-specific half of [`tokenize`]: a model's prompt table and tokenizer.
///
/// Implementations tokenise; they never validate requests or apply prompts themselves.
pub trait TextEncoder {
    /// The model the encoder belongs to (its dimensions, token limit and prompt names).
    fn model_info(&self) -> &ModelInfo;

    /// The text the prompt `name` prepends, or `None` when the model does not define it.
    fn prompt(&self, name: &str) -> Option<&str>;

    /// Tokenises one text (prompt already prepended). A text over the model's token limit is
    /// cut to its first tokens, or refused with [`EmbeddingError::TextTooLong`] naming `index`
    /// when `truncation` is [`Truncation::Error`]. CPU work: call it off async worker threads
    /// for large texts.
    fn encode(&self, text: &str, truncation: Truncation, index: usize) -> Result<Encoding>;

    /// Tokenises one text like [`TextEncoder::encode`] (same ids, same truncation, same
    /// errors) and tells, for each token, whether it is special and which bytes of `text` it
    /// stands for ([`TokenSpan`], spans into `text`, prompt included: [`token_spans`] maps
    /// them to the caller's text). The default refuses with [`EmbeddingError::Unsupported`]:
    /// an encoder whose tokenizer keeps no offsets need not implement it.
    fn encode_spans(
        &self,
        text: &str,
        truncation: Truncation,
        index: usize,
    ) -> Result<Vec<TokenSpan>> {
        let _ = (text, truncation, index);
        Err(EmbeddingError::Unsupported {
            model: self.model_info().id.clone(),
            capability: "token spans".to_string(),
        })
    }
}

/// Validates `request` against the encoder's model, resolves its prompt and tokenises every
/// prompted text once. The one entry of every request into a model.
pub fn tokenize<E: TextEncoder + ?Sized>(
    encoder: &E,
    request: &EmbedRequest,
) -> Result<TokenizedRequest> {
    let (dimensions, encodings) = each_prompted_text(encoder, request, |prompted, _, index| {
        encoder.encode(prompted, request.truncation, index)
    })?;
    Ok(TokenizedRequest {
        encodings,
        output: OutputOptions {
            dimensions,
            normalize: request.normalize,
        },
    })
}

/// The tokens of each text of `request` as the model reads them, with their spans in the
/// caller's texts: validated, prompted and truncated exactly as [`tokenize`] does (the ids are
/// those [`tokenize`] gives), through [`TextEncoder::encode_spans`]. Tokens of the prompt are
/// [`TokenKind::Prompt`](crate::TokenKind::Prompt) without a span; other spans are byte
/// offsets into the caller's text (see [`crate::token_span`]).
pub fn token_spans<E: TextEncoder + ?Sized>(
    encoder: &E,
    request: &EmbedRequest,
) -> Result<Vec<Vec<TokenSpan>>> {
    let (_, spans) = each_prompted_text(encoder, request, |prompted, prompt, index| {
        let tokens = encoder.encode_spans(prompted, request.truncation, index)?;
        let text = request.texts.get(index).map_or("", String::as_str);
        Ok(token_span::relative_to_text(tokens, prompt, text))
    })?;
    Ok(spans)
}

/// What [`tokenize`] and [`token_spans`] share: validates `request` (giving its output
/// dimension), resolves its prompt, and calls `each` with every prompted text, the prompt
/// and the text's position.
fn each_prompted_text<E: TextEncoder + ?Sized, T>(
    encoder: &E,
    request: &EmbedRequest,
    mut each: impl FnMut(&str, &str, usize) -> Result<T>,
) -> Result<(usize, Vec<T>)> {
    let info = encoder.model_info();
    let dimensions = validate::check_request(request, info)?;
    let prompt = validate::resolve_prompt(
        request.prompt_name.as_deref(),
        |name| encoder.prompt(name),
        &info.prompts,
    )?;
    let mut prompted = String::new();
    let results = request
        .texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let text = if prompt.is_empty() {
                text.as_str()
            } else {
                prompted.clear();
                prompted.push_str(prompt);
                prompted.push_str(text);
                prompted.as_str()
            };
            each(text, prompt, index)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((dimensions, results))
}

/// Turns a run's raw vectors for one request into its response: the Matryoshka cut,
/// normalisation and the non-finite check ([`vector::finish`]), with `token_counts` (from the
/// request's encodings) alongside. Fails when the run gave a different number of vectors.
pub fn finish(
    raw: Vec<Vec<f32>>,
    token_counts: Vec<usize>,
    output: OutputOptions,
) -> Result<EmbedResponse> {
    if raw.len() != token_counts.len() {
        return Err(EmbeddingError::Inference(format!(
            "the model returned {} vectors for {} texts",
            raw.len(),
            token_counts.len()
        )));
    }
    let embeddings = raw
        .into_iter()
        .enumerate()
        .map(|(index, vector)| vector::finish(vector, output.dimensions, output.normalize, index))
        .collect::<Result<Vec<_>>>()?;
    Ok(EmbedResponse::new(
        embeddings,
        output.dimensions,
        token_counts,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// One token per byte, plus two special tokens; a four-token limit.
    struct Bytes {
        info: ModelInfo,
        prompts: BTreeMap<String, String>,
        calls: AtomicUsize,
    }

    impl Bytes {
        fn new() -> Self {
            Self {
                info: ModelInfo {
                    id: "bytes".into(),
                    dimension: 4,
                    max_tokens: 6,
                    dimensions: vec![4, 2],
                    prompts: vec!["q".into()],
                },
                prompts: [("q".to_string(), "Q".to_string())].into(),
                calls: AtomicUsize::new(0),
            }
        }
    }

    impl TextEncoder for Bytes {
        fn model_info(&self) -> &ModelInfo {
            &self.info
        }
        fn prompt(&self, name: &str) -> Option<&str> {
            self.prompts.get(name).map(String::as_str)
        }
        fn encode(&self, text: &str, truncation: Truncation, index: usize) -> Result<Encoding> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut ids: Vec<u32> = text.bytes().map(u32::from).collect();
            let limit = self.info.max_tokens - 2;
            if ids.len() > limit {
                if truncation == Truncation::Error {
                    return Err(EmbeddingError::TextTooLong {
                        index,
                        tokens: ids.len() + 2,
                        max_tokens: self.info.max_tokens,
                    });
                }
                ids.truncate(limit);
            }
            ids.insert(0, 1);
            ids.push(2);
            Ok(Encoding::new(ids))
        }
        /// One token per byte of the text, its span that byte.
        fn encode_spans(
            &self,
            text: &str,
            truncation: Truncation,
            index: usize,
        ) -> Result<Vec<TokenSpan>> {
            let ids = self.encode(text, truncation, index)?.ids;
            let last = ids.len() - 1;
            Ok(ids
                .into_iter()
                .enumerate()
                .map(|(at, id)| match at {
                    0 => TokenSpan::special(id, "<s>"),
                    _ if at == last => TokenSpan::special(id, "</s>"),
                    _ => TokenSpan::text(id, char::from(id as u8).to_string(), at - 1..at),
                })
                .collect())
        }
    }

    /// An encoder that keeps no offsets.
    struct NoSpans(Bytes);

    impl TextEncoder for NoSpans {
        fn model_info(&self) -> &ModelInfo {
            &self.0.info
        }
        fn prompt(&self, name: &str) -> Option<&str> {
            self.0.prompt(name)
        }
        fn encode(&self, text: &str, truncation: Truncation, index: usize) -> Result<Encoding> {
            self.0.encode(text, truncation, index)
        }
    }

    #[test]
    fn token_spans_follow_tokenize_and_refer_to_the_callers_text() {
        use crate::TokenKind;
        let encoder = Bytes::new();
        let request = EmbedRequest::new(["ab", "abcdefgh"]).with_prompt("q");
        let spans = token_spans(&encoder, &request).unwrap();
        let tokenized = tokenize(&encoder, &request).unwrap();
        for (tokens, encoding) in spans.iter().zip(&tokenized.encodings) {
            let ids: Vec<u32> = tokens.iter().map(|t| t.id).collect();
            assert_eq!(ids, encoding.ids, "the ids embedding uses");
        }
        let kinds: Vec<TokenKind> = spans[0].iter().map(|t| t.kind).collect();
        assert_eq!(
            kinds,
            [
                TokenKind::Special,
                TokenKind::Prompt,
                TokenKind::Text,
                TokenKind::Text,
                TokenKind::Special
            ]
        );
        assert_eq!(spans[0][2].slice("ab"), Some("a"));
        assert_eq!(spans[0][3].span, Some(1..2));
        // Truncated like embedding: "Q" + 3 of the 8 bytes fit the 6-token limit.
        assert_eq!(spans[1].len(), 6);
        assert_eq!(spans[1][4].slice("abcdefgh"), Some("c"));
        // Validation and truncation errors are the embedding path's.
        let strict = EmbedRequest::new(["too long"]).with_truncation(Truncation::Error);
        assert_eq!(
            token_spans(&encoder, &strict).unwrap_err(),
            tokenize(&encoder, &strict).unwrap_err()
        );
        assert!(
            token_spans(&encoder, &EmbedRequest::new(["a"]).with_prompt("nope"))
                .unwrap_err()
                .is_invalid_input()
        );
    }

    #[test]
    fn encoders_without_offsets_say_so() {
        let encoder = NoSpans(Bytes::new());
        let err = token_spans(&encoder, &EmbedRequest::new(["a"])).unwrap_err();
        assert_eq!(
            err,
            EmbeddingError::Unsupported {
                model: "bytes".into(),
                capability: "token spans".into()
            }
        );
        assert!(tokenize(&encoder, &EmbedRequest::new(["a"])).is_ok());
    }

    #[test]
    fn tokenize_validates_prompts_and_encodes_each_text_once() {
        let encoder = Bytes::new();
        let request = EmbedRequest::new(["ab", "abcdefgh"])
            .with_prompt("q")
            .with_dimensions(2)
            .with_normalize(false);
        let tokenized = tokenize(&encoder, &request).unwrap();
        assert_eq!(encoder.calls.load(Ordering::SeqCst), 2);
        assert_eq!(tokenized.encodings[0].ids, vec![1, 81, 97, 98, 2]);
        assert_eq!(tokenized.token_counts(), vec![5, 6]);
        assert_eq!(tokenized.total_tokens(), 11);
        assert_eq!(
            tokenized.output,
            OutputOptions {
                dimensions: 2,
                normalize: false
            }
        );
        assert_eq!(tokenized.encodings[1].type_ids, vec![0; 6]);
    }

    #[test]
    fn tokenize_refuses_bad_requests_before_any_text_is_encoded() {
        let encoder = Bytes::new();
        for request in [
            EmbedRequest::new(Vec::<String>::new()),
            EmbedRequest::new(["a"]).with_dimensions(3),
            EmbedRequest::new(["a"]).with_prompt("nope"),
        ] {
            assert!(tokenize(&encoder, &request).unwrap_err().is_invalid_input());
        }
        assert_eq!(encoder.calls.load(Ordering::SeqCst), 0);
        let strict = EmbedRequest::new(["ok", "too long"]).with_truncation(Truncation::Error);
        assert_eq!(
            tokenize(&encoder, &strict),
            Err(EmbeddingError::TextTooLong {
                index: 1,
                tokens: 10,
                max_tokens: 6
            })
        );
    }

    #[test]
    fn finish_cuts_normalises_and_checks_counts() {
        let output = OutputOptions {
            dimensions: 2,
            normalize: true,
        };
        let response = finish(vec![vec![3.0, 4.0, 9.0]], vec![7], output).unwrap();
        assert_eq!(response.embeddings, vec![vec![0.6, 0.8]]);
        assert_eq!((response.count(), response.total_tokens()), (1, 7));
        assert!(matches!(
            finish(vec![vec![1.0; 3]], vec![1, 2], output),
            Err(EmbeddingError::Inference(_))
        ));
        let err = finish(
            vec![vec![1.0, 1.0], vec![f32::NAN, 0.0]],
            vec![1, 1],
            output,
        )
        .unwrap_err();
        assert!(err.to_string().contains("text 1"), "{err}");
    }
}
