//! fastembed-rs on the same files, texts and protocol as `examples/latency.rs` (see
//! `benches/README.md`). Its own cargo project, outside the workspace, so the library never
//! depends on fastembed.
//!
//! ```text
//! ORT_DYLIB_PATH=.akidb/runtime/libonnxruntime.so \
//!   cargo run --release --manifest-path benches/fastembed-bench/Cargo.toml -- \
//!   --model .akidb/models/all-MiniLM-L6-v2 --threads 2 --runs 200
//! ```
//!
//! The model folder is loaded as a `UserDefinedEmbeddingModel` (file bytes in memory, as
//! fastembed requires; `model.onnx_data` as an in-memory external initializer). Pooling: the
//! graph's `sentence_embedding` output, read as is, when the graph has one (fastembed's own
//! catalogue row for EmbeddingGemma does the same with `OutputKey::ByName`), else mean pooling
//! of `last_hidden_state`. The token cap comes from `sentence_bert_config.json`, else
//! `tokenizer_config.json`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use fastembed::{
    InitOptionsUserDefined, OutputKey, Pooling, TextEmbedding, TokenizerFiles,
    UserDefinedEmbeddingModel,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// Calls made before timing each text.
const WARMUP_CALLS: usize = 5;

/// The shared benchmark texts (`benches/texts.json`).
#[derive(Deserialize)]
struct Texts {
    short: String,
    medium: String,
    long: String,
    batch32: Vec<String>,
}

/// Command-line options (same as the Rust example's).
struct Args {
    model: PathBuf,
    variant: String,
    threads: usize,
    runs: usize,
    texts: PathBuf,
    vectors: Option<PathBuf>,
    cold: bool,
    t0_ns: Option<u128>,
}

fn usage() -> ! {
    eprintln!(
        "usage: fastembed-bench --model <folder> [--threads N] [--runs N] [--variant fp32|fp16|q4|quantized] \
         [--texts FILE] [--vectors FILE] [--cold [--t0-ns NS]]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        model: PathBuf::new(),
        variant: "fp32".to_string(),
        threads: 2,
        runs: 200,
        texts: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../texts.json"),
        vectors: None,
        cold: false,
        t0_ns: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--model" => args.model = PathBuf::from(value()),
            "--variant" => args.variant = value(),
            "--threads" => args.threads = value().parse().unwrap_or_else(|_| usage()),
            "--runs" => args.runs = value().parse().unwrap_or_else(|_| usage()),
            "--texts" => args.texts = PathBuf::from(value()),
            "--vectors" => args.vectors = Some(PathBuf::from(value())),
            "--cold" => args.cold = true,
            "--t0-ns" => args.t0_ns = Some(value().parse().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    if args.model.as_os_str().is_empty() || args.runs == 0 {
        usage();
    }
    args
}

fn onnx_file(folder: &Path, variant: &str) -> PathBuf {
    let name = match variant {
        "fp32" => "model.onnx",
        "fp16" => "model_fp16.onnx",
        "q4" => "model_q4.onnx",
        "quantized" | "int8" => "model_quantized.onnx",
        "q8" => "model_q8.onnx",
        other => other,
    };
    [folder.join(name), folder.join("onnx").join(name)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no {name} in {} or its onnx/", folder.display()))
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn token_cap(folder: &Path) -> usize {
    read_json(&folder.join("sentence_bert_config.json"))
        .and_then(|v| v["max_seq_length"].as_u64())
        .or_else(|| {
            read_json(&folder.join("tokenizer_config.json"))
                .and_then(|v| v["model_max_length"].as_f64())
                .filter(|&n| n < 1e6)
                .map(|n| n as u64)
        })
        .unwrap_or(512) as usize
}

/// Whether the graph has a `sentence_embedding` output, read from the ONNX protobuf's output
/// names without a second session: the name appears as a length-prefixed string in the graph.
fn has_sentence_embedding(onnx: &[u8]) -> bool {
    onnx.windows(b"sentence_embedding".len())
        .any(|w| w == b"sentence_embedding")
}

fn load(args: &Args) -> (TextEmbedding, usize) {
    let folder = &args.model;
    let read = |name: &str| {
        std::fs::read(folder.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", folder.join(name).display()))
    };
    let onnx_path = onnx_file(folder, &args.variant);
    let onnx = std::fs::read(&onnx_path).expect("cannot read the ONNX file");
    let tokenizer_files = TokenizerFiles {
        tokenizer_file: read("tokenizer.json"),
        config_file: read("config.json"),
        special_tokens_map_file: read("special_tokens_map.json"),
        tokenizer_config_file: read("tokenizer_config.json"),
    };
    let sentence_embedding = has_sentence_embedding(&onnx);
    let mut model = UserDefinedEmbeddingModel::new(onnx, tokenizer_files);
    if sentence_embedding {
        model.output_key = Some(OutputKey::ByName("sentence_embedding"));
    } else {
        model = model.with_pooling(Pooling::Mean);
    }
    let data_name = format!(
        "{}_data",
        onnx_path.file_name().and_then(|n| n.to_str()).unwrap_or("")
    );
    let data_path = onnx_path.with_file_name(&data_name);
    if data_path.is_file() {
        let data = std::fs::read(&data_path).expect("cannot read the weights file");
        model = model.with_external_initializer(data_name, data);
    }
    let cap = token_cap(folder);
    let options = InitOptionsUserDefined::new()
        .with_max_length(cap)
        .with_intra_threads(args.threads);
    let embedder = TextEmbedding::try_new_from_user_defined(model, options)
        .unwrap_or_else(|e| panic!("fastembed cannot load {}: {e}", folder.display()));
    (embedder, cap)
}

/// `VmRSS` of this process in MiB.
fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn percentile(sorted_ms: &[f64], q: f64) -> f64 {
    let rank = ((q / 100.0 * sorted_ms.len() as f64).ceil() as usize).max(1);
    sorted_ms[rank.min(sorted_ms.len()) - 1]
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

fn embed(embedder: &mut TextEmbedding, texts: &[String]) -> Vec<Vec<f32>> {
    embedder.embed(texts, None).expect("embedding failed")
}

fn latency(embedder: &mut TextEmbedding, text: &str, runs: usize) -> Value {
    let texts = [text.to_string()];
    for _ in 0..WARMUP_CALLS {
        embed(embedder, &texts);
    }
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            embed(embedder, &texts);
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let tokens = embedder
        .tokenizer
        .encode(text, true)
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
    let texts: Texts = serde_json::from_slice(
        &std::fs::read(&args.texts)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", args.texts.display())),
    )
    .expect("texts.json: expected {short, medium, long, batch32}");

    let started = Instant::now();
    let (mut embedder, _cap) = load(&args);
    // Same warm-up as the provider does inside load.
    embed(&mut embedder, &["warm-up".to_string()]);
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let rss = rss_mb();

    if args.cold {
        let first = Instant::now();
        embed(&mut embedder, std::slice::from_ref(&texts.short));
        let done_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut result = json!({
            "impl": "fastembed",
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
        "impl": "fastembed",
        "model": args.model,
        "threads": args.threads,
        "runs": args.runs,
        "load_ms": round(load_ms, 1),
        "rss_mb": round(rss, 1),
    });
    result["short"] = latency(&mut embedder, &texts.short, args.runs);
    result["medium"] = latency(&mut embedder, &texts.medium, args.runs);
    result["long"] = latency(&mut embedder, &texts.long, args.runs);

    for _ in 0..2 {
        embed(&mut embedder, &texts.batch32);
    }
    let mut times: Vec<f64> = (0..(args.runs / 10).max(5))
        .map(|_| {
            let started = Instant::now();
            embed(&mut embedder, &texts.batch32);
            started.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let mid = times.len() / 2;
    let median = if times.len().is_multiple_of(2) {
        (times[mid - 1] + times[mid]) / 2.0
    } else {
        times[mid]
    };
    result["batch32_texts_per_s"] = json!(round(texts.batch32.len() as f64 / median, 1));
    result["rss_end_mb"] = json!(round(rss_mb(), 1));

    if let Some(path) = &args.vectors {
        let medium = embed(&mut embedder, std::slice::from_ref(&texts.medium));
        let vectors = json!({
            "medium": medium[0],
            "batch32": embed(&mut embedder, &texts.batch32),
        });
        std::fs::write(path, vectors.to_string())
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
    println!("{result}");
}
