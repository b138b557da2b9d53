//! Token spans on the real tokenizers (all-MiniLM-L6-v2's WordPiece and the Gemma BPE of the
//! tiny EmbeddingGemma double): each span slices the caller's text back to what its token
//! stands for, on UTF-8 boundaries whatever the script, special tokens are marked, prompt
//! tokens carry no span, and the ids are exactly those the embedding path feeds the model.

use akidb_embedding_core::{EmbedRequest, EmbeddingProvider, TokenKind, TokenSpan, Truncation};
use akidb_embedding_onnx::OnnxEmbeddingProvider;
use akidb_test_support::{minilm_dir, tiny_gemma_dir};

/// Which tokenizer a model has, for what its tokens look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// WordPiece, lowercased, accents stripped, `##` for a word's continuation.
    MiniLm,
    /// Gemma BPE: `▁` for a space, byte fallback (`<0xF0>`) for characters it lacks.
    Gemma,
}

fn models() -> Vec<(Family, OnnxEmbeddingProvider)> {
    let mut models = Vec::new();
    for (family, dir) in [
        (Family::MiniLm, minilm_dir()),
        (Family::Gemma, tiny_gemma_dir()),
    ] {
        let provider = OnnxEmbeddingProvider::load(
            crate::load_options(dir.to_str().unwrap()).with_intra_threads(1),
        )
        .unwrap();
        models.push((family, provider));
    }
    models
}

/// Texts in several scripts: accents, CJK, emoji (with a skin-tone modifier), code, odd
/// whitespace, a character Gemma's vocabulary lacks (byte fallback), and an empty text.
const TEXTS: [&str; 9] = [
    "Hello, world!",
    "Café crème brûlée at the naïve façade",
    "東京駅はどこですか？ 北へ二ブロックです。",
    "🚂🌊 the train 🧭 leaves 👍🏽 at ten",
    "fn main() { println!(\"hi\"); }",
    "  two  spaces\tand a tab\nand a newline  ",
    "Ünïcödé ẞ straße ǅ",
    "hieroglyph 𓀀𓀁 and private use \u{F0000}",
    "",
];

/// The token ids the embedding path uses for `text` under `prompt`.
async fn embedding_ids(
    provider: &OnnxEmbeddingProvider,
    text: &str,
    prompt: Option<&str>,
) -> Vec<u32> {
    let mut request = EmbedRequest::new([text]);
    request.prompt_name = prompt.map(str::to_string);
    let tokenized = provider.tokenize(request).await.unwrap();
    tokenized.encodings[0].ids.clone()
}

async fn spans_of(
    provider: &OnnxEmbeddingProvider,
    text: &str,
    prompt: Option<&str>,
) -> Vec<TokenSpan> {
    let mut request = EmbedRequest::new([text]);
    request.prompt_name = prompt.map(str::to_string);
    let mut spans = provider.token_spans(request).await.unwrap();
    assert_eq!(spans.len(), 1);
    spans.remove(0)
}

/// The token's text and the slice it stands for, in forms that must be equal (MiniLM
/// lowercases; both mark spaces or word continuations their own way), or `None` when the
/// token's form says nothing checkable (an unknown token, one byte of a character, a
/// character the normaliser changed).
fn comparable(family: Family, token: &str, slice: &str) -> Option<(String, String)> {
    match family {
        Family::MiniLm if token == "[UNK]" || !slice.is_ascii() => None,
        Family::MiniLm => Some((
            token.trim_start_matches("##").to_string(),
            slice.to_lowercase(),
        )),
        Family::Gemma if token.starts_with("<0x") && token.ends_with('>') => None,
        Family::Gemma => Some((token.replace('▁', " "), slice.to_string())),
    }
}

/// Checks every property of `tokens`, the spans of `text` (prompted with `prompt`, whose
/// text is `prompt_text`): ids, kinds, boundaries, order, coverage and token texts.
fn check_spans(
    family: Family,
    text: &str,
    prompt_text: &str,
    tokens: &[TokenSpan],
    ids: &[u32],
    truncated: bool,
) {
    let what = format!("{family:?} {text:?} (prompt {prompt_text:?})");
    let got: Vec<u32> = tokens.iter().map(|t| t.id).collect();
    assert_eq!(got, ids, "{what}: the ids embedding uses");

    // Special tokens open and close every text, and only they are special.
    let specials: Vec<usize> = (0..tokens.len())
        .filter(|&i| tokens[i].is_special())
        .collect();
    assert_eq!(specials, [0, tokens.len() - 1], "{what}: special tokens");
    let (open, close) = match family {
        Family::MiniLm => ("[CLS]", "[SEP]"),
        Family::Gemma => ("<bos>", "<eos>"),
    };
    assert_eq!(
        (
            tokens[0].token.as_str(),
            tokens[tokens.len() - 1].token.as_str()
        ),
        (open, close),
        "{what}"
    );

    // Prompt tokens come first, without a span; every other token has one.
    let mut seen_text = false;
    for token in &tokens[1..tokens.len() - 1] {
        match token.kind {
            TokenKind::Prompt => {
                assert!(
                    !seen_text,
                    "{what}: a prompt token after the text: {token:?}"
                );
                assert_eq!(token.span, None, "{what}");
            }
            TokenKind::Text => {
                seen_text = true;
                assert!(token.span.is_some(), "{what}: {token:?}");
            }
            TokenKind::Special => unreachable!("checked above"),
        }
    }
    if prompt_text.is_empty() {
        assert!(
            tokens.iter().all(|t| t.kind != TokenKind::Prompt),
            "{what}: prompt tokens without a prompt"
        );
    }

    // Spans are inside the text, on character boundaries, in order.
    let mut last_start = 0;
    let mut covered = vec![false; text.len()];
    for token in tokens.iter().filter(|t| t.kind == TokenKind::Text) {
        let span = token.span.clone().unwrap();
        let slice = token.slice(text).unwrap_or_else(|| {
            panic!("{what}: span {span:?} of {token:?} is not a slice of the text")
        });
        assert!(
            span.start >= last_start,
            "{what}: spans out of order at {token:?}"
        );
        last_start = span.start;
        covered[span.clone()].iter_mut().for_each(|c| *c = true);
        if let Some((expected, slice)) = comparable(family, &token.token, slice) {
            // A token straddling the prompt's end has lost the prompt's part.
            let straddles = !prompt_text.is_empty() && span.start == 0;
            if straddles {
                assert!(
                    expected.ends_with(&slice),
                    "{what}: `{expected}` vs `{slice}`"
                );
            } else {
                assert_eq!(expected, slice, "{what}: token {token:?}");
            }
        }
        if token.token.starts_with("<0x") {
            // One byte of a character: the span is the whole character that byte belongs to.
            let byte = u8::from_str_radix(&token.token[3..5], 16).unwrap();
            assert_eq!(
                slice.chars().count(),
                1,
                "{what}: {token:?} spans `{slice}`"
            );
            assert!(
                slice.as_bytes().contains(&byte),
                "{what}: {token:?} in `{slice}`"
            );
        }
    }
    // Every character but whitespace is covered by some token (unless truncation cut it),
    // except what BERT's normaliser deletes (control and private-use characters).
    let dropped = |c: char| {
        family == Family::MiniLm
            && (c.is_control() || matches!(c, '\u{E000}'..='\u{F8FF}' | '\u{F0000}'..='\u{10FFFD}'))
    };
    if !truncated {
        for (at, character) in text.char_indices() {
            if !character.is_whitespace() && !dropped(character) {
                assert!(
                    covered[at],
                    "{what}: `{character}` at byte {at} has no token"
                );
            }
        }
    }
}

#[tokio::test]
async fn spans_slice_the_input_back_to_each_tokens_text_in_every_script() {
    for (family, provider) in models() {
        let prompts: &[(Option<&str>, &str)] = match family {
            // MiniLM defines no prompts: `query` is the empty prompt, as in sentence-transformers.
            Family::MiniLm => &[(None, ""), (Some("query"), "")],
            Family::Gemma => &[
                (None, ""),
                (Some("query"), "task: search result | query: "),
                (Some("document"), "title: none | text: "),
            ],
        };
        for text in TEXTS {
            for &(prompt, prompt_text) in prompts {
                let tokens = spans_of(&provider, text, prompt).await;
                let ids = embedding_ids(&provider, text, prompt).await;
                check_spans(family, text, prompt_text, &tokens, &ids, false);
                if !prompt_text.is_empty() {
                    assert!(
                        tokens.iter().any(|t| t.kind == TokenKind::Prompt),
                        "{family:?} {text:?}: the prompt's tokens are marked"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn the_byte_fallback_and_unknown_tokens_are_really_exercised() {
    // The checks above would be vacuous for these cases if the tokenizers never produced them.
    for (family, provider) in models() {
        let text = TEXTS[7];
        let tokens = spans_of(&provider, text, None).await;
        let odd = tokens
            .iter()
            .filter(|t| t.token.starts_with("<0x") || t.token == "[UNK]")
            .count();
        assert!(
            odd > 0,
            "{family:?}: no byte-fallback or unknown token in {tokens:?}"
        );
        if family == Family::MiniLm {
            // Lowercased and accent-stripped: the token differs, the span is the original.
            let cafe = spans_of(&provider, TEXTS[1], None).await;
            let token = cafe.iter().find(|t| t.token == "cafe").unwrap();
            assert_eq!(token.slice(TEXTS[1]), Some("Café"));
        }
    }
}

#[tokio::test]
async fn known_answers_and_the_token_that_straddles_the_prompt() {
    for (family, provider) in models() {
        let text = "Hello, world!";
        let tokens = spans_of(&provider, text, None).await;
        let got: Vec<(u32, Option<std::ops::Range<usize>>)> =
            tokens.iter().map(|t| (t.id, t.span.clone())).collect();
        let expected = match family {
            Family::MiniLm => vec![
                (101, None),
                (7592, Some(0..5)),
                (1010, Some(5..6)),
                (2088, Some(7..12)),
                (999, Some(12..13)),
                (102, None),
            ],
            // MODELS.md: "Hello, world!" → [2, 9259, 236764, 1902, 236888, 1]; `▁world`
            // takes its space.
            Family::Gemma => vec![
                (2, None),
                (9259, Some(0..5)),
                (236764, Some(5..6)),
                (1902, Some(6..12)),
                (236888, Some(12..13)),
                (1, None),
            ],
        };
        assert_eq!(got, expected, "{family:?}");
        if family == Family::Gemma {
            // "task: search result | query: " + "What": `▁What` starts on the prompt's space;
            // its span is the caller's `What`, and the prompt's tokens have none.
            let tokens = spans_of(&provider, "What", Some("query")).await;
            let what = tokens.iter().find(|t| t.token == "▁What").unwrap();
            assert_eq!(
                (what.kind, what.span.clone()),
                (TokenKind::Text, Some(0..4))
            );
            let prompt: Vec<&str> = tokens
                .iter()
                .filter(|t| t.kind == TokenKind::Prompt)
                .map(|t| t.token.as_str())
                .collect();
            assert_eq!(
                prompt,
                ["task", ":", "▁search", "▁result", "▁|", "▁query", ":"]
            );
        }
    }
}

#[tokio::test]
async fn truncated_texts_have_the_embedding_paths_tokens_and_spans_up_to_the_cut() {
    for (family, provider) in models() {
        let cap = provider.model_info().max_tokens;
        // Many more tokens than the cap, multi-byte characters throughout.
        let text = "Ünïcödé 東京 🚂 words and more words. ".repeat(cap);
        for prompt in [None, Some("query")] {
            let tokens = spans_of(&provider, &text, prompt).await;
            let ids = embedding_ids(&provider, &text, prompt).await;
            assert_eq!(tokens.len(), cap, "{family:?}: truncated at the cap");
            let prompt_text = match (family, prompt) {
                (Family::Gemma, Some(_)) => "task: search result | query: ",
                _ => "",
            };
            check_spans(family, &text, prompt_text, &tokens, &ids, true);
            let last = tokens[cap - 2].span.clone().unwrap();
            assert!(
                last.end < text.len() / 2,
                "{family:?}: the spans stop at the cut"
            );
        }
        // With truncation refused, spans are refused exactly as embedding is.
        let strict = EmbedRequest::new([text.as_str()]).with_truncation(Truncation::Error);
        assert_eq!(
            provider.token_spans(strict.clone()).await.unwrap_err(),
            provider.tokenize(strict).await.unwrap_err()
        );
    }
}
