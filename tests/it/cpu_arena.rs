//! ONNX Runtime's CPU memory arena changes where a run's buffers come from, never what the
//! run computes: vectors with the arena off are bit for bit those with it on (what it saves
//! in memory is measured in `benches/README.md`, not tested).

use akidb_embedding_core::EmbedRequest;
use akidb_embedding_onnx::OnnxEmbeddingProvider;
use akidb_test_support::{minilm_dir, tiny_gemma_dir};

/// A batch of mixed lengths, up to past MiniLM's cap, so runs pad and allocate differently.
fn texts() -> Vec<String> {
    let sentence = "The night train to the northern coast leaves from platform nine. ";
    let mut texts: Vec<String> = (1..=12).map(|n| sentence.repeat(n * n)).collect();
    texts.extend([
        "東京駅はどこですか？".to_string(),
        "🚂".to_string(),
        String::new(),
    ]);
    texts
}

#[test]
fn vectors_are_identical_with_the_arena_off() {
    for dir in [minilm_dir(), tiny_gemma_dir()] {
        let load = |arena: bool| {
            OnnxEmbeddingProvider::load(
                crate::load_options(dir.to_str().unwrap())
                    .with_intra_threads(1)
                    .with_cpu_arena(arena),
            )
            .unwrap()
        };
        let (with_arena, without_arena) = (load(true), load(false));
        let request = EmbedRequest::new(texts()).with_normalize(false);
        let want = with_arena.embed_blocking(request.clone()).unwrap();
        // Twice: the second run of an arena-less session allocates everything again.
        for _ in 0..2 {
            let got = without_arena.embed_blocking(request.clone()).unwrap();
            assert_eq!(got.token_counts, want.token_counts, "{}", dir.display());
            assert_eq!(got.embeddings, want.embeddings, "{}", dir.display());
        }
    }
}
