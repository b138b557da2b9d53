//! Every vector of `../shared/reference/` reproduced through the service (`POST
//! /api/v1/embed`, one request per prompt group, so texts share runs as in production):
//! cosine ≥ 0.9999 against the reference, for MiniLM int8, the EmbeddingGemma double and,
//! with `AKIDB_GEMMA_DIR`, the real EmbeddingGemma-300m (`#[ignore = "needs AKIDB_GEMMA_DIR"]`:
//! run with `--ignored`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use akidb_embedding_core::EmbeddingProvider;
use akidb_embedding_onnx::OnnxEmbeddingProvider;
use akidb_test_support::{cosine, real_gemma_dir, reference, sentences};
use serde_json::json;

use crate::common::{self, TestServer, config, json_of, vectors};

async fn reproduces_through_the_service(dir: PathBuf, reference_file: &str) {
    let (sentences, reference) = (sentences(), reference(reference_file));
    let provider = tokio::task::spawn_blocking(move || {
        OnnxEmbeddingProvider::load(
            akidb_embeddings::install::load_options(dir.to_string_lossy()).with_intra_threads(2),
        )
        .unwrap()
    })
    .await
    .unwrap();
    let provider: Arc<dyn EmbeddingProvider> = Arc::new(provider);
    let server = TestServer::start(config(), vec![provider]).await;
    let client = common::fresh_client();
    let mut prompts: Vec<Option<String>> =
        sentences.iter().map(|s| s.prompt_name.clone()).collect();
    prompts.sort();
    prompts.dedup();
    let mut checked = 0;
    for prompt in prompts {
        let group: Vec<_> = sentences
            .iter()
            .filter(|s| s.prompt_name == prompt)
            .collect();
        let texts: Vec<&str> = group.iter().map(|s| s.text.as_str()).collect();
        let response = client
            .post(server.url("/api/v1/embed"))
            .json(&json!({"inputs": texts, "prompt_name": prompt}))
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(response).await;
        assert_eq!(status, 200, "{body}");
        for (sentence, vector) in group.iter().zip(vectors(&body)) {
            let expected = &reference.items[&sentence.id];
            assert_eq!(vector.len(), expected.embedding.len(), "{}", sentence.id);
            let similarity = cosine(&vector, &expected.embedding);
            assert!(
                similarity >= 0.9999,
                "{reference_file} {}: cosine {similarity} through the service",
                sentence.id
            );
            checked += 1;
        }
    }
    assert_eq!(checked, reference.items.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_reproduces_the_reference_through_the_service() {
    reproduces_through_the_service(
        akidb_test_support::minilm_dir(),
        "all-minilm-l6-v2-int8.ort.json",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_embeddinggemma_reproduces_the_reference_through_the_service() {
    reproduces_through_the_service(
        akidb_test_support::tiny_gemma_dir(),
        "tiny-embeddinggemma.st.json",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs AKIDB_GEMMA_DIR"]
async fn real_embeddinggemma_reproduces_the_reference_through_the_service() {
    reproduces_through_the_service(real_gemma_dir(), "embeddinggemma-300m.st.json").await;
}
