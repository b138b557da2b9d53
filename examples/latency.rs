//! Latency and throughput of the ONNX provider, with a fixed protocol shared by
//! `benches/python_baseline.py` and `benches/fastembed-bench` (see `benches/README.md`).
//!
//! ```text
//! cargo run --release --example latency -- --model <id or folder> --threads 2 --runs 200
//! ```
//!
//! Prints ONE JSON line (other tools parse it; keep the keys): `load_ms` (tokenizer, session
//! and the provider's warm-up run), `rss_mb` (`VmRSS` right after load), `short`, `medium`,
//! `long` (`{tokens, p50, p95, p99}` in ms, one text per call after a few warm-up calls) and
//! `batch32_texts_per_s` (32 texts of 20–60 words in one call; median of several calls). The
//! texts come from `benches/texts.json`, which all three implementations read.
//!
//! Options: `--variant fp32|fp16|q4|quantized|q8|<file>.onnx`, `--texts <file>`,
//! `--vectors <file>` (writes the medium and batch32 vectors, to check that implementations
//! agree), `--cold` (load, embed the short text once, print only `load_ms`, `rss_mb`,
//! `first_embed_ms` and, given `--t0-ns <caller's wall clock in ns before exec>`,
//! `start_to_first_ms`), `--cpu-arena on|off` (ONNX Runtime's CPU memory arena, default on).
//!
//! `--long32` (after the rest, three calls of 32 copies of the long text: minutes on the
//! real EmbeddingGemma, so only when asked).
//!
//! Added keys (after the ones above): `cpu_arena`, `rss_peak_mb` (`VmHWM`, the peak); with
//! `--long32`, `long32_first_ms` and `long32_ms` (the first and the median of the three calls)
//! and `rss_long32_mb` (`VmRSS` right after them: what the process keeps of its largest batch).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use akidb_embedding_core::EmbedRequest;
use akidb_embedding_onnx::{OnnxEmbeddingProvider, OnnxVariant};
use serde_json::{Value, json};

#[path = "support/progress.rs"]
mod progress;
#[path = "support/texts.rs"]
mod texts;

/// Calls made before timing each text, so buffers and caches are warm.
const WARMUP_CALLS: usize = 5;

/// Command-line options.
struct Args {
    model: String,
    variant: OnnxVariant,
    threads: usize,
    runs: usize,
    texts: PathBuf,
    vectors: Option<PathBuf>,
    cold: bool,
    t0_ns: Option<u128>,
    cpu_arena: bool,
    long32: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: latency --model <id or folder> [--threads N] [--runs N] [--variant fp32|fp16|q4|quantized|q8] \
         [--texts FILE] [--vectors FILE] [--cold [--t0-ns NS]] [--cpu-arena on|off] [--long32]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        model: String::new(),
        variant: OnnxVariant::Fp32,
        threads: 2,
        runs: 200,
        texts: texts::default_path(),
        vectors: None,
        cold: false,
        t0_ns: None,
        cpu_arena: true,
        long32: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--model" => args.model = value(),
            "--variant" => {
                args.variant = OnnxVariant::parse(&value()).unwrap_or_else(|| usage());
            }
            "--threads" => args.threads = value().parse().unwrap_or_else(|_| usage()),
            "--runs" => args.runs = value().parse().unwrap_or_else(|_| usage()),
            "--texts" => args.texts = PathBuf::from(value()),
            "--vectors" => args.vectors = Some(PathBuf::from(value())),
            "--cold" => args.cold = true,
            "--long32" => args.long32 = true,
            "--t0-ns" => args.t0_ns = Some(value().parse().unwrap_or_else(|_| usage())),
            "--cpu-arena" => {
                args.cpu_arena = match value().as_str() {
                    "on" | "true" => true,
                    "off" | "false" => false,
                    _ => usage(),
                }
            }
            _ => usage(),
        }
    }
    if args.model.is_empty() || args.runs == 0 {
        usage();
    }
    args
}

/// `VmRSS` of this process in MiB.
fn rss_mb() -> f64 {
    status_mb("VmRSS:")
}

/// A memory line of `/proc/self/status` (`VmRSS:`, `VmHWM:`) in MiB.
fn status_mb(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Nearest-rank percentile of an ascending slice (the Python baseline uses the same rule).
fn percentile(sorted_ms: &[f64], q: f64) -> f64 {
    let rank = ((q / 100.0 * sorted_ms.len() as f64).ceil() as usize).max(1);
    sorted_ms[rank.min(sorted_ms.len()) - 1]
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

fn embed(provider: &OnnxEmbeddingProvider, texts: &[String]) -> Vec<Vec<f32>> {
    provider
        .embed_blocking(EmbedRequest::new(texts.iter().cloned()))
        .expect("embedding failed")
        .embeddings
}

fn latency(provider: &OnnxEmbeddingProvider, text: &str, runs: usize) -> Value {
    let texts = [text.to_string()];
    for _ in 0..WARMUP_CALLS {
        embed(provider, &texts);
    }
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let request = EmbedRequest::new([text]);
            let started = Instant::now();
            provider.embed_blocking(request).expect("embedding failed");
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let tokens = provider
        .token_ids(text, None)
        .expect("tokenize failed")
        .len();
    json!({
        "tokens": tokens,
        "p50": round(percentile(&times, 50.0), 3),
        "p95": round(percentile(&times, 95.0), 3),
        "p99": round(percentile(&times, 99.0), 3),
    })
}

fn main() {
    let args = parse_args();
    let texts = texts::read(&args.texts);

    let started = Instant::now();
    let provider = OnnxEmbeddingProvider::load(progress::with_progress_bar(
        akidb_embeddings::install::load_options(args.model.clone())
            .with_variant(args.variant.clone())
            .with_intra_threads(args.threads)
            .with_cpu_arena(args.cpu_arena),
    ))
    .unwrap_or_else(|e| panic!("cannot load {}: {e}", args.model));
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let rss = rss_mb();

    if args.cold {
        let first = Instant::now();
        embed(&provider, std::slice::from_ref(&texts.short));
        let done_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut result = json!({
            "impl": "akidb",
            "load_ms": round(load_ms, 1),
            "rss_mb": round(rss, 1),
            "first_embed_ms": round(first.elapsed().as_secs_f64() * 1e3, 3),
        });
        if let Some(t0) = args.t0_ns {
            result["start_to_first_ms"] = json!(round(done_ns.saturating_sub(t0) as f64 / 1e6, 1));
        }
        println!("{result}");
        return;
    }

    let mut result = json!({
        "impl": "akidb",
        "model": args.model,
        "threads": args.threads,
        "runs": args.runs,
        "load_ms": round(load_ms, 1),
        "rss_mb": round(rss, 1),
    });
    result["short"] = latency(&provider, &texts.short, args.runs);
    result["medium"] = latency(&provider, &texts.medium, args.runs);
    result["long"] = latency(&provider, &texts.long, args.runs);

    for _ in 0..2 {
        embed(&provider, &texts.batch32);
    }
    let mut times: Vec<f64> = (0..(args.runs / 10).max(5))
        .map(|_| {
            let request = EmbedRequest::new(texts.batch32.iter().cloned());
            let started = Instant::now();
            provider.embed_blocking(request).expect("embedding failed");
            started.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    // Median as numpy computes it (mean of the two middle values for an even count).
    let mid = times.len() / 2;
    let median = if times.len().is_multiple_of(2) {
        (times[mid - 1] + times[mid]) / 2.0
    } else {
        times[mid]
    };
    result["batch32_texts_per_s"] = json!(round(texts.batch32.len() as f64 / median, 1));
    result["rss_end_mb"] = json!(round(rss_mb(), 1));

    result["cpu_arena"] = json!(args.cpu_arena);
    if args.long32 {
        // The largest batch last, three times (the first grows the arena): what the process
        // keeps of it, and what a call costs once the arena has grown.
        let long32 = vec![texts.long.clone(); 32];
        let mut times: Vec<f64> = (0..3)
            .map(|_| {
                let started = Instant::now();
                embed(&provider, &long32);
                started.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        let first = times[0];
        times.sort_by(f64::total_cmp);
        result["long32_first_ms"] = json!(round(first, 1));
        result["long32_ms"] = json!(round(times[1], 1));
        result["rss_long32_mb"] = json!(round(rss_mb(), 1));
    }
    result["rss_peak_mb"] = json!(round(status_mb("VmHWM:"), 1));

    if let Some(path) = &args.vectors {
        let vectors = json!({
            "medium": embed(&provider, std::slice::from_ref(&texts.medium))[0],
            "batch32": embed(&provider, &texts.batch32),
        });
        std::fs::write(path, vectors.to_string())
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
    println!("{result}");
}
