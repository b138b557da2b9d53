//! Where each token of a text came from: [`TokenSpan`].
//!
//! A tokenizer turns a text into token ids; a span says which bytes of the caller's text each
//! token stands for, so a caller can show, highlight or count what the model read (text-
//! embeddings-inference's `POST /tokenize` answers with them). Spans are **byte** offsets into
//! the text the caller sent, as Rust slices it and as text-embeddings-inference reports them
//! (its `start`/`stop` come from the tokenizer's byte offsets). They always fall on UTF-8
//! character boundaries: `&text[span]` never panics.
//!
//! A task prompt (`"task: search result | query: "`) is prepended to the text before it is
//! tokenised, but it is not the caller's text: spans refer to the text the caller sent, never
//! to the prompted string. Tokens that come wholly from the prompt are
//! [`TokenKind::Prompt`] and have no span; a token that straddles the prompt's end (Gemma's
//! `▁What` takes the prompt's trailing space) is [`TokenKind::Text`], its span cut to the
//! caller's part.

use std::ops::Range;

/// What a token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A special token the tokenizer adds (`[CLS]`, `[SEP]`, `<bos>`, `<eos>`): no span.
    Special,
    /// A token of the task prompt prepended to the text: no span in the caller's text.
    Prompt,
    /// A token of the caller's text: it has a span.
    Text,
}

/// One token of a text as the model reads it (prompt, special tokens and truncation applied),
/// with the bytes of the caller's text it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpan {
    /// The token id, exactly as the embedding path feeds it to the model.
    pub id: u32,
    /// The vocabulary entry (`##ing`, `▁What`, `[CLS]`, `<0xF0>`): the tokenizer's own form,
    /// which may differ from the text it stands for (lowercased, accents stripped, `▁` for a
    /// space, one byte of a character).
    pub token: String,
    /// Special, prompt or text token.
    pub kind: TokenKind,
    /// Bytes of the caller's text the token stands for, on character boundaries; `Some` exactly
    /// for [`TokenKind::Text`]. Several tokens may share a span (the byte-fallback tokens of
    /// one character each stand for the whole character).
    pub span: Option<Range<usize>>,
}

impl TokenSpan {
    /// A special token (no span).
    pub fn special(id: u32, token: impl Into<String>) -> Self {
        Self {
            id,
            token: token.into(),
            kind: TokenKind::Special,
            span: None,
        }
    }

    /// A token of the text, standing for `span` (bytes of the text).
    pub fn text(id: u32, token: impl Into<String>, span: Range<usize>) -> Self {
        Self {
            id,
            token: token.into(),
            kind: TokenKind::Text,
            span: Some(span),
        }
    }

    /// The part of `text` (the text this span was made for) the token stands for; `None` for
    /// tokens without a span, or a span that does not fit `text`.
    pub fn slice<'a>(&self, text: &'a str) -> Option<&'a str> {
        self.span.clone().and_then(|span| text.get(span))
    }

    /// True for the tokenizer's special tokens.
    pub fn is_special(&self) -> bool {
        self.kind == TokenKind::Special
    }
}

/// Maps the spans of a tokenised prompted text (`prompt` + the caller's text, spans into that
/// string) to the caller's text of `text_len` bytes: tokens wholly inside the prompt become
/// [`TokenKind::Prompt`] without a span, the others are shifted and cut to the caller's part.
/// Spans are clamped to the text and widened to character boundaries of `text`, so a tokenizer
/// that reports a span inside a character can never make a caller's slice panic.
pub(crate) fn relative_to_text(
    mut tokens: Vec<TokenSpan>,
    prompt: &str,
    text: &str,
) -> Vec<TokenSpan> {
    let offset = prompt.len();
    for token in &mut tokens {
        let Some(span) = token.span.take() else {
            continue;
        };
        if token.kind != TokenKind::Text {
            continue;
        }
        if offset > 0 && span.start < offset && span.end <= offset {
            token.kind = TokenKind::Prompt;
            continue;
        }
        let start = span.start.saturating_sub(offset).min(text.len());
        let end = span.end.saturating_sub(offset).clamp(start, text.len());
        token.span = Some(text.floor_char_boundary(start)..text.ceil_char_boundary(end));
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_tokens_lose_their_span_and_straddling_tokens_are_cut() {
        // "q: " + "héllo": tokens `q:` (0..2), `▁hé` (2..6), `llo` (6..9).
        let prompt = "q: ";
        let text = "héllo";
        let tokens = vec![
            TokenSpan::special(1, "<bos>"),
            TokenSpan::text(7, "q:", 0..2),
            TokenSpan::text(8, "▁hé", 2..6),
            TokenSpan::text(9, "llo", 6..9),
            TokenSpan::special(2, "<eos>"),
        ];
        let mapped = relative_to_text(tokens, prompt, text);
        let kinds: Vec<TokenKind> = mapped.iter().map(|t| t.kind).collect();
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
        assert_eq!(mapped[1].span, None);
        assert_eq!(mapped[2].slice(text), Some("hé"));
        assert_eq!(mapped[3].slice(text), Some("llo"));
        assert!(mapped[0].is_special() && mapped[0].slice(text).is_none());
    }

    #[test]
    fn spans_inside_a_character_are_widened_and_out_of_range_ones_clamped() {
        let text = "a🚂b";
        let tokens = vec![
            TokenSpan::text(1, "<0xF0>", 2..3),
            TokenSpan::text(2, "b", 5..6),
            TokenSpan::text(3, "?", 6..40),
        ];
        let mapped = relative_to_text(tokens, "", text);
        assert_eq!(mapped[0].slice(text), Some("🚂"));
        assert_eq!(mapped[1].slice(text), Some("b"));
        assert_eq!(mapped[2].span, Some(6..6));
        // Without a prompt, a token at offset 0 stays a text token.
        let mapped = relative_to_text(vec![TokenSpan::text(4, "a", 0..1)], "", text);
        assert_eq!(mapped[0].kind, TokenKind::Text);
    }
}
