//! Tokenisation with the model's own tokenizer, sentence-transformers semantics: the
//! tokenizer's special tokens, truncation at the model's cap (special tokens included), no
//! padding (batches are padded to their longest text when tensors are built).
//!
//! Truncation and padding settings baked into `tokenizer.json` are overridden: the MiniLM
//! file, for one, truncates at 128 and pads every text to 128, which would give different
//! vectors than the reference.
//!
//! Truncation means truncation: any text, however long, is embedded from its first tokens.
//! To keep a hostile text (megabytes in one request) from costing its full tokenisation,
//! a text to be truncated is first tokenised only up to a byte budget that covers the cap:
//! every token stands for at most [`TextTokenizer::max_token_bytes`] bytes of text (the
//! longest vocabulary entry; byte fallback gives one token per byte at worst), so the first
//! `cap + PREFIX_MARGIN_TOKENS` tokens lie within `(cap + PREFIX_MARGIN_TOKENS) × that` bytes.
//! When the prefix nevertheless holds fewer tokens than that (text whose characters the
//! normaliser drops), the whole text is tokenised: the guard never changes a result.
//!
//! [`Truncation::TruncateStart`] (keep the last tokens) reads a bounded end of the text the
//! same way, and a refusal under [`Truncation::Error`] reads the same bounded prefix: a text
//! whose prefix is already over the cap is refused with the prefix's token count (a lower
//! bound), never by tokenising megabytes to count them exactly.
//!
//! [`TextTokenizer::encode_spans`] takes the very same path with the tokenizer's byte offsets
//! computed (`Tokenizer::encode` instead of `encode_fast`, which skips them), so the tokens it
//! describes are exactly those [`TextTokenizer::encode`] gives.

use std::path::Path;

use akidb_embedding_core::{EmbeddingError, Encoding, Result, TokenSpan, Truncation};
use tokenizers::Model as _;
use tokenizers::{Tokenizer, TruncationDirection};

/// Tokens past the cap a prefix must yield before its first tokens are trusted to be those of
/// the whole text (a cut changes at most the tokens of the piece it falls in).
pub const PREFIX_MARGIN_TOKENS: usize = 64;

/// A tokenizer bound to a model's token limit.
#[derive(Debug)]
pub struct TextTokenizer {
    tokenizer: Tokenizer,
    max_tokens: usize,
    special_tokens: usize,
    max_token_bytes: usize,
    pad_id: u32,
    embedding_rows: Option<usize>,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` and binds it to `max_tokens`.
    pub fn from_file(path: &Path, max_tokens: usize) -> Result<Self> {
        let (tokenizer, reader) = crate::tokenizer_file::load(path).map_err(|e| {
            EmbeddingError::model_load(path.display(), format!("invalid tokenizer: {e}"))
        })?;
        tracing::debug!(path = %path.display(), ?reader, "tokenizer read");
        Self::new(tokenizer, max_tokens).map_err(|e| match e {
            EmbeddingError::ModelLoad { reason, .. } => {
                EmbeddingError::model_load(path.display(), reason)
            }
            other => other,
        })
    }

    /// Binds an already loaded tokenizer to `max_tokens`, overriding its own truncation and
    /// padding settings.
    pub fn new(mut tokenizer: Tokenizer, max_tokens: usize) -> Result<Self> {
        // Read the pad id before dropping the padding settings that carry it.
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| {
                ["<pad>", "[PAD]", "<|pad|>"]
                    .iter()
                    .find_map(|t| tokenizer.token_to_id(t))
            })
            .unwrap_or(0);
        tokenizer.with_truncation(None).map_err(|e| {
            EmbeddingError::model_load(TOKENIZER, format!("cannot reset truncation: {e}"))
        })?;
        tokenizer.with_padding(None);
        let special_tokens = tokenizer
            .get_post_processor()
            .map(|p| tokenizers::PostProcessor::added_tokens(p, false))
            .unwrap_or(0);
        if max_tokens <= special_tokens {
            return Err(EmbeddingError::model_load(
                TOKENIZER,
                format!(
                    "a token limit of {max_tokens} leaves no room beside the {special_tokens} special tokens"
                ),
            ));
        }
        let max_token_bytes = longest_token_bytes(&tokenizer);
        Ok(Self {
            tokenizer,
            max_tokens,
            special_tokens,
            max_token_bytes,
            pad_id,
            embedding_rows: None,
        })
    }

    /// Tokenises `text` (prompt already prepended). Over-long texts are cut at the limit, or
    /// refused with [`EmbeddingError::TextTooLong`] naming `index` and the text's full token
    /// count when `truncation` says so.
    pub fn encode(&self, text: &str, truncation: Truncation, index: usize) -> Result<Encoding> {
        let (encoding, _) = self.encode_with(text, truncation, index, Offsets::None)?;
        Ok(Encoding {
            ids: encoding.get_ids().to_vec(),
            type_ids: encoding.get_type_ids().to_vec(),
        })
    }

    /// Tokenises `text` exactly as [`TextTokenizer::encode`] does (the same ids, the same
    /// truncation and errors) and keeps where each token came from: special tokens (the
    /// tokenizer's special-tokens mask) have no span, every other token the byte offsets of
    /// `text` it stands for, as the tokenizer reports them (`Tokenizer::encode`, byte offsets
    /// into the original text, normalisation undone), widened to character boundaries.
    pub fn encode_spans(
        &self,
        text: &str,
        truncation: Truncation,
        index: usize,
    ) -> Result<Vec<TokenSpan>> {
        let (encoding, base) = self.encode_with(text, truncation, index, Offsets::Bytes)?;
        Ok(encoding
            .get_ids()
            .iter()
            .zip(encoding.get_tokens())
            .zip(encoding.get_offsets())
            .zip(encoding.get_special_tokens_mask())
            .map(|(((&id, token), &(start, end)), &special)| {
                if special == 1 {
                    TokenSpan::special(id, token.as_str())
                } else {
                    let start = text.floor_char_boundary(base + start);
                    let end = text.ceil_char_boundary((base + end).max(start));
                    TokenSpan::text(id, token.as_str(), start..end)
                }
            })
            .collect())
    }

    /// The one tokenisation path of [`TextTokenizer::encode`] and
    /// [`TextTokenizer::encode_spans`]: only whether offsets are computed differs. Also gives
    /// where in `text` the tokenised part starts (offsets are relative to it).
    fn encode_with(
        &self,
        text: &str,
        truncation: Truncation,
        index: usize,
        offsets: Offsets,
    ) -> Result<(tokenizers::Encoding, usize)> {
        // A refusal reads no more than a cut does: a text whose first part is already over
        // the limit is refused on that part's count (a lower bound).
        let (mut content, base) = match truncation {
            Truncation::Truncate | Truncation::Error => {
                (self.encode_first_tokens(text, index, offsets)?, 0)
            }
            Truncation::TruncateStart => self.encode_last_tokens(text, index, offsets)?,
        };
        let total = content.len() + self.special_tokens;
        if total > self.max_tokens {
            let direction = match truncation {
                Truncation::Error => {
                    return Err(EmbeddingError::TextTooLong {
                        index,
                        tokens: total,
                        max_tokens: self.max_tokens,
                    });
                }
                Truncation::Truncate => TruncationDirection::Right,
                Truncation::TruncateStart => TruncationDirection::Left,
            };
            content.truncate(self.max_tokens - self.special_tokens, 0, direction);
        }
        let encoding: tokenizers::Encoding = self
            .tokenizer
            .post_process(content, None, true)
            .map_err(|e| {
                EmbeddingError::InvalidInput(format!("cannot tokenise text {index}: {e}"))
            })?;
        if let Some(rows) = self.embedding_rows
            && let Some(&id) = encoding.get_ids().iter().find(|&&id| id as usize >= rows)
        {
            return Err(EmbeddingError::InvalidInput(format!(
                "text {index} contains the token `{}` (id {id}), which this model cannot embed",
                self.tokenizer.id_to_token(id).unwrap_or_default()
            )));
        }
        Ok((encoding, base))
    }

    /// Tokenises no more of `text` than its first `max_tokens` tokens can come from (see the
    /// module documentation); the result holds at least those tokens, exactly as the whole
    /// text would give them.
    fn encode_first_tokens(
        &self,
        text: &str,
        index: usize,
        offsets: Offsets,
    ) -> Result<tokenizers::Encoding> {
        let wanted = self.max_tokens - self.special_tokens + PREFIX_MARGIN_TOKENS;
        let budget = wanted.saturating_mul(self.max_token_bytes);
        if text.len() <= budget {
            return self.encode_content(text, index, offsets);
        }
        // A prefix's offsets are offsets into the whole text: it starts where the text does.
        let prefix = &text[..text.floor_char_boundary(budget)];
        let encoding = self.encode_content(prefix, index, offsets)?;
        if encoding.len() >= wanted {
            return Ok(encoding);
        }
        tracing::debug!(
            index,
            bytes = text.len(),
            prefix_tokens = encoding.len(),
            "few tokens per byte: tokenising the whole text"
        );
        self.encode_content(text, index, offsets)
    }

    /// The mirror of [`Self::encode_first_tokens`] for [`Truncation::TruncateStart`]:
    /// tokenises no more of `text` than its last `max_tokens` tokens can come from, and says
    /// where the tokenised end starts.
    fn encode_last_tokens(
        &self,
        text: &str,
        index: usize,
        offsets: Offsets,
    ) -> Result<(tokenizers::Encoding, usize)> {
        let wanted = self.max_tokens - self.special_tokens + PREFIX_MARGIN_TOKENS;
        let budget = wanted.saturating_mul(self.max_token_bytes);
        if text.len() <= budget {
            return Ok((self.encode_content(text, index, offsets)?, 0));
        }
        let start = text.ceil_char_boundary(text.len() - budget);
        let encoding = self.encode_content(&text[start..], index, offsets)?;
        if encoding.len() >= wanted {
            return Ok((encoding, start));
        }
        tracing::debug!(
            index,
            bytes = text.len(),
            suffix_tokens = encoding.len(),
            "few tokens per byte: tokenising the whole text"
        );
        Ok((self.encode_content(text, index, offsets)?, 0))
    }

    fn encode_content(
        &self,
        text: &str,
        index: usize,
        offsets: Offsets,
    ) -> Result<tokenizers::Encoding> {
        let encoded = match offsets {
            Offsets::None => self.tokenizer.encode_fast(text, false),
            Offsets::Bytes => self.tokenizer.encode(text, false),
        };
        encoded
            .map_err(|e| EmbeddingError::InvalidInput(format!("cannot tokenise text {index}: {e}")))
    }

    /// Most bytes of text one token stands for: the longest vocabulary entry, with the
    /// tokenizer's own markers (`▁` for a space, `##` for a word piece) counted as the text
    /// they replace.
    pub fn max_token_bytes(&self) -> usize {
        self.max_token_bytes
    }

    /// Tells the tokenizer how many rows the model's embedding table has (`vocab_size` in
    /// `config.json`). Fails when the tokenizer's own vocabulary is larger (tokenizer and model
    /// do not match). Added tokens beyond the table (Gemma's `<image_soft_token>`) are allowed
    /// but refused in texts, by [`TextTokenizer::encode`], before they reach the model.
    pub fn check_embedding_rows(&mut self, rows: usize) -> Result<()> {
        if let Some(max_id) = self.max_model_id().filter(|&id| id as usize >= rows) {
            return Err(EmbeddingError::model_load(
                TOKENIZER,
                format!(
                    "the tokenizer's vocabulary reaches token id {max_id}, but the model's embedding table has \
                     only {rows} rows (config.json vocab_size): tokenizer and model do not match"
                ),
            ));
        }
        self.embedding_rows = Some(rows);
        Ok(())
    }

    /// The largest id of the tokenizer's model vocabulary (added tokens aside). Vocabularies
    /// are dense (ids 0..n) in practice, which a lookup per id confirms in a few milliseconds;
    /// only a sparse one pays for copying the whole vocabulary (100 ms for Gemma's 262k).
    fn max_model_id(&self) -> Option<u32> {
        let model = self.tokenizer.get_model();
        let size = u32::try_from(model.get_vocab_size()).ok()?;
        if size > 0 && (0..size).all(|id| model.id_to_token(id).is_some()) {
            return Some(size - 1);
        }
        self.tokenizer.get_vocab(false).values().copied().max()
    }

    /// The id batches are padded with.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The token limit, special tokens included.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Number of distinct token ids the tokenizer can produce (added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }
}

/// Whether a tokenisation computes offsets (`encode_fast` skips them: the embedding path
/// needs only ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offsets {
    None,
    Bytes,
}

/// What [`EmbeddingError::ModelLoad`] names before the tokenizer's file is known.
const TOKENIZER: &str = "tokenizer";

/// The longest entry of the tokenizer's vocabulary, added tokens included, in bytes of the
/// text it stands for (at least 1). Gemma's added tokens of up to 31 `▁` count as 31 spaces,
/// not 93 bytes; should a text spell `▁` literally, its prefix simply yields too few tokens
/// and the whole text is tokenised, so the budget is a cost bound, never a correctness one.
fn longest_token_bytes(tokenizer: &Tokenizer) -> usize {
    let model = tokenizer.get_model();
    let size = u32::try_from(model.get_vocab_size()).unwrap_or(u32::MAX);
    let source_bytes = |token: &str| {
        let token = token.strip_prefix("##").unwrap_or(token);
        token.len() - token.matches('▁').count() * ('▁'.len_utf8() - 1)
    };
    let vocabulary = (0..size)
        .filter_map(|id| model.id_to_token(id))
        .map(|token| source_bytes(&token));
    let added = tokenizer
        .get_added_tokens_decoder()
        .into_values()
        .map(|token| source_bytes(&token.content));
    vocabulary.chain(added).max().unwrap_or(1).max(1)
}
