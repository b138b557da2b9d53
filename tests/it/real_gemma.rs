//! The real EmbeddingGemma-300m (`AKIDB_GEMMA_DIR`, built by `../shared/tools/embeddinggemma/build.sh`)
//! reproduces sentence-transformers fp32: every shared reference sentence and the project's
//! varied evaluation set (`benches/quality/eval_texts.json`: 306 texts of 1 to 2,048 tokens in
//! ten languages, code, emoji), with exact token counts.
//!
//! The project's `q8` variant is held to worst cosine ≥ 0.997 and mean ≥ 0.999 on the same texts.
//!
//! The model is too big for CI: each test is `#[ignore = "needs AKIDB_GEMMA_DIR"]`, run with
//! `AKIDB_GEMMA_DIR=… cargo test --test it real_gemma -- --ignored` (`scripts/test.sh` does so
//! when the variable is set).

#![allow(clippy::print_stderr)]

use akidb_embedding_onnx::{OnnxEmbeddingProvider, OnnxVariant};
use akidb_test_support::{real_gemma_dir, reference, sentences, workspace_reference};

const EVAL_TEXTS: &str = "benches/quality/eval_texts.json";
const EVAL_REFERENCE: &str = "benches/quality/eval_reference.st.json";

fn load(variant: OnnxVariant) -> OnnxEmbeddingProvider {
    let dir = real_gemma_dir();
    let options = crate::load_options(dir.to_str().unwrap())
        .with_intra_threads(2)
        .with_variant(variant);
    OnnxEmbeddingProvider::load(options).unwrap()
}

/// Checks both text sets against the bounds and prints the measured figures.
fn check(provider: &OnnxEmbeddingProvider, label: &str, min_worst: f64, min_mean: f64) {
    let (shared_texts, shared_reference) = (sentences(), reference("embeddinggemma-300m.st.json"));
    let (eval_texts, eval_reference) = workspace_reference(EVAL_TEXTS, EVAL_REFERENCE);
    assert_eq!(eval_texts.len(), eval_reference.items.len());
    for (set, texts, reference) in [
        ("shared sentences", &shared_texts, &shared_reference),
        ("evaluation set", &eval_texts, &eval_reference),
    ] {
        let crate::Fidelity {
            worst,
            worst_id,
            mean,
        } = crate::fidelity(provider, texts, reference);
        eprintln!(
            "{label} on the {set} ({} texts): worst cosine {worst:.6} ({worst_id}), mean {mean:.6}",
            texts.len()
        );
        assert!(
            worst >= min_worst,
            "{label} {set}: worst cosine {worst} ({worst_id})"
        );
        assert!(mean >= min_mean, "{label} {set}: mean cosine {mean}");
    }
}

#[test]
#[ignore = "needs AKIDB_GEMMA_DIR"]
fn real_embeddinggemma_fp32_reproduces_sentence_transformers() {
    let provider = load(OnnxVariant::Fp32);
    let info = akidb_embedding_core::EmbeddingProvider::model_info(&provider);
    assert_eq!((info.dimension, info.max_tokens), (768, 2048));
    assert_eq!(
        provider.token_ids("Hello, world!", None).unwrap(),
        vec![2, 9259, 236764, 1902, 236888, 1]
    );
    check(&provider, "fp32", 0.9999, 0.9999);
}

/// The project's `q8` variant (quantised at first load and cached, see
/// `akidb_embedding_onnx::quantize`) keeps the vectors: worst cosine ≥ 0.997 and mean ≥ 0.999
/// against sentence-transformers fp32 on every text, token counts unchanged.
#[test]
#[ignore = "needs AKIDB_GEMMA_DIR"]
fn real_embeddinggemma_q8_keeps_the_vectors() {
    let provider = load(OnnxVariant::Q8);
    check(&provider, "q8", 0.997, 0.999);
}
