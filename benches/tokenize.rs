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

mod common;

use std::time::Duration;

use common::Texts;
use criterion::{BenchmarkId, Criterion, Throughput};

fn bench_tokenize(c: &mut Criterion, texts: &Texts) {
    for (name, provider) in common::models("tokenize") {
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
            let tokens = provider.token_ids(text, None).expect("tokenize").len();
            group.throughput(Throughput::Elements(tokens as u64));
            group.bench_with_input(BenchmarkId::from_parameter(label), text, |b, text| {
                b.iter(|| provider.token_ids(text, None).expect("tokenize"));
            });
        }
        group.finish();
    }
}

fn main() {
    let texts = common::texts();
    let mut criterion = Criterion::default().configure_from_args();
    bench_tokenize(&mut criterion, &texts);
    criterion.final_summary();
}
