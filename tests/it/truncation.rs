//! Truncation means truncation: a text of any length is embedded from its first tokens (or
//! its last, when the request cuts the start) when the request allows truncation, and refused
//! with its index and a token count over the cap, read from a bounded prefix, when it does
//! not. The tokenizer-cost guard (a text to be truncated is tokenised only up to a byte budget)
//! never changes which tokens a text gets, hostile texts included. Each text of a request is
//! tokenised exactly once.

use std::path::Path;

use akidb_embedding_core::{EmbedRequest, EmbeddingError, EmbeddingProvider, Truncation};
use akidb_embedding_onnx::OnnxEmbeddingProvider;
use akidb_test_support::{minilm_dir, tiny_gemma_dir};

fn models() -> Vec<(std::path::PathBuf, OnnxEmbeddingProvider)> {
    [minilm_dir(), tiny_gemma_dir()]
        .into_iter()
        .map(|dir| {
            let provider = OnnxEmbeddingProvider::load(
                crate::load_options(dir.to_str().unwrap()).with_intra_threads(1),
            )
            .unwrap();
            (dir, provider)
        })
        .collect()
}

/// 100,000 characters of prose.
fn long_prose() -> String {
    let sentence =
        "The night train to the northern coast leaves from platform nine at ten past eleven. ";
    sentence.repeat(100_000 / sentence.len() + 1)[..100_000].to_string()
}

/// Texts built to be expensive or odd for a tokenizer, each 100,000 characters or more.
fn hostile_texts() -> Vec<(&'static str, String)> {
    vec![
        ("prose", long_prose()),
        ("one unbroken word", "abcdefghij".repeat(10_000)),
        ("digits", "0123456789".repeat(10_000)),
        ("emoji", "🚂🌊🧭".repeat(33_334)),
        ("cjk", "東京駅から北へ".repeat(14_286)),
        (
            "whitespace then words",
            format!("{}{}", " ".repeat(100_000), long_prose()),
        ),
        (
            "control characters then words",
            format!("{}{}", "\u{7}".repeat(100_000), long_prose()),
        ),
        (
            "combining marks",
            format!(
                "{}{}",
                "e\u{301}\u{302}\u{303}".repeat(25_000),
                long_prose()
            ),
        ),
    ]
}

/// The model's tokenizer as the `tokenizers` crate loads it, without its own truncation and
/// padding settings.
fn reference_tokenizer(dir: &Path) -> tokenizers::Tokenizer {
    let mut tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    tokenizer.with_truncation(None).unwrap();
    tokenizer.with_padding(None);
    tokenizer
}

/// The ids the model should see for `text` truncated at `cap`: the whole text tokenised with
/// the `tokenizers` crate itself, its first `cap - specials` content tokens, the special tokens
/// around them.
fn truncated_reference(tokenizer: &tokenizers::Tokenizer, text: &str, cap: usize) -> Vec<u32> {
    let content = tokenizer.encode(text, false).unwrap().get_ids().to_vec();
    let specials = tokenizer.encode("", true).unwrap().get_ids().to_vec();
    let (first, last) = (specials[0], specials[specials.len() - 1]);
    let mut ids = vec![first];
    ids.extend(&content[..(cap - specials.len()).min(content.len())]);
    ids.push(last);
    ids
}

#[test]
fn a_100k_character_text_is_embedded_when_truncation_is_allowed_and_refused_otherwise() {
    for (dir, provider) in models() {
        let cap = provider.model_info().max_tokens;
        let long = long_prose();
        assert_eq!(long.chars().count(), 100_000);
        // 30,000 characters hold more tokens than either model reads.
        let head = &long[..30_000];

        let response = provider
            .embed_blocking(EmbedRequest::new(["short one", long.as_str()]))
            .unwrap();
        assert_eq!(
            response.token_counts,
            vec![provider.token_ids("short one", None).unwrap().len(), cap]
        );
        // Embedded from its first tokens: the same vector as any prefix that holds them.
        let prefix = provider.embed_blocking(EmbedRequest::new([head])).unwrap();
        assert!(
            akidb_test_support::cosine(&response.embeddings[1], &prefix.embeddings[0]) > 0.999_99,
            "{}",
            dir.display()
        );

        let strict =
            EmbedRequest::new(["short one", long.as_str()]).with_truncation(Truncation::Error);
        let full = truncated_reference(&reference_tokenizer(&dir), &long, usize::MAX / 2).len();
        match provider.embed_blocking(strict) {
            Err(EmbeddingError::TextTooLong {
                index,
                tokens,
                max_tokens,
            }) => {
                assert_eq!((index, max_tokens), (1, cap));
                // Counted from a bounded prefix (which may hold all 100,000 characters): a
                // lower bound that is over the cap.
                assert!(
                    tokens > cap && tokens <= full,
                    "{tokens} of {full}, {}",
                    dir.display()
                );
                assert!(full > 5 * cap, "{full}");
            }
            other => panic!("{}: {other:?}", dir.display()),
        }
        // Two million characters are never counted whole: the count stays that of a prefix.
        let huge = long.repeat(20);
        let strict = EmbedRequest::new([huge.as_str()]).with_truncation(Truncation::Error);
        match provider.embed_blocking(strict) {
            Err(EmbeddingError::TextTooLong { index, tokens, .. }) => {
                assert_eq!(index, 0);
                assert!(
                    tokens > cap && tokens < 2 * full,
                    "{tokens} of about {}, {}",
                    20 * full,
                    dir.display()
                );
            }
            other => panic!("{}: {other:?}", dir.display()),
        }
    }
}

#[test]
fn the_cost_guard_never_changes_the_tokens_of_a_truncated_text() {
    for (dir, provider) in models() {
        let cap = provider.model_info().max_tokens;
        let tokenizer = reference_tokenizer(&dir);
        for (name, text) in hostile_texts() {
            let ids = provider.token_ids(&text, None).unwrap();
            assert_eq!(
                ids,
                truncated_reference(&tokenizer, &text, cap),
                "{name}, {}",
                dir.display()
            );
            assert!(ids.len() <= cap);
        }
    }
}

/// The ids the model should see for `text` cut at its start to `cap` tokens: the whole text
/// tokenised, its last `cap - specials` content tokens, the special tokens around them.
fn truncated_end_reference(tokenizer: &tokenizers::Tokenizer, text: &str, cap: usize) -> Vec<u32> {
    let content = tokenizer.encode(text, false).unwrap().get_ids().to_vec();
    let specials = tokenizer.encode("", true).unwrap().get_ids().to_vec();
    let (first, last) = (specials[0], specials[specials.len() - 1]);
    let kept = (cap - specials.len()).min(content.len());
    let mut ids = vec![first];
    ids.extend(&content[content.len() - kept..]);
    ids.push(last);
    ids
}

#[tokio::test]
async fn cutting_the_start_keeps_exactly_the_last_tokens_and_reads_a_bounded_end() {
    for (dir, provider) in models() {
        let cap = provider.model_info().max_tokens;
        let tokenizer = reference_tokenizer(&dir);
        let mut texts = hostile_texts();
        texts.push(("short", "only a few words".to_string()));
        for (name, text) in texts {
            let request =
                EmbedRequest::new([text.as_str()]).with_truncation(Truncation::TruncateStart);
            let ids = provider.tokenize(request.clone()).await.unwrap().encodings[0]
                .ids
                .clone();
            assert_eq!(
                ids,
                truncated_end_reference(&tokenizer, &text, cap),
                "{name}, {}",
                dir.display()
            );
            // The spans point into the caller's text, at its end.
            let spans = provider.token_spans(request).await.unwrap().remove(0);
            assert_eq!(spans.len(), ids.len(), "{name}");
            let last = spans.iter().rev().find_map(|token| token.span.clone());
            if let Some(span) = last {
                assert!(
                    span.end <= text.len() && span.end + 8 >= text.trim_end().len(),
                    "{name}: {span:?}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_text_of_a_request_is_tokenised_once() {
    for (dir, provider) in models() {
        let before = provider.tokenizer_calls();
        let texts = ["one", "two words", "and three words"];
        provider
            .embed(EmbedRequest::new(texts).with_prompt("query"))
            .await
            .unwrap();
        assert_eq!(provider.tokenizer_calls() - before, 3, "{}", dir.display());
        // Large requests tokenise on the blocking pool, still once per text.
        let large: Vec<String> = (0..4).map(|i| format!("{i} {}", long_prose())).collect();
        let tokenized = provider.tokenize(EmbedRequest::new(large)).await.unwrap();
        assert_eq!(provider.tokenizer_calls() - before, 7);
        let vectors = provider.run(tokenized.encodings).await.unwrap();
        assert_eq!(vectors.len(), 4);
        assert_eq!(
            provider.tokenizer_calls() - before,
            7,
            "a run tokenises nothing"
        );
        // A request refused by validation costs no tokenisation.
        let refused = provider
            .embed(EmbedRequest::new(texts).with_dimensions(7))
            .await;
        assert!(matches!(
            refused,
            Err(EmbeddingError::UnsupportedDimension { .. })
        ));
        assert_eq!(provider.tokenizer_calls() - before, 7);
    }
}
