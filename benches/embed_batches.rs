//! Criterion benchmark: embedding batches of 10, 50 and 100 texts of mixed length (cycled from
//! the 32 texts of 20–60 words in `benches/texts.json`) with all-MiniLM-L6-v2 and the tiny
//! EmbeddingGemma double, 2 intra-op threads. Reported as texts per second.
//!
//! `cargo bench --bench embed_batches`. A model that is not installed is skipped with a
//! message. Flat sampling and 10 samples keep the run to about a minute on 2 cores.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use akidb_embedding_core::EmbedRequest;
use akidb_embedding_onnx::{LoadOptions, OnnxEmbeddingProvider};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use serde::Deserialize;

/// The shared benchmark texts (only the mixed-length batch is used here).
#[derive(Deserialize)]
struct Texts {
    batch32: Vec<String>,
}

/// Batch sizes benchmarked.
const BATCH_SIZES: [usize; 3] = [10, 50, 100];

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
            "embed_batches bench: skipping {name}: no model at {} (run scripts/setup.sh)",
            folder.display()
        );
        return None;
    }
    match OnnxEmbeddingProvider::load(
        LoadOptions::new(folder.display().to_string()).with_intra_threads(2),
    ) {
        Ok(provider) => Some(provider),
        Err(e) => {
            eprintln!("embed_batches bench: skipping {name}: cannot load it: {e}");
            None
        }
    }
}

fn bench_batches(c: &mut Criterion, texts: &Texts) {
    for (name, folder) in models() {
        let Some(provider) = load(name, &folder) else {
            continue;
        };
        let mut group = c.benchmark_group(format!("embed_batches/{name}"));
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        for size in BATCH_SIZES {
            let batch: Vec<String> = texts.batch32.iter().cycle().take(size).cloned().collect();
            group.throughput(Throughput::Elements(size as u64));
            group.bench_with_input(BenchmarkId::from_parameter(size), &batch, |b, batch| {
                b.iter(|| {
                    provider
                        .embed_blocking(EmbedRequest::new(batch.iter().cloned()))
                        .expect("embedding failed")
                });
            });
        }
        group.finish();
    }
}

fn main() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/texts.json");
    let texts: Texts = serde_json::from_slice(&std::fs::read(&path).expect("benches/texts.json"))
        .expect("benches/texts.json: expected {batch32}");
    let mut criterion = Criterion::default().configure_from_args();
    bench_batches(&mut criterion, &texts);
    criterion.final_summary();
}
