//! The same text gives the same vector alone, inside a batch of mixed lengths, split across
//! runs, and under concurrent callers; options (normalize, Matryoshka dimensions, prompts)
//! do what they say.

use std::path::Path;
use std::sync::Arc;

use akidb_embedding_core::{EmbedRequest, EmbeddingProvider, vector};
use akidb_embedding_onnx::{LoadOptions, ModelSpec, OnnxEmbeddingProvider};
use akidb_test_support::{copy_model, cosine, minilm_dir, tiny_gemma_dir};

fn mixed_texts() -> Vec<String> {
    let long = "the quick brown fox jumps over the lazy dog ".repeat(40);
    vec![
        "Hello there!".to_string(),
        long.clone(),
        String::new(),
        "向量数据库很快。".to_string(),
        "Where is the nearest train station?".to_string(),
        format!("{long} and then some more words at the end"),
        "👋🌍 emoji only 🎉".to_string(),
        "let v: Vec<f32> = model.embed(&texts)?;".to_string(),
    ]
}

fn assert_alone_equals_batched(provider: &OnnxEmbeddingProvider) {
    let texts = mixed_texts();
    let batched = provider
        .embed_blocking(EmbedRequest::new(texts.clone()))
        .unwrap();
    crate::assert_alone_matches_batch(provider, &texts, &batched, 0.9999, "mixed texts");
    for i in 0..texts.len() {
        let norm = batched.embeddings[i]
            .iter()
            .map(|v| v * v)
            .sum::<f32>()
            .sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "text {i} norm {norm}");
    }
}

fn load(dir: &Path, options: impl FnOnce(LoadOptions) -> LoadOptions) -> OnnxEmbeddingProvider {
    OnnxEmbeddingProvider::load(options(
        crate::load_options(dir.to_str().unwrap()).with_intra_threads(2),
    ))
    .unwrap()
}

#[test]
fn minilm_alone_equals_batched_and_split_runs() {
    let dir = minilm_dir();
    assert_alone_equals_batched(&load(&dir, |o| o));
    // Runs of at most 3 texts and a small token budget give the same vectors.
    let whole = load(&dir, |o| o)
        .embed_blocking(EmbedRequest::new(mixed_texts()))
        .unwrap();
    let split = load(&dir, |o| {
        o.with_max_batch_size(3).with_max_batch_tokens(300)
    })
    .embed_blocking(EmbedRequest::new(mixed_texts()))
    .unwrap();
    for (a, b) in whole.embeddings.iter().zip(&split.embeddings) {
        assert!(cosine(a, b) >= 0.9999);
    }
}

#[test]
fn gemma_alone_equals_batched() {
    let dir = tiny_gemma_dir();
    assert_alone_equals_batched(&load(&dir, |o| o));
}

#[test]
fn normalize_false_returns_raw_mean_pooled_vectors() {
    let dir = minilm_dir();
    let provider = load(&dir, |o| o);
    let raw = provider
        .embed_blocking(EmbedRequest::new(["Hello there!"]).with_normalize(false))
        .unwrap();
    let unit = provider
        .embed_blocking(EmbedRequest::new(["Hello there!"]))
        .unwrap();
    let norm = raw.embeddings[0].iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!(
        (norm - 1.0).abs() > 0.01,
        "raw MiniLM vectors are not unit length (norm {norm})"
    );
    let mut renormalised = raw.embeddings[0].clone();
    vector::l2_normalize(&mut renormalised);
    assert!(cosine(&renormalised, &unit.embeddings[0]) > 0.999_999);
}

#[test]
fn matryoshka_truncates_then_renormalises() {
    let dir = tiny_gemma_dir();
    let spec = ModelSpec::embedding_gemma_300m().with_matryoshka_dimensions(vec![16, 8]);
    let provider = load(&dir, |o| o.with_spec(spec));
    assert_eq!(provider.model_info().dimensions, vec![32, 16, 8]);
    let full = provider
        .embed_blocking(EmbedRequest::new(["Vector search"]))
        .unwrap();
    let small = provider
        .embed_blocking(EmbedRequest::new(["Vector search"]).with_dimensions(16))
        .unwrap();
    assert_eq!(small.dimension, 16);
    let mut expected = full.embeddings[0][..16].to_vec();
    vector::l2_normalize(&mut expected);
    for (a, b) in small.embeddings[0].iter().zip(&expected) {
        assert!((a - b).abs() < 1e-6);
    }
}

#[test]
fn prompts_come_from_the_folder_or_the_builtin_table() {
    let dir = tiny_gemma_dir();
    // The double ships config_sentence_transformers.json; the onnx-community repo does not, so
    // a folder without it falls back to the built-in EmbeddingGemma table (matched by model_type).
    let without = copy_model(
        &dir,
        "gemma-no-st-config",
        &["config_sentence_transformers.json"],
    );
    let with_file = load(&dir, |o| o);
    let from_table = load(without.path(), |o| o);
    assert_eq!(with_file.model_info().prompts.len(), 14);
    assert_eq!(
        with_file.model_info().prompts,
        from_table.model_info().prompts
    );
    for prompt in ["query", "document", "STS"] {
        let a = with_file
            .embed_blocking(EmbedRequest::new(["Hi"]).with_prompt(prompt))
            .unwrap();
        let b = from_table
            .embed_blocking(EmbedRequest::new(["Hi"]).with_prompt(prompt))
            .unwrap();
        assert_eq!(a.token_counts, b.token_counts);
        assert!(cosine(&a.embeddings[0], &b.embeddings[0]) > 0.999_999);
    }
    // A folder file that defines other prompts overrides the table.
    std::fs::write(
        without.path().join("config_sentence_transformers.json"),
        r#"{"prompts": {"only": "only: "}}"#,
    )
    .unwrap();
    assert_eq!(
        load(without.path(), |o| o).model_info().prompts,
        vec!["only".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_get_the_same_vectors() {
    let dir = minilm_dir();
    let provider: Arc<dyn EmbeddingProvider> = Arc::new(load(&dir, |o| o));
    let texts = mixed_texts();
    let expected = provider
        .embed(EmbedRequest::new(texts.clone()))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for round in 0..16 {
        let provider = Arc::clone(&provider);
        let text = texts[round % texts.len()].clone();
        tasks.push(tokio::spawn(async move {
            (
                round % 8,
                provider.embed(EmbedRequest::new([text])).await.unwrap(),
            )
        }));
    }
    for task in tasks {
        let (index, response) = task.await.unwrap();
        assert!(cosine(&response.embeddings[0], &expected.embeddings[index]) >= 0.9999);
    }
}

#[test]
fn optimized_graph_cache_is_written_then_used_with_identical_vectors() {
    let dir = minilm_dir();
    let folder = akidb_test_support::temp_dir("optimized-cache");
    let model = akidb_test_support::copy_model(&dir, "optimized-cache-model", &[]);
    let cache = folder.path().join("minilm.optimized.onnx");
    let sidecar = folder.path().join("minilm.optimized.onnx.source");
    // The folder's own graph, whose files the sidecar records (a fused graph's cache entry
    // is keyed by content instead).
    let first = load(model.path(), |o| {
        o.with_optimized_model_cache(&cache).with_fused_graph(false)
    });
    assert!(cache.is_file(), "the optimised graph was saved");
    assert!(
        folder.path().join("minilm.optimized.onnx_data").is_file(),
        "its weights were saved beside it"
    );
    let recorded = std::fs::read_to_string(&sidecar).expect("the sidecar records the source");
    let second = load(model.path(), |o| {
        o.with_optimized_model_cache(&cache).with_fused_graph(false)
    });
    let texts = mixed_texts();
    let a = first
        .embed_blocking(EmbedRequest::new(texts.clone()))
        .unwrap();
    let b = second
        .embed_blocking(EmbedRequest::new(texts.clone()))
        .unwrap();
    for (x, y) in a.embeddings.iter().zip(&b.embeddings) {
        assert!(cosine(x, y) >= 0.999_999);
    }
    assert_eq!(std::fs::read_to_string(&sidecar).unwrap(), recorded);

    // A source file replaced after the cache was made: the cache is rebuilt, not used.
    let onnx = model.path().join("model.onnx");
    let bytes = std::fs::read(&onnx).unwrap();
    let recorded_mtime = std::fs::metadata(&onnx).unwrap().modified().unwrap();
    std::fs::write(&onnx, bytes).unwrap();
    // Same bytes, a later modification time, set rather than waited for: the clock's
    // granularity could otherwise give the rewritten file its old time.
    std::fs::File::options()
        .write(true)
        .open(&onnx)
        .unwrap()
        .set_modified(recorded_mtime + std::time::Duration::from_secs(2))
        .unwrap();
    let third = load(model.path(), |o| {
        o.with_optimized_model_cache(&cache).with_fused_graph(false)
    });
    let rebuilt = std::fs::read_to_string(&sidecar).expect("the sidecar was written again");
    assert_ne!(
        rebuilt, recorded,
        "the cache was rebuilt for the new source"
    );
    let c = third.embed_blocking(EmbedRequest::new(texts)).unwrap();
    for (x, y) in a.embeddings.iter().zip(&c.embeddings) {
        assert!(cosine(x, y) >= 0.999_999);
    }

    // An interrupted save (graph without sidecar) is never used either.
    std::fs::remove_file(&sidecar).unwrap();
    let _fourth = load(model.path(), |o| {
        o.with_optimized_model_cache(&cache).with_fused_graph(false)
    });
    assert!(sidecar.is_file(), "the cache was saved again");
}

/// `tokenize` (whose counts a service checks its token limit against) agrees with `embed`,
/// with and without a prompt, truncated or refused, for both models, large requests included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_agrees_with_embed() {
    use akidb_embedding_core::{EmbeddingError, Truncation};
    for (dir, prompt) in [(minilm_dir(), None), (tiny_gemma_dir(), Some("query"))] {
        let provider = load(&dir, |o| o);
        let mut texts = mixed_texts();
        // Past the inline threshold: counted on the blocking pool.
        texts.push("word ".repeat(5_000));
        let mut request = EmbedRequest::new(texts.clone());
        if let Some(prompt) = prompt {
            request = request.with_prompt(prompt);
        }
        let counts = provider
            .tokenize(request.clone())
            .await
            .unwrap()
            .token_counts();
        let embedded = provider.embed(request.clone()).await.unwrap();
        assert_eq!(counts, embedded.token_counts, "{}", dir.display());
        assert_eq!(
            counts.last().copied(),
            Some(provider.model_info().max_tokens),
            "the long text is counted after truncation"
        );
        // With truncation refused, the first text that was cut is named.
        let max_tokens = provider.model_info().max_tokens;
        let first_cut = counts.iter().position(|&c| c == max_tokens).unwrap();
        let strict = request.with_truncation(Truncation::Error);
        match provider.tokenize(strict).await {
            Err(EmbeddingError::TextTooLong { index, tokens, .. }) => {
                assert_eq!(index, first_cut, "{}", dir.display());
                assert!(tokens > max_tokens);
            }
            other => panic!("{}: {other:?}", dir.display()),
        }
    }
}
