//! The root package's integration tests, in one binary (one link instead of one per file):
//! cross-crate behaviour of the providers on real models, the hub, model files, errors, and
//! the reference vectors of `../shared/reference`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod consistency;
mod consumer;
mod cpu_arena;
mod errors;
mod fuse;
mod hub;
mod model_files;
mod proptest_unicode;
mod quantize;
mod real_gemma;
mod reference;
mod runtime_missing;
mod token_spans;
mod tokenizer_file;
mod truncation;

use akidb_embedding_onnx::LoadOptions;

/// Load options for `model` that find this project's ONNX Runtime as the service and the
/// examples do (`akidb_embeddings::install::runtime_search`), and nothing else: tests name
/// their model folders. ONNX Runtime is loaded once per process, so every test of this binary
/// goes through here (except `runtime_missing`, which runs in a process of its own).
pub fn load_options(model: impl Into<String>) -> LoadOptions {
    LoadOptions::new(model).with_runtime_search(akidb_embeddings::install::runtime_search())
}

/// Worst and mean cosine of `provider` against `reference`, one text at a time (prompts as
/// given), with every token count and dimension asserted exact; the worst text's id comes too.
pub fn fidelity(
    provider: &akidb_embedding_onnx::OnnxEmbeddingProvider,
    texts: &[akidb_test_support::Sentence],
    reference: &akidb_test_support::Reference,
) -> Fidelity {
    let mut fidelity = Fidelity {
        worst: f64::MAX,
        worst_id: String::new(),
        mean: 0.0,
    };
    for text in texts {
        let expected = &reference.items[&text.id];
        let mut request = akidb_embedding_core::EmbedRequest::new([text.text.as_str()]);
        request.prompt_name = text.prompt_name.clone();
        let response = provider.embed_blocking(request).unwrap();
        assert_eq!(
            response.token_counts[0], expected.tokens,
            "token count of {}",
            text.id
        );
        assert_eq!(response.dimension, expected.embedding.len());
        let similarity = akidb_test_support::cosine(&response.embeddings[0], &expected.embedding);
        fidelity.mean += similarity / texts.len() as f64;
        if similarity < fidelity.worst {
            fidelity.worst = similarity;
            fidelity.worst_id = text.id.clone();
        }
    }
    fidelity
}

/// Embeds each of `texts` alone with `provider` and asserts that it gets the token count and,
/// to cosine `min_cosine`, the vector it got inside `batch` (the same texts embedded together,
/// padded to the longest): the padding must not reach a text's vector. `label` names the case
/// in a failure.
pub fn assert_alone_matches_batch(
    provider: &akidb_embedding_onnx::OnnxEmbeddingProvider,
    texts: &[String],
    batch: &akidb_embedding_core::EmbedResponse,
    min_cosine: f64,
    label: &str,
) {
    assert_eq!(batch.count(), texts.len(), "{label}");
    for (i, text) in texts.iter().enumerate() {
        let alone = provider
            .embed_blocking(akidb_embedding_core::EmbedRequest::new([text.as_str()]))
            .unwrap();
        assert_eq!(
            alone.token_counts[0], batch.token_counts[i],
            "{label} text {i}: token count alone vs in the batch"
        );
        let similarity = akidb_test_support::cosine(&alone.embeddings[0], &batch.embeddings[i]);
        assert!(
            similarity >= min_cosine,
            "{label} text {i}: alone vs padded batch {similarity}"
        );
    }
}

/// What [`fidelity`] measured.
pub struct Fidelity {
    /// The lowest cosine.
    pub worst: f64,
    /// The text it belongs to.
    pub worst_id: String,
    /// The mean cosine.
    pub mean: f64,
}
