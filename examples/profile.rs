//! Where the time goes, stage by stage, for one model on the shared benchmark texts
//! (`benches/texts.json`): loading (with the default private copy of the split weights and
//! with the weights mapped in place), then per text size the provider's two steps
//! (`tokenize`: validation, prompt, tokenizer; `run`: input tensors, ONNX Runtime, pooling)
//! and the core `finish` (Matryoshka cut, normalisation, checks).
//!
//! ```text
//! cargo run --release --example profile -- --model <folder> [--variant fp32|q8] [--threads 2] [--runs 30]
//! ```
//!
//! Prints one JSON line: `load_ms` (`private_copy`, `in_place`), and for `short`, `medium`,
//! `long` and `batch32` the median ms of `tokenize`, `run` and `finish`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::time::Instant;

use akidb_embedding_core::{EmbedRequest, EmbeddingProvider, pipeline};
use akidb_embedding_onnx::{OnnxEmbeddingProvider, OnnxVariant, WeightsMapping};
use serde_json::json;

#[path = "support/texts.rs"]
mod texts;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut model, mut variant, mut threads, mut runs) =
        (None, OnnxVariant::Fp32, 2usize, 30usize);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => model = Some(value),
            "--variant" => variant = OnnxVariant::parse(&value).expect("unknown variant"),
            "--threads" => threads = value.parse().expect("--threads N"),
            "--runs" => runs = value.parse().expect("--runs N"),
            other => panic!("unknown option {other}"),
        }
    }
    let model =
        model.expect("usage: profile --model <folder> [--variant V] [--threads N] [--runs N]");
    let options = |mapping| {
        akidb_embeddings::install::load_options(model.clone())
            .with_variant(variant.clone())
            .with_intra_threads(threads)
            .with_weights_mapping(mapping)
    };
    let started = Instant::now();
    let in_place = OnnxEmbeddingProvider::load(options(WeightsMapping::InPlace)).unwrap();
    let in_place_ms = ms(started);
    drop(in_place);
    let started = Instant::now();
    let provider = OnnxEmbeddingProvider::load(options(WeightsMapping::PrivateCopy)).unwrap();
    let private_copy_ms = ms(started);

    let texts = texts::read(&texts::default_path());
    let cases = [
        ("short", vec![texts.short]),
        ("medium", vec![texts.medium]),
        ("long", vec![texts.long]),
        ("batch32", texts.batch32),
    ];
    let mut stages = serde_json::Map::new();
    for (name, batch) in cases {
        let (mut tokenize, mut run, mut finish) = (Vec::new(), Vec::new(), Vec::new());
        let repeats = if name == "short" { runs * 4 } else { runs };
        for round in 0..repeats + 3 {
            let started = Instant::now();
            let tokenized = provider
                .tokenize(EmbedRequest::new(batch.clone()))
                .await
                .unwrap();
            let tokenize_ms = ms(started);
            let counts = tokenized.token_counts();
            let started = Instant::now();
            let raw = provider.run(tokenized.encodings).await.unwrap();
            let run_ms = ms(started);
            let started = Instant::now();
            let response = pipeline::finish(raw, counts, tokenized.output).unwrap();
            let finish_ms = ms(started);
            assert_eq!(response.count(), batch.len());
            if round >= 3 {
                tokenize.push(tokenize_ms);
                run.push(run_ms);
                finish.push(finish_ms);
            }
        }
        stages.insert(
            name.to_string(),
            json!({"tokenize": median(tokenize), "run": median(run), "finish": median(finish)}),
        );
    }
    println!(
        "{}",
        json!({
            "model": model,
            "variant": format!("{variant:?}"),
            "threads": threads,
            "load_ms": {"private_copy": private_copy_ms, "in_place": in_place_ms},
            "stages_ms": stages,
        })
    );
}
