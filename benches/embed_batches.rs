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

mod common;

use std::time::Duration;

use akidb_embedding_core::EmbedRequest;
use common::Texts;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

/// Batch sizes benchmarked.
const BATCH_SIZES: [usize; 3] = [10, 50, 100];

fn bench_batches(c: &mut Criterion, texts: &Texts) {
    for (name, provider) in common::models("embed_batches") {
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
    let texts = common::texts();
    let mut criterion = Criterion::default().configure_from_args();
    bench_batches(&mut criterion, &texts);
    criterion.final_summary();
}
