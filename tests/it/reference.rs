//! Both models reproduce every vector of `../shared/reference/` (cosine ≥ 0.9999, token counts
//! exact), one text at a time and in one mixed batch, with and without prompts.

use akidb_embedding_core::{EmbedRequest, EmbeddingProvider};
use akidb_embedding_onnx::OnnxEmbeddingProvider;
use akidb_test_support::{
    Reference, Sentence, cosine, minilm_dir, reference, sentences, tiny_gemma_dir,
};

const MIN_COSINE: f64 = 0.9999;

fn check_singles(provider: &OnnxEmbeddingProvider, sentences: &[Sentence], reference: &Reference) {
    let measured = crate::fidelity(provider, sentences, reference);
    assert!(
        measured.worst >= MIN_COSINE,
        "{}: cosine {}",
        measured.worst_id,
        measured.worst
    );
}

/// All texts without a prompt in one request (mixed lengths: empty to 2,600 words), then all
/// texts with each prompt: the batch path pads, sorts and splits, and must not change a vector.
fn check_batched(provider: &OnnxEmbeddingProvider, sentences: &[Sentence], reference: &Reference) {
    let mut prompts: Vec<Option<String>> =
        sentences.iter().map(|s| s.prompt_name.clone()).collect();
    prompts.sort();
    prompts.dedup();
    for prompt in prompts {
        let group: Vec<&Sentence> = sentences
            .iter()
            .filter(|s| s.prompt_name == prompt)
            .collect();
        let mut request = EmbedRequest::new(group.iter().map(|s| s.text.clone()));
        request.prompt_name = prompt.clone();
        let response = provider.embed_blocking(request).unwrap();
        assert_eq!(response.count(), group.len());
        for (sentence, (vector, tokens)) in group
            .iter()
            .zip(response.embeddings.iter().zip(&response.token_counts))
        {
            let expected = &reference.items[&sentence.id];
            assert_eq!(
                *tokens, expected.tokens,
                "batched token count of {}",
                sentence.id
            );
            let similarity = cosine(vector, &expected.embedding);
            assert!(
                similarity >= MIN_COSINE,
                "batched {}: cosine {similarity}",
                sentence.id
            );
        }
    }
}

/// The model loaded from `dir`, the reference texts and the reference file.
fn fixture(
    dir: std::path::PathBuf,
    reference_file: &str,
) -> (OnnxEmbeddingProvider, Vec<Sentence>, Reference) {
    let (sentences, reference) = (sentences(), reference(reference_file));
    let provider = OnnxEmbeddingProvider::load(
        crate::load_options(dir.to_str().unwrap()).with_intra_threads(2),
    )
    .unwrap();
    (provider, sentences, reference)
}

#[test]
fn minilm_int8_reproduces_reference() {
    let (provider, sentences, reference) = fixture(minilm_dir(), "all-minilm-l6-v2-int8.ort.json");
    let info = provider.model_info();
    assert_eq!((info.dimension, info.max_tokens), (384, reference.cap));
    assert!(info.prompts.is_empty());
    check_singles(&provider, &sentences, &reference);
    check_batched(&provider, &sentences, &reference);
}

#[test]
fn tiny_embeddinggemma_reproduces_reference() {
    let (provider, sentences, reference) = fixture(tiny_gemma_dir(), "tiny-embeddinggemma.st.json");
    let info = provider.model_info();
    assert_eq!(info.max_tokens, reference.cap);
    assert_eq!(info.dimension, 32);
    assert!(
        info.prompts.contains(&"query".to_string()) && info.prompts.contains(&"STS".to_string())
    );
    assert_eq!(
        provider.token_ids("Hello, world!", None).unwrap(),
        vec![2, 9259, 236764, 1902, 236888, 1]
    );
    check_singles(&provider, &sentences, &reference);
    check_batched(&provider, &sentences, &reference);
}
