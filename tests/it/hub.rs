//! Loading from the Hugging Face hub, against a local server with the hub's file layout
//! (`HF_ENDPOINT`-style endpoint), never the internet: EmbeddingGemma's layout (configs at the
//! root, `onnx/model.onnx` + `onnx/model.onnx_data`), the offline cache, a missing data file.

use std::path::{Path, PathBuf};

use akidb_embedding_core::{EmbedRequest, EmbeddingError, EmbeddingProvider};
use akidb_embedding_onnx::{LoadOptions, OnnxEmbeddingProvider};
use akidb_test_support::hub_server::{HubServer, onnx_community_layout};
use akidb_test_support::{cosine, reference, temp_dir, tiny_gemma_dir};

const REPO: &str = "onnx-community/embeddinggemma-300m-ONNX";

fn options(endpoint: &str, cache: &Path) -> LoadOptions {
    crate::load_options(REPO)
        .with_endpoint(endpoint)
        .with_cache_dir(cache)
        .with_models_dir(cache.join("no-installed-models"))
        .with_offline(false)
}

#[test]
fn downloads_split_weights_then_loads_offline_from_the_cache() {
    let (dir, reference) = (tiny_gemma_dir(), reference("tiny-embeddinggemma.st.json"));
    let server = HubServer::start(REPO, onnx_community_layout(&dir, true));
    let cache = temp_dir("hub-cache");

    let provider = OnnxEmbeddingProvider::load(options(&server.endpoint, cache.path())).unwrap();
    let requested = server.requests();
    assert!(
        requested
            .iter()
            .any(|p| p.ends_with("/onnx/model.onnx_data")),
        "{requested:?}"
    );
    assert_eq!(provider.model_info().id, REPO);
    assert_eq!(
        provider.model_info().prompts.len(),
        14,
        "built-in prompt table"
    );
    let query = provider
        .embed_blocking(
            EmbedRequest::new(["Where is the nearest train station?"]).with_prompt("query"),
        )
        .unwrap();
    assert!(cosine(&query.embeddings[0], &reference.items["q07"].embedding) >= 0.9999);
    assert_eq!(query.token_counts[0], reference.items["q07"].tokens);

    // Offline: the cache alone suffices, the server is not asked again.
    let before = server.requests().len();
    let offline =
        OnnxEmbeddingProvider::load(options("http://127.0.0.1:9", cache.path()).with_offline(true))
            .unwrap();
    let again = offline
        .embed_blocking(
            EmbedRequest::new(["Where is the nearest train station?"]).with_prompt("query"),
        )
        .unwrap();
    assert_eq!(again.embeddings, query.embeddings);
    assert_eq!(server.requests().len(), before);
    // The cache holds symlinks into blobs/; the graph was loaded through the snapshot path.
    let snapshot_graph = std::fs::read_dir(
        cache
            .path()
            .join("models--onnx-community--embeddinggemma-300m-ONNX/snapshots"),
    )
    .unwrap()
    .flatten()
    .next()
    .unwrap()
    .path()
    .join("onnx/model.onnx_data");
    assert!(snapshot_graph.exists());
}

#[test]
fn missing_data_file_on_the_hub_is_a_clear_error() {
    let dir = tiny_gemma_dir();
    let server = HubServer::start(REPO, onnx_community_layout(&dir, false));
    let cache = temp_dir("hub-cache-no-data");
    let err = OnnxEmbeddingProvider::load(options(&server.endpoint, cache.path())).unwrap_err();
    assert!(matches!(err, EmbeddingError::Download { .. }), "{err:?}");
    assert!(err.to_string().contains("onnx/model.onnx_data"), "{err}");
}

#[test]
fn offline_with_an_empty_cache_says_what_is_missing() {
    let cache = temp_dir("hub-cache-empty");
    let err =
        OnnxEmbeddingProvider::load(options("http://127.0.0.1:9", cache.path()).with_offline(true))
            .unwrap_err();
    assert!(matches!(err, EmbeddingError::Download { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("tokenizer.json") && message.contains("offline"),
        "{message}"
    );
}

/// A repository that publishes no `model_q8.onnx`: `--variant q8` downloads the fp32 files and
/// quantises them once into `<cache>/akidb-q8`, never into the hub cache's snapshots; the
/// vectors stay close to the fp32 reference, token counts unchanged.
#[test]
fn q8_from_a_repository_without_one_is_quantised_into_the_cache() {
    let (dir, reference) = (tiny_gemma_dir(), reference("tiny-embeddinggemma.st.json"));
    let server = HubServer::start(REPO, onnx_community_layout(&dir, true));
    let cache = temp_dir("hub-q8-cache");
    let provider = OnnxEmbeddingProvider::load(
        options(&server.endpoint, cache.path()).with_variant(akidb_embedding_onnx::OnnxVariant::Q8),
    )
    .unwrap();
    let requested = server.requests();
    assert!(
        requested.iter().any(|p| p.ends_with("/onnx/model_q8.onnx")),
        "the published q8 graph was asked for first: {requested:?}"
    );
    assert!(
        requested
            .iter()
            .any(|p| p.ends_with("/onnx/model.onnx_data")),
        "{requested:?}"
    );
    let entries: Vec<PathBuf> = std::fs::read_dir(cache.path().join("akidb-q8"))
        .expect("the q8 cache is inside the named cache folder")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("model_q8.onnx").is_file())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let response = provider
        .embed_blocking(
            EmbedRequest::new(["Where is the nearest train station?"]).with_prompt("query"),
        )
        .unwrap();
    assert_eq!(response.token_counts[0], reference.items["q07"].tokens);
    let similarity = cosine(&response.embeddings[0], &reference.items["q07"].embedding);
    assert!(similarity >= 0.99, "q8 of the double: cosine {similarity}");
}
