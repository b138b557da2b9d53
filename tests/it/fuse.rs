//! Graph fusion (`akidb_embedding_onnx::quantize::fuse`) on the tiny EmbeddingGemma double
//! and all-MiniLM-L6-v2: the fused graph holds the fused operators, gives the unfused graph's
//! vectors, and a text alone gives the vector it gets inside a padded batch (the attention
//! bias, padding and Gemma's sliding window, must be right for that). Loading fuses by
//! default, into the checked cache beside the graph.

use std::path::Path;

use akidb_embedding_core::{EmbedRequest, EmbeddingProvider};
use akidb_embedding_onnx::quantize::cache::{BESIDE_DIR, FUSED_FILE};
use akidb_embedding_onnx::quantize::fuse::{FuseRecipe, FuseReport, FuseStep};
use akidb_embedding_onnx::quantize::{NodeOverride, QuantizeRecipe, fuse_folder, quantize_folder};
use akidb_embedding_onnx::{LoadOptions, OnnxEmbeddingProvider, OnnxVariant};
use akidb_test_support::{copy_model, cosine, minilm_dir, temp_dir, tiny_gemma_dir};

/// Short and long texts together, so every short one is padded in the batch.
fn texts() -> Vec<String> {
    let long = "the quick brown fox jumps over the lazy dog ".repeat(12);
    vec![
        "Hello there!".to_string(),
        long.clone(),
        "向量数据库很快。".to_string(),
        "Where is the nearest train station?".to_string(),
        format!("{long} and then some more words at the end"),
        "👋🌍 emoji only 🎉".to_string(),
    ]
}

fn load(dir: &Path, options: impl FnOnce(LoadOptions) -> LoadOptions) -> OnnxEmbeddingProvider {
    OnnxEmbeddingProvider::load(options(
        crate::load_options(dir.to_str().unwrap()).with_intra_threads(2),
    ))
    .unwrap()
}

/// Fuses `dir` ahead of time, checks the rewrites, and compares the fused model with the
/// folder's own graph, text by text, alone and in one padded batch.
fn fused_matches_unfused(dir: &Path, name: &str, expected: &[(&str, usize)]) -> FuseReport {
    let out = temp_dir(&format!("fused-{name}"));
    let report = fuse_folder(dir, out.path(), "model.onnx", None, &FuseRecipe::default()).unwrap();
    let report = report.fused.unwrap();
    let fused = &report;
    for (rewrite, count) in expected {
        assert_eq!(
            fused.rewrites.get(*rewrite),
            Some(count),
            "{name}: {rewrite} in {:?}",
            fused.rewrites
        );
    }
    assert!(
        fused.nodes_after * 3 < fused.nodes_before * 2,
        "{name}: {} -> {} nodes",
        fused.nodes_before,
        fused.nodes_after
    );

    let plain = load(dir, |o| o.with_fused_graph(false));
    let fused = load(out.path(), |o| o);
    let texts = texts();
    let plain_batch = plain
        .embed_blocking(EmbedRequest::new(texts.clone()))
        .unwrap();
    let fused_batch = fused
        .embed_blocking(EmbedRequest::new(texts.clone()))
        .unwrap();
    assert_eq!(plain_batch.token_counts, fused_batch.token_counts);
    crate::assert_alone_matches_batch(&fused, &texts, &fused_batch, 0.99999, name);
    for i in 0..texts.len() {
        let fused_vs_plain = cosine(&fused_batch.embeddings[i], &plain_batch.embeddings[i]);
        assert!(
            fused_vs_plain >= 0.99999,
            "{name} text {i}: fused vs unfused {fused_vs_plain}"
        );
    }
    report
}

#[test]
fn tiny_gemma_fused_matches_unfused_alone_and_padded() {
    let dir = tiny_gemma_dir();
    let fused = fused_matches_unfused(
        &dir,
        "tiny-gemma",
        &[
            ("multi_head_attention", 6),
            ("fast_gelu", 6),
            ("simplified_layer_normalization", 37),
            ("rotary_embedding", 12),
            ("skip_simplified_layer_normalization", 12),
            ("multi_query_attention", 6),
            ("attention_row_ops", 6),
            ("norm_add_norm", 12),
        ],
    );
    // Its attention became the multi-query form: nothing left for the packed one.
    assert_eq!(fused.rewrites.get("packed_attention"), None);
}

#[test]
fn minilm_fused_matches_unfused_alone_and_padded() {
    let dir = minilm_dir();
    let fused = fused_matches_unfused(
        &dir,
        "minilm",
        &[
            ("multi_head_attention", 6),
            ("gelu", 6),
            ("packed_attention", 6),
        ],
    );
    // Twelve key/value heads: the multi-query form does not apply.
    assert_eq!(fused.rewrites.get("multi_query_attention"), None);
}

/// The default load fuses into the cache beside the graph; `with_fused_graph(false)` runs
/// the folder's graph and adds nothing.
#[test]
fn loading_fuses_into_the_cache_by_default_and_can_be_turned_off() {
    let dir = tiny_gemma_dir();
    let copy = copy_model(&dir, "fuse-load", &[]);
    let entries = || -> Vec<_> {
        std::fs::read_dir(copy.path().join(BESIDE_DIR))
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.join(FUSED_FILE).is_file())
                    .collect()
            })
            .unwrap_or_default()
    };
    let plain = load(copy.path(), |o| o.with_fused_graph(false));
    assert!(entries().is_empty(), "nothing cached without fusion");
    let fused = load(copy.path(), |o| o);
    assert_eq!(entries().len(), 1, "one fused entry after the first load");
    let again = load(copy.path(), |o| o);
    assert_eq!(entries().len(), 1, "the entry is reused");
    let text = EmbedRequest::new(["Where is the nearest train station?"]);
    let a = plain.embed_blocking(text.clone()).unwrap();
    let b = fused.embed_blocking(text.clone()).unwrap();
    let c = again.embed_blocking(text).unwrap();
    assert!(cosine(&a.embeddings[0], &b.embeddings[0]) >= 0.99999);
    assert_eq!(b.embeddings, c.embeddings);
    assert_eq!(fused.model_info().dimension, 32);
}

/// `q8_matmul`: the 8-bit products become `ai.akidb::MatMulQ8` both when the fusion and the
/// quantisation run together (from the fp32 graph) and when a `q8` graph is fused, and the
/// vectors are those of the same graph on ONNX Runtime's `MatMulNBits`, a text alone as in a
/// padded batch. (On a CPU without AVX-512 VNNI the operator runs its portable loop.)
#[test]
fn q8_matmul_keeps_the_q8_vectors() {
    let dir = tiny_gemma_dir();
    // Blocks of 32, and 16 for down_proj: the tiny double's K (32, 64) takes both.
    let recipe =
        QuantizeRecipe::default().with_override(NodeOverride::new("*/down_proj/*").block_size(16));
    let with = FuseRecipe::only(FuseStep::ALL);
    let without = FuseRecipe::only(FuseStep::PORTABLE);
    let q8 = |name: &str, fuse: &FuseRecipe| {
        let out = temp_dir(name);
        let report = fuse_folder(&dir, out.path(), "model.onnx", Some(&recipe), fuse).unwrap();
        (out, report.fused.unwrap())
    };
    let (plain_dir, plain_report) = q8("q8-portable", &without);
    let (kernel_dir, kernel_report) = q8("q8-kernel", &with);
    assert_eq!(plain_report.rewrites.get("q8_matmul"), None);
    // q, o, gate, up and down in each of 6 layers (k and v are 16 wide: not a multiple of 32),
    // and the two Dense heads.
    assert_eq!(
        kernel_report.rewrites.get("q8_matmul"),
        Some(&32),
        "{:?}",
        kernel_report.rewrites
    );

    // A q8 graph fused on its own gets the same rewrites.
    let quantised = temp_dir("q8-unfused");
    quantize_folder(&dir, quantised.path(), &recipe).unwrap();
    let refused = temp_dir("q8-refused");
    let report = fuse_folder(
        quantised.path(),
        refused.path(),
        "model_q8.onnx",
        None,
        &with,
    )
    .unwrap()
    .fused
    .unwrap();
    assert_eq!(report.rewrites.get("q8_matmul"), Some(&32));

    let open = |dir: &Path| load(dir, |o| o.with_variant(OnnxVariant::Q8));
    let texts = texts();
    let batch =
        |p: &OnnxEmbeddingProvider| p.embed_blocking(EmbedRequest::new(texts.clone())).unwrap();
    let plain = batch(&open(plain_dir.path()));
    let kernel_provider = open(kernel_dir.path());
    let kernel = batch(&kernel_provider);
    let refused = batch(&open(refused.path()));
    assert_eq!(plain.token_counts, kernel.token_counts);
    crate::assert_alone_matches_batch(&kernel_provider, &texts, &kernel, 0.99999, "MatMulQ8");
    for i in 0..texts.len() {
        let vs_plain = cosine(&kernel.embeddings[i], &plain.embeddings[i]);
        assert!(
            vs_plain >= 0.99999,
            "text {i}: MatMulQ8 vs MatMulNBits {vs_plain}"
        );
        let vs_refused = cosine(&kernel.embeddings[i], &refused.embeddings[i]);
        assert!(
            vs_refused >= 0.99999,
            "text {i}: fused from fp32 vs from q8 {vs_refused}"
        );
    }
}

/// `with_profiling` records ONNX Runtime's per-node profile of the graph the library runs:
/// the fused graph's own operators (the library's row operators among them) appear by name.
/// A provider loaded without it refuses to end a profile.
#[test]
fn profiling_records_the_fused_graphs_operators() {
    let dir = tiny_gemma_dir();
    let copy = copy_model(&dir, "fuse-profile", &[]);
    let out = temp_dir("fuse-profile-out");
    let provider = load(copy.path(), |o| o.with_profiling(out.path().join("tiny")));
    provider
        .embed_blocking(EmbedRequest::new(["Where is the nearest train station?"]))
        .unwrap();
    let file = provider.end_profiling().unwrap();
    assert!(file.starts_with(out.path()), "{}", file.display());
    let events: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let runs = events
        .iter()
        .filter(|e| e["cat"] == "Session" && e["name"] == "model_run")
        .count();
    assert_eq!(runs, 2, "the load's warm-up run and ours");
    let operators: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| e["cat"] == "Node")
        .filter_map(|e| e["args"]["op_name"].as_str())
        .collect();
    for operator in ["NormRotary", "AttentionSoftmax", "NormAddNorm", "FastGelu"] {
        assert!(operators.contains(operator), "{operator} in {operators:?}");
    }

    let plain = load(copy.path(), |o| o);
    let error = plain.end_profiling().unwrap_err();
    assert!(error.is_invalid_input(), "{error}");
}
