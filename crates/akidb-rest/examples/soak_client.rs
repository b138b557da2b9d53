//! Soak client for a running `akidb-rest` (driven by `scripts/soak.sh`): many concurrent
//! clients for a bounded time, a mix of good requests (1–32 texts, mostly small, short to
//! past the token cap, both routes, all options; the first clients open with the largest) and bad
//! ones (empty inputs, broken JSON, unknown model,
//! an over-long text with `"truncate": false`, wrong content type, too many texts), each with
//! the status it must get.
//!
//! ```text
//! cargo run --release -p akidb-rest --example soak_client -- \
//!     --url http://127.0.0.1:8080 --seconds 300 --clients 32 --pid <server pid>
//! ```
//!
//! Prints a summary and one JSON line (`--json <file>` also writes it): requests, requests/s,
//! unexpected answers, split into `failed` (any status other than the expected one, a
//! transport error, an error without the error shape) and `mismatched` (a vector of the wrong
//! count, shape or norm, a probe text whose vector drifted, or a text whose vector differs
//! from the one an earlier answer gave for the same text), latency percentiles of the good
//! requests, and the server's RSS (`/proc/<pid>/status`) sampled every few seconds after the
//! warm-up. The last line on stderr is `N requests, F failed, M mismatched`. Exits non-zero
//! if any answer was unexpected.
//!
//! `--stop-file <path>` ends the measured time early once that file exists (how
//! `scripts/rolling-restart.sh` stops the load when its restarts are done).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use common::Rng;
use serde_json::{Value, json};
use tokio::sync::Mutex;

#[derive(Debug, Parser)]
#[command(about = "Soak test client for akidb-rest")]
struct Args {
    /// Base URL of the service.
    #[arg(long)]
    url: String,
    /// Measured duration, after the warm-up.
    #[arg(long, default_value_t = 300)]
    seconds: u64,
    /// Warm-up duration (same load, not measured; RSS is first sampled after it).
    #[arg(long, default_value_t = 30)]
    warmup_seconds: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Server process id, for RSS samples from /proc.
    #[arg(long)]
    pid: Option<u32>,
    /// Seconds between RSS samples.
    #[arg(long, default_value_t = 5)]
    sample_seconds: u64,
    /// Also write the JSON summary here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Stop the measured time early once this file exists.
    #[arg(long)]
    stop_file: Option<std::path::PathBuf>,
    /// A light mix: good requests of 1-8 texts of at most 60 words, and no opening with the
    /// largest request (steady load a few replicas sustain on a small machine, rather than
    /// saturation).
    #[arg(long)]
    light: bool,
}

/// Why an answer was not the one expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Problem {
    /// A wrong status, a transport error, an error body without the error shape.
    Failed,
    /// A 200 whose vectors are wrong: count, shape, norm, or not the vector of its text.
    Mismatched,
}

/// Most distinct texts whose vectors are remembered for the repeat check.
const REMEMBERED_TEXTS: usize = 20_000;

/// What a request is and what it must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Good,
    Probe,
    EmptyInputs,
    BadJson,
    UnknownModel,
    TooLongStrict,
    WrongContentType,
    TooManyInputs,
}

impl Kind {
    fn expected(self) -> u16 {
        match self {
            Kind::Good | Kind::Probe => 200,
            Kind::EmptyInputs | Kind::TooLongStrict => 422,
            Kind::BadJson => 400,
            Kind::UnknownModel => 404,
            Kind::WrongContentType => 415,
            Kind::TooManyInputs => 413,
        }
    }
}

const WORDS: &[&str] = &[
    "vector",
    "database",
    "embedding",
    "query",
    "document",
    "train",
    "station",
    "north",
    "semantic",
    "search",
    "東京",
    "駅",
    "café",
    "naïve",
    "résumé",
    "🚀",
    "index",
    "cluster",
    "shard",
    "latency",
    "throughput",
    "memory",
    "arena",
    "token",
    "batch",
    "model",
];

/// A text of `words` words (MiniLM caps at 256 tokens; 300 words go past it).
fn text(rng: &mut Rng, words: usize) -> String {
    (0..words)
        .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

const PROBE: &str = "The soak probe: this vector must never drift.";

struct Request {
    kind: Kind,
    path: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    texts: usize,
    normalize: bool,
    /// The texts of a good request, in order (empty for the others).
    inputs: Vec<String>,
}

fn make_request(rng: &mut Rng, model: &str, light: bool) -> Request {
    let roll = rng.below(100);
    let json_request = |kind, path, body: Value, texts, normalize| Request {
        kind,
        path,
        content_type: "application/json",
        body: body.to_string().into_bytes(),
        texts,
        normalize,
        inputs: Vec::new(),
    };
    match roll {
        0..=2 => json_request(
            Kind::EmptyInputs,
            "/api/v1/embed",
            json!({"inputs": []}),
            0,
            true,
        ),
        3..=5 => Request {
            kind: Kind::BadJson,
            path: "/api/v1/embed",
            content_type: "application/json",
            body: b"{\"inputs\": [\"unterminated".to_vec(),
            texts: 0,
            normalize: true,
            inputs: Vec::new(),
        },
        6..=8 => json_request(
            Kind::UnknownModel,
            "/v1/embeddings",
            json!({"model": "../../etc/passwd", "input": "x"}),
            0,
            true,
        ),
        9..=11 => json_request(
            Kind::TooLongStrict,
            "/api/v1/embed",
            json!({"inputs": [text(rng, 300)], "truncate": false}),
            0,
            true,
        ),
        12..=13 => Request {
            kind: Kind::WrongContentType,
            path: "/api/v1/embed",
            content_type: "text/plain",
            body: b"{\"inputs\": [\"a\"]}".to_vec(),
            texts: 0,
            normalize: true,
            inputs: Vec::new(),
        },
        14 => json_request(
            Kind::TooManyInputs,
            "/api/v1/embed",
            json!({ "inputs": vec!["x"; 257] }),
            0,
            true,
        ),
        15..=19 => json_request(
            Kind::Probe,
            "/api/v1/embed",
            json!({"inputs": [PROBE]}),
            1,
            true,
        ),
        _ => {
            // Sizes as an embedding service sees them: mostly small requests of short texts,
            // a tail of full batches and of texts past the 256-token cap.
            let count = match rng.below(10) {
                _ if light => 1 + rng.below(8),
                0..=4 => 1 + rng.below(4),
                5..=7 => 5 + rng.below(12),
                _ => 17 + rng.below(16),
            } as usize;
            let texts: Vec<String> = (0..count)
                .map(|_| {
                    let words = match rng.below(10) {
                        0..=5 => 1 + rng.below(12),
                        _ if light => 20 + rng.below(40),
                        6..=8 => 20 + rng.below(60),
                        _ => 150 + rng.below(150),
                    } as usize;
                    text(rng, words)
                })
                .collect();
            good_request(rng, model, texts)
        }
    }
}

/// The largest request the mix sends: 32 texts past the token cap (sent first in the
/// warm-up, so ONNX Runtime's arena reaches its peak before RSS is first sampled).
fn largest_request(rng: &mut Rng, model: &str) -> Request {
    let texts = (0..32).map(|_| text(rng, 300)).collect();
    good_request(rng, model, texts)
}

fn good_request(rng: &mut Rng, model: &str, texts: Vec<String>) -> Request {
    let count = texts.len();
    let (path, body, normalize) = if rng.below(2) == 0 {
        let normalize = rng.below(4) != 0;
        (
            "/api/v1/embed",
            json!({"model": model, "inputs": &texts, "normalize": normalize}),
            normalize,
        )
    } else {
        let format = if rng.below(3) == 0 { "base64" } else { "float" };
        (
            "/v1/embeddings",
            json!({"model": model, "input": &texts, "encoding_format": format}),
            true,
        )
    };
    Request {
        kind: Kind::Good,
        path,
        content_type: "application/json",
        body: body.to_string().into_bytes(),
        texts: count,
        normalize,
        inputs: texts,
    }
}

/// Checks a good answer's shape: `texts` vectors of `dimension` finite values, unit norm
/// when normalised. Returns the vectors.
fn check_vectors(
    path: &str,
    body: &Value,
    texts: usize,
    dimension: usize,
    normalize: bool,
) -> Result<Vec<Vec<f32>>, String> {
    let vectors: Vec<Vec<f32>> = if path == "/v1/embeddings" {
        body["data"]
            .as_array()
            .ok_or("no data")?
            .iter()
            .map(|item| match &item["embedding"] {
                Value::String(encoded) => decode_base64(encoded),
                other => floats(other),
            })
            .collect()
    } else {
        body["embeddings"]
            .as_array()
            .ok_or("no embeddings")?
            .iter()
            .map(floats)
            .collect()
    };
    if vectors.len() != texts {
        return Err(format!("{} vectors for {texts} texts", vectors.len()));
    }
    for vector in &vectors {
        if vector.len() != dimension || vector.iter().any(|v| !v.is_finite()) {
            return Err(format!("bad vector of {} values", vector.len()));
        }
        let norm: f32 = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        if normalize && (norm - 1.0).abs() > 1e-3 {
            return Err(format!("norm {norm}"));
        }
    }
    Ok(vectors)
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .map(|values| {
            values
                .iter()
                .map(|v| v.as_f64().unwrap_or(f64::NAN) as f32)
                .collect()
        })
        .unwrap_or_default()
}

fn decode_base64(encoded: &str) -> Vec<f32> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap_or_default();
    bytes
        .chunks_exact(4)
        .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect()
}

#[derive(Default)]
struct Tally {
    by_kind: BTreeMap<String, (u64, u64)>,
    unexpected: Vec<String>,
    failed: u64,
    mismatched: u64,
    latencies_ms: Vec<f64>,
    requests: u64,
    texts_embedded: u64,
}

impl Tally {
    fn count(&mut self, problem: Problem) {
        match problem {
            Problem::Failed => self.failed += 1,
            Problem::Mismatched => self.mismatched += 1,
        }
    }
}

/// Checks a 200 answer: its vectors' shape ([`check_vectors`]), the probe's vector against
/// its first answer, and every normalised vector against the one an earlier answer gave for
/// the same text (cosine >= 0.9999): an answer meant for another request, or from a replica
/// with another model, cannot pass.
async fn check_answer(
    request: &Request,
    body: &Value,
    dimension: usize,
    probe_vector: &Mutex<Option<Vec<f32>>>,
    known_texts: &Mutex<HashMap<String, Vec<f32>>>,
) -> Result<(), String> {
    let vectors = check_vectors(
        request.path,
        body,
        request.texts,
        dimension,
        request.normalize,
    )
    .map_err(|problem| format!("{:?}: {problem}", request.kind))?;
    if request.kind == Kind::Probe {
        let first = vectors.into_iter().next().unwrap_or_default();
        let mut known = probe_vector.lock().await;
        return match known.as_ref() {
            None => {
                *known = Some(first);
                Ok(())
            }
            Some(want) if akidb_test_support::cosine(want, &first) >= 0.9999 => Ok(()),
            Some(want) => Err(format!(
                "probe vector drifted: cosine {}",
                akidb_test_support::cosine(want, &first)
            )),
        };
    }
    if !request.normalize {
        return Ok(());
    }
    let mut known = known_texts.lock().await;
    for (index, (text, vector)) in request.inputs.iter().zip(vectors).enumerate() {
        match known.get(text) {
            Some(want) => {
                let cosine = akidb_test_support::cosine(want, &vector);
                if cosine < 0.9999 {
                    return Err(format!(
                        "the vector of text {index} differs from an earlier answer for the \
                         same text: cosine {cosine}"
                    ));
                }
            }
            None if known.len() < REMEMBERED_TEXTS => {
                known.insert(text.clone(), vector);
            }
            None => {}
        }
    }
    Ok(())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let base = args.url.trim_end_matches('/').to_string();

    // Wait for the service, then learn the model it serves.
    let started = Instant::now();
    loop {
        if let Ok(response) = http.get(format!("{base}/health")).send().await
            && response.status() == 200
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "service not ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let models: Value = http
        .get(format!("{base}/api/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let model = models["models"][0]["id"].as_str().unwrap().to_string();
    let dimension = models["models"][0]["dimension"].as_u64().unwrap() as usize;
    eprintln!(
        "soak: model {model} ({dimension} dimensions), {} clients",
        args.clients
    );

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let probe_vector: Arc<Mutex<Option<Vec<f32>>>> = Arc::new(Mutex::new(None));
    let known_texts: Arc<Mutex<HashMap<String, Vec<f32>>>> = Arc::new(Mutex::new(HashMap::new()));
    let clients: Vec<_> = (0..args.clients)
        .map(|client| {
            let (http, base, model) = (http.clone(), base.clone(), model.clone());
            let light = args.light;
            let (measuring, stop, tally, probe_vector, known_texts) = (
                Arc::clone(&measuring),
                Arc::clone(&stop),
                Arc::clone(&tally),
                Arc::clone(&probe_vector),
                Arc::clone(&known_texts),
            );
            tokio::spawn(async move {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((client as u64 + 1) * 0x1000_0001));
                // Four clients open with the largest request (more would only queue).
                let mut first = client < 4 && !light;
                while !stop.load(Ordering::Acquire) {
                    let request = if first {
                        first = false;
                        largest_request(&mut rng, &model)
                    } else {
                        make_request(&mut rng, &model, light)
                    };
                    let sent = Instant::now();
                    let outcome = http
                        .post(format!("{base}{}", request.path))
                        .header("content-type", request.content_type)
                        .body(request.body.clone())
                        .send()
                        .await;
                    let result: Result<(), (Problem, String)> = match outcome {
                        Err(error) => Err((Problem::Failed, format!("transport error: {error}"))),
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let body: Value = response.json().await.unwrap_or(Value::Null);
                            if status != request.kind.expected() {
                                Err((
                                    Problem::Failed,
                                    format!(
                                        "{:?} got {status}, expected {}: {}",
                                        request.kind,
                                        request.kind.expected(),
                                        body.to_string().chars().take(200).collect::<String>()
                                    ),
                                ))
                            } else if status == 200 {
                                check_answer(
                                    &request,
                                    &body,
                                    dimension,
                                    &probe_vector,
                                    &known_texts,
                                )
                                .await
                                .map_err(|problem| (Problem::Mismatched, problem))
                            } else if body["error"]["type"].as_str().is_none() {
                                Err((
                                    Problem::Failed,
                                    format!("{:?}: error without the error shape", request.kind),
                                ))
                            } else {
                                Ok(())
                            }
                        }
                    };
                    let elapsed_ms = sent.elapsed().as_secs_f64() * 1e3;
                    if !measuring.load(Ordering::Acquire) {
                        // Warm-up: count nothing, but never hide a wrong answer.
                        if let Err((problem, text)) = result {
                            let mut tally = tally.lock().await;
                            tally.count(problem);
                            tally.unexpected.push(format!("(warm-up) {text}"));
                        }
                        continue;
                    }
                    let mut tally = tally.lock().await;
                    tally.requests += 1;
                    let entry = tally
                        .by_kind
                        .entry(format!("{:?}", request.kind))
                        .or_default();
                    entry.0 += 1;
                    match result {
                        Ok(()) => {
                            if request.kind == Kind::Good {
                                tally.latencies_ms.push(elapsed_ms);
                            }
                            tally.texts_embedded += request.texts as u64;
                        }
                        Err((problem, text)) => {
                            entry.1 += 1;
                            tally.count(problem);
                            tally.unexpected.push(text);
                        }
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(args.warmup_seconds)).await;
    let rss_start = args.pid.and_then(rss_kib);
    measuring.store(true, Ordering::Release);
    let measured_from = Instant::now();
    let mut rss_samples: Vec<(f64, u64)> = Vec::new();
    if let Some(kib) = rss_start {
        rss_samples.push((0.0, kib));
    }
    let until = measured_from + Duration::from_secs(args.seconds);
    let stop_asked = || args.stop_file.as_ref().is_some_and(|path| path.exists());
    while Instant::now() < until && !stop_asked() {
        let left = until.saturating_duration_since(Instant::now());
        let pause = left.min(Duration::from_secs(args.sample_seconds));
        let slept = Instant::now();
        while slept.elapsed() < pause && !stop_asked() {
            tokio::time::sleep(pause.min(Duration::from_millis(100))).await;
        }
        if let Some(kib) = args.pid.and_then(rss_kib) {
            rss_samples.push((measured_from.elapsed().as_secs_f64(), kib));
        }
        let done = tally.lock().await.requests;
        eprintln!(
            "soak: {:>4.0} s, {done} requests, RSS {} MiB",
            measured_from.elapsed().as_secs_f64(),
            rss_samples.last().map_or(0, |sample| sample.1 / 1024)
        );
    }
    measuring.store(false, Ordering::Release);
    let measured = measured_from.elapsed().as_secs_f64();
    stop.store(true, Ordering::Release);
    for client in clients {
        let _ = client.await;
    }

    let mut tally = tally.lock().await;
    tally
        .latencies_ms
        .sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let latencies = &tally.latencies_ms;
    let rss_end = rss_samples.last().map(|sample| sample.1);
    let rss_max = rss_samples.iter().map(|sample| sample.1).max();
    let half = rss_samples.len() / 2;
    let second_half_growth = match (rss_samples.get(half), rss_samples.last()) {
        (Some(middle), Some(last)) => last.1 as i64 - middle.1 as i64,
        _ => 0,
    };
    let mut unexpected_kinds: BTreeMap<String, usize> = BTreeMap::new();
    for problem in &tally.unexpected {
        let key: String = problem.chars().take(60).collect();
        *unexpected_kinds.entry(key).or_default() += 1;
    }
    let summary = json!({
        "model": model,
        "clients": args.clients,
        "warmup_s": args.warmup_seconds,
        "measured_s": (measured * 10.0).round() / 10.0,
        "requests": tally.requests,
        "requests_per_s": ((tally.requests as f64 / measured) * 10.0).round() / 10.0,
        "texts_embedded_per_s": ((tally.texts_embedded as f64 / measured) * 10.0).round() / 10.0,
        "by_kind": tally.by_kind.iter().map(|(kind, (count, bad))| (kind.clone(), json!({"requests": count, "unexpected": bad}))).collect::<serde_json::Map<_, _>>(),
        "unexpected": tally.unexpected.len(),
        "failed": tally.failed,
        "mismatched": tally.mismatched,
        "unexpected_examples": unexpected_kinds,
        "good_latency_ms": {
            "count": latencies.len(),
            "p50": percentile(latencies, 50.0),
            "p95": percentile(latencies, 95.0),
            "p99": percentile(latencies, 99.0),
            "max": latencies.last().copied().unwrap_or(f64::NAN),
        },
        "rss_mib": {
            "start": rss_start.map(|kib| kib as f64 / 1024.0),
            "end": rss_end.map(|kib| kib as f64 / 1024.0),
            "max": rss_max.map(|kib| kib as f64 / 1024.0),
            "second_half_growth": second_half_growth as f64 / 1024.0,
            "samples": rss_samples.iter().map(|(at, kib)| json!([(*at).round(), *kib / 1024])).collect::<Vec<_>>(),
        },
    });
    println!("{summary}");
    if let Some(path) = &args.json {
        std::fs::write(path, format!("{summary:#}\n")).unwrap();
    }
    if !tally.unexpected.is_empty() {
        eprintln!("soak: {} unexpected answers", tally.unexpected.len());
    }
    eprintln!(
        "{} requests, {} failed, {} mismatched",
        tally.requests, tally.failed, tally.mismatched
    );
    if !tally.unexpected.is_empty() {
        std::process::exit(1);
    }
}
