//! Arbitrary Unicode through the real providers: control characters, NUL bytes, lone combining
//! marks, right-to-left scripts, 10k-codepoint strings, mixed scripts. Never a panic; one finite,
//! unit-norm vector per input, in order; the same text gives the same vector alone and inside
//! any batch.

use std::sync::OnceLock;

use akidb_embedding_core::EmbedRequest;
use akidb_embedding_onnx::OnnxEmbeddingProvider;
use akidb_test_support::{cosine, minilm_dir, tiny_gemma_dir};
use proptest::prelude::*;

fn provider(
    cell: &'static OnceLock<OnnxEmbeddingProvider>,
    dir: fn() -> std::path::PathBuf,
) -> &'static OnnxEmbeddingProvider {
    cell.get_or_init(|| {
        OnnxEmbeddingProvider::load(
            crate::load_options(dir().to_str().unwrap()).with_intra_threads(2),
        )
        .unwrap()
    })
}

fn minilm() -> &'static OnnxEmbeddingProvider {
    static CELL: OnceLock<OnnxEmbeddingProvider> = OnceLock::new();
    provider(&CELL, minilm_dir)
}

fn gemma() -> &'static OnnxEmbeddingProvider {
    static CELL: OnceLock<OnnxEmbeddingProvider> = OnceLock::new();
    provider(&CELL, tiny_gemma_dir)
}

fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\x00-\\x1f\\x7f]{0,40}",
        "[\u{0300}-\u{036f}]{1,12}",
        "[\u{0590}-\u{06ff}\u{200e}\u{200f}\u{202a}-\u{202e} ]{0,80}",
        "[a-zA-Z0-9 \u{4e00}-\u{4e80}\u{0400}-\u{04ff}\u{1f300}-\u{1f5ff}\u{0}]{0,120}",
        prop::collection::vec(any::<char>(), 10_000).prop_map(String::from_iter),
        Just(String::new()),
    ]
}

fn check(provider: &OnnxEmbeddingProvider, texts: &[String]) -> Result<(), TestCaseError> {
    let response = provider
        .embed_blocking(EmbedRequest::new(texts.to_vec()))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(response.count(), texts.len());
    prop_assert_eq!(response.embeddings.len(), texts.len());
    for (i, vector) in response.embeddings.iter().enumerate() {
        prop_assert!(
            vector.iter().all(|v| v.is_finite()),
            "text {} has non-finite values",
            i
        );
        let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        prop_assert!((norm - 1.0).abs() < 1e-4, "text {} norm {}", i, norm);
    }
    // Order preserved and batch-independent: each text alone gives the vector at its position.
    for (i, text) in texts.iter().enumerate() {
        let alone = provider
            .embed_blocking(EmbedRequest::new([text.as_str()]))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let similarity = cosine(&alone.embeddings[0], &response.embeddings[i]);
        prop_assert!(
            similarity >= 0.9999,
            "text {} alone vs batched: cosine {}",
            i,
            similarity
        );
        prop_assert_eq!(alone.token_counts[0], response.token_counts[i]);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn minilm_embeds_any_unicode(texts in prop::collection::vec(hostile_text(), 1..6)) {
        check(minilm(), &texts)?;
    }

    #[test]
    fn gemma_embeds_any_unicode(texts in prop::collection::vec(hostile_text(), 1..6)) {
        check(gemma(), &texts)?;
    }
}
