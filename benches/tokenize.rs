//! Criterion benchmark: tokenisation of the short, medium and long benchmark texts
//! (`benches/texts.json`) with all-MiniLM-L6-v2 and the tiny EmbeddingGemma double, through
//! the provider's public `tokenize` (model tokenizer, special tokens, truncation at the cap).
//!
//! A second group measures the cost of hostile texts (100,000+ characters: an unbroken word,
//! emoji, CJK, control characters before prose), each tokenised as a truncating request does
//! (the byte-budget guard of `akidb_embedding_onnx::tokenize`) and wholly (what a request that
//! refuses truncation pays to count its tokens). Reported in bytes of text per second.
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

use akidb_embedding_core::{EmbeddingError, Truncation};
use akidb_embedding_onnx::tokenize::TextTokenizer;
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

/// Texts built to be expensive for a tokenizer, each 100,000 characters or more.
fn hostile_texts(texts: &Texts) -> Vec<(&'static str, String)> {
    vec![
        ("unbroken-word", "abcdefghij".repeat(10_000)),
        ("emoji", "🚂🌊🧭".repeat(33_334)),
        ("cjk", "東京駅から北へ".repeat(14_286)),
        (
            "control-then-prose",
            format!("{}{}", "\u{7}".repeat(100_000), texts.long.repeat(40)),
        ),
    ]
}

fn bench_hostile(c: &mut Criterion, texts: &Texts) {
    for (name, folder) in common::folders() {
        let Ok(tokenizer) =
            TextTokenizer::from_file(&folder.join("tokenizer.json"), common::cap(name))
        else {
            eprintln!("tokenize bench: skipping hostile texts for {name}: no tokenizer");
            continue;
        };
        let mut group = c.benchmark_group(format!("tokenize-hostile/{name}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for (label, text) in hostile_texts(texts) {
            group.throughput(Throughput::Bytes(text.len() as u64));
            let full = match tokenizer.encode(&text, Truncation::Error, 0) {
                Err(EmbeddingError::TextTooLong { tokens, .. }) => tokens,
                other => other.expect("tokenize").len(),
            };
            println!("{name} {label}: {} bytes, {full} tokens in all", text.len());
            group.bench_with_input(BenchmarkId::new("truncated", label), &text, |b, text| {
                b.iter(|| {
                    tokenizer
                        .encode(text, Truncation::Truncate, 0)
                        .expect("tokenize")
                });
            });
            group.bench_with_input(BenchmarkId::new("whole", label), &text, |b, text| {
                b.iter(|| tokenizer.encode(text, Truncation::Error, 0));
            });
        }
        group.finish();
    }
}

fn main() {
    let texts = common::texts();
    let mut criterion = Criterion::default().configure_from_args();
    bench_tokenize(&mut criterion, &texts);
    bench_hostile(&mut criterion, &texts);
    criterion.final_summary();
}
