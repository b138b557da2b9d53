//! Criterion benchmark: tokenisation of the short, medium and long benchmark texts
//! (`benches/texts.json`) with all-MiniLM-L6-v2 and the tiny EmbeddingGemma double, through
//! the provider's public `tokenize` (model tokenizer, special tokens, truncation at the cap).
//!
//! `cargo bench --bench tokenize`. A model that is not installed is skipped with a message.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use akidb_embedding_onnx::{LoadOptions, OnnxEmbeddingProvider};
use criterion::{BenchmarkId, Criterion, Throughput};
use serde::Deserialize;

/// The shared benchmark texts.
#[derive(Deserialize)]
struct Texts {
    short: String,
    medium: String,
    long: String,
}

/// The models benchmarked: (name, folder).
fn models() -> Vec<(&'static str, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    vec![
        ("minilm", root.join(".akidb/models/all-MiniLM-L6-v2")),
        (
            "tiny-gemma",
            root.join("../shared/models/tiny-embeddinggemma"),
        ),
    ]
}

/// Loads a model, or says why it is skipped.
fn load(name: &str, folder: &Path) -> Option<OnnxEmbeddingProvider> {
    if !folder.join("tokenizer.json").is_file() {
        eprintln!(
            "tokenize bench: skipping {name}: no model at {} (run scripts/setup.sh)",
            folder.display()
        );
        return None;
    }
    match OnnxEmbeddingProvider::load(
        LoadOptions::new(folder.display().to_string()).with_intra_threads(2),
    ) {
        Ok(provider) => Some(provider),
        Err(e) => {
            eprintln!("tokenize bench: skipping {name}: cannot load it: {e}");
            None
        }
    }
}

fn bench_tokenize(c: &mut Criterion, texts: &Texts) {
    for (name, folder) in models() {
        let Some(provider) = load(name, &folder) else {
            continue;
        };
        let mut group = c.benchmark_group(format!("tokenize/{name}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for (label, text) in [
            ("short", &texts.short),
            ("medium", &texts.medium),
            ("long", &texts.long),
        ] {
            let tokens = provider.tokenize(text, None).expect("tokenize").len();
            group.throughput(Throughput::Elements(tokens as u64));
            group.bench_with_input(BenchmarkId::from_parameter(label), text, |b, text| {
                b.iter(|| provider.tokenize(text, None).expect("tokenize"));
            });
        }
        group.finish();
    }
}

fn main() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/texts.json");
    let texts: Texts = serde_json::from_slice(&std::fs::read(&path).expect("benches/texts.json"))
        .expect("benches/texts.json: expected {short, medium, long}");
    let mut criterion = Criterion::default().configure_from_args();
    bench_tokenize(&mut criterion, &texts);
    criterion.final_summary();
}
