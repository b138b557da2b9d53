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

/// What [`fidelity`] measured.
pub struct Fidelity {
    /// The lowest cosine.
    pub worst: f64,
    /// The text it belongs to.
    pub worst_id: String,
    /// The mean cosine.
    pub mean: f64,
}
