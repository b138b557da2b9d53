//! Where the time goes, stage by stage, for one model on the shared benchmark texts
//! (`benches/texts.json`): loading (with the default private copy of the split weights and
//! with the weights mapped in place), then per text size the provider's two steps
//! (`tokenize`: validation, prompt, tokenizer; `run`: input tensors, ONNX Runtime, pooling)
//! and the core `finish` (Matryoshka cut, normalisation, checks).
//!
//! ```text
//! cargo run --release --example profile -- --model <folder> [--variant fp32|q8] [--threads 2] [--runs 30]
//!     [--operators <dir> [--fused true|false]]
//! ```
//!
//! Prints one JSON line: `load_ms` (`private_copy`, `in_place`), and for `short`, `medium`,
//! `long` and `batch32` the median ms of `tokenize`, `run` and `finish`.
//!
//! With `--operators`, it records ONNX Runtime's own profile instead
//! ([`LoadOptions::with_profiling`](akidb_embedding_onnx::LoadOptions::with_profiling)), in
//! `<dir>`, of the graph the library runs: fused (the default) or, with `--fused false`, as the
//! folder has it. One session per text (short, medium, long), three warm-up runs and `--runs`
//! profiled ones; one JSON line per text: `run_ms` (median `model_run`), `kernel_ms` and
//! `kernels` (per run), and per operator type its `ms` and `kernels` per run, largest first.
//! The profiler adds time to every kernel: read shares and counts, not absolute times.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use akidb_embedding_core::{EmbedRequest, EmbeddingProvider, pipeline};
use akidb_embedding_onnx::{LoadOptions, OnnxEmbeddingProvider, OnnxVariant, WeightsMapping};
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
    let (mut operators, mut fused) = (None::<PathBuf>, true);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => model = Some(value),
            "--variant" => variant = OnnxVariant::parse(&value).expect("unknown variant"),
            "--threads" => threads = value.parse().expect("--threads N"),
            "--runs" => runs = value.parse().expect("--runs N"),
            "--operators" => operators = Some(value.into()),
            "--fused" => fused = value.parse().expect("--fused true|false"),
            other => panic!("unknown option {other}"),
        }
    }
    let model = model.expect(
        "usage: profile --model <folder> [--variant V] [--threads N] [--runs N] [--operators DIR [--fused B]]",
    );
    if let Some(dir) = operators {
        let options = akidb_embeddings::install::load_options(model.clone())
            .with_variant(variant.clone())
            .with_intra_threads(threads)
            .with_fused_graph(fused);
        profile_operators(&options, &dir, fused, runs).await;
        return;
    }
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

/// Profiles each benchmark text in a session of its own and prints one JSON line per text.
async fn profile_operators(options: &LoadOptions, dir: &Path, fused: bool, runs: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let texts = texts::read(&texts::default_path());
    let graph = if fused { "fused" } else { "export" };
    for (name, text) in [
        ("short", texts.short),
        ("medium", texts.medium),
        ("long", texts.long),
    ] {
        let prefix = dir.join(format!("{graph}-{name}"));
        let provider =
            OnnxEmbeddingProvider::load(options.clone().with_profiling(&prefix)).unwrap();
        let request = EmbedRequest::new(vec![text]);
        let mut tokens = 0;
        for _ in 0..runs + 3 {
            tokens = provider.embed(request.clone()).await.unwrap().token_counts[0];
        }
        let file = provider.end_profiling().unwrap();
        // The load's warm-up run and our three are left out.
        let summary = summarise(&file, 4);
        assert_eq!(summary.runs, runs, "{}: profiled runs", file.display());
        println!(
            "{}",
            json!({
                "text": name,
                "tokens": tokens,
                "graph": graph,
                "profile": file,
                "runs": summary.runs,
                "run_ms": summary.run_ms,
                "kernel_ms": summary.kernel_ms,
                "kernels": summary.kernels,
                "operators": summary.operators,
            })
        );
    }
}

/// One profile's figures per run (see the module's documentation).
struct Summary {
    runs: usize,
    run_ms: f64,
    kernel_ms: f64,
    kernels: f64,
    operators: Vec<serde_json::Value>,
}

/// Reads ONNX Runtime's Chrome-trace profile: `model_run` events mark the runs (the first
/// `skip` are left out), `*_kernel_time` node events within them are summed per operator.
fn summarise(file: &Path, skip: usize) -> Summary {
    let events: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let span = |event: &serde_json::Value| {
        let ts = event["ts"].as_f64().unwrap_or(0.0);
        (ts, ts + event["dur"].as_f64().unwrap_or(0.0))
    };
    let mut run_spans: Vec<(f64, f64)> = events
        .iter()
        .filter(|e| e["cat"] == "Session" && e["name"] == "model_run")
        .map(span)
        .collect();
    run_spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    let run_spans = &run_spans[skip.min(run_spans.len())..];
    let mut by_operator: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for event in &events {
        let is_kernel = event["cat"] == "Node"
            && event["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("_kernel_time"));
        let (start, _) = span(event);
        if !is_kernel || !run_spans.iter().any(|(a, b)| (*a..=*b).contains(&start)) {
            continue;
        }
        let operator = event["args"]["op_name"].as_str().unwrap_or("?").to_string();
        let entry = by_operator.entry(operator).or_default();
        entry.0 += event["dur"].as_f64().unwrap_or(0.0);
        entry.1 += 1;
    }
    let per_run = run_spans.len().max(1) as f64;
    let mut rows: Vec<(String, f64, f64)> = by_operator
        .into_iter()
        .map(|(op, (us, n))| (op, us / 1e3 / per_run, n as f64 / per_run))
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    Summary {
        runs: run_spans.len(),
        run_ms: median(run_spans.iter().map(|(a, b)| (b - a) / 1e3).collect()),
        kernel_ms: rows.iter().map(|r| r.1).sum(),
        kernels: rows.iter().map(|r| r.2).sum(),
        operators: rows
            .into_iter()
            .map(|(op, ms, n)| json!({"operator": op, "ms": ms, "kernels": n}))
            .collect(),
    }
}
