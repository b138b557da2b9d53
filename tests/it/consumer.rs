//! A consumer that knows only `Arc<dyn EmbeddingProvider>` (as AkiDB's storage crates do) runs
//! unchanged against the mock and the real provider.

use std::sync::Arc;

use akidb_embedding_core::{EmbedRequest, EmbeddingError, EmbeddingProvider};
use akidb_embedding_mock::MockEmbeddingProvider;
use akidb_embedding_onnx::OnnxEmbeddingProvider;
use akidb_test_support::{cosine, minilm_dir, tiny_gemma_dir};

/// What a vector store does: index documents, answer a query with the best match.
async fn index_and_search(provider: Arc<dyn EmbeddingProvider>) -> Result<usize, EmbeddingError> {
    provider.health_check().await?;
    let documents = [
        "The train station is two blocks north.",
        "Bread is baked at dawn.",
        "Rust prevents data races.",
    ];
    let info = provider.model_info().clone();
    let indexed = provider
        .embed(EmbedRequest::new(documents).with_prompt("document"))
        .await?;
    assert_eq!(indexed.count(), 3);
    assert_eq!(indexed.dimension, info.dimension);
    assert!(indexed.embeddings.iter().all(|v| v.len() == info.dimension));
    assert_eq!(
        indexed.total_tokens(),
        indexed.token_counts.iter().sum::<usize>()
    );
    let query = provider
        .embed(
            EmbedRequest::new(["The train station is two blocks north."]).with_prompt("document"),
        )
        .await?;
    let best = indexed
        .embeddings
        .iter()
        .enumerate()
        .max_by(|a, b| {
            cosine(&query.embeddings[0], a.1).total_cmp(&cosine(&query.embeddings[0], b.1))
        })
        .map(|(i, _)| i)
        .unwrap();
    // Every provider must reject an empty batch the same way.
    assert_eq!(
        provider
            .embed(EmbedRequest::new(Vec::<String>::new()))
            .await
            .unwrap_err(),
        EmbeddingError::EmptyBatch
    );
    Ok(best)
}

#[tokio::test]
async fn consumer_runs_against_the_mock() {
    let provider: Arc<dyn EmbeddingProvider> = Arc::new(MockEmbeddingProvider::new(64));
    assert_eq!(index_and_search(provider).await.unwrap(), 0);
}

#[tokio::test]
async fn consumer_runs_against_real_models() {
    for dir in [minilm_dir(), tiny_gemma_dir()] {
        let provider: Arc<dyn EmbeddingProvider> = Arc::new(
            OnnxEmbeddingProvider::load(crate::load_options(dir.to_str().unwrap())).unwrap(),
        );
        assert_eq!(
            index_and_search(provider).await.unwrap(),
            0,
            "{}",
            dir.display()
        );
    }
}
