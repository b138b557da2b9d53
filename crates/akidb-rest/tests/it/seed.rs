//! The Python service's own deployment commands, unchanged, against the `akidb-rest`
//! executable: `AKIDB_EMBEDDING_PROVIDER=python-bridge`, `AKIDB_EMBEDDING_PYTHON_PATH`,
//! `AKIDB_EMBEDDING_MODEL=google/embeddinggemma-300m`, and its curl command with
//! `"model": "embeddinggemma-300m"`. The model comes from the local hub server (the Gemma
//! double, laid out as the hub repository, sent slowly), so the same run shows the download
//! progress lines and the `downloading` state of `/health`.
//!
//! `AKIDB_GEMMA_DIR` (the real model's folder, as `../shared/tools/embeddinggemma/build.sh`
//! builds it) adds the real model, 768 dimensions, in a test that is
//! `#[ignore = "needs AKIDB_GEMMA_DIR"]` (run with `--ignored`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use akidb_test_support::hub_server::{HubServer, onnx_community_layout};
use akidb_test_support::{temp_dir, tiny_gemma_dir};
use serde_json::Value;

use common::process::Service;

const REPO: &str = "onnx-community/embeddinggemma-300m-ONNX";

/// The seed's curl command, run as is (`curl` must be installed).
fn seed_curl(addr: &str) -> Value {
    let output = Command::new("curl")
        .args([
            "-sS",
            "-X",
            "POST",
            &format!("http://{addr}/api/v1/embed"),
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"model": "embeddinggemma-300m", "inputs": ["AkiDB stores vectors."]}"#,
        ])
        .output()
        .expect("run curl");
    assert!(output.status.success(), "curl failed: {output:?}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Runs the seed's commands against `dir` served by the hub at `bytes_per_second`; returns
/// the service's log and the states `/health` showed while loading.
async fn seed_commands(
    dir: &Path,
    bytes_per_second: Option<u64>,
    dimension: usize,
) -> (String, Vec<String>) {
    let hub = HubServer::start_throttled(REPO, onnx_community_layout(dir, true), bytes_per_second);
    let cache = temp_dir(&format!("seed-cache-{dimension}"));
    let mut service = Service::start(&[
        ("AKIDB_EMBEDDING_PROVIDER", "python-bridge"),
        ("AKIDB_EMBEDDING_PYTHON_PATH", "/usr/bin/python3"),
        ("AKIDB_EMBEDDING_MODEL", "google/embeddinggemma-300m"),
        ("AKIDB_THREADS", "1"),
        ("HF_ENDPOINT", &hub.endpoint),
        ("AKIDB_CACHE_DIR", cache.path().to_str().unwrap()),
        (
            "AKIDB_MODELS_DIR",
            cache.path().join("no-installed-models").to_str().unwrap(),
        ),
        ("AKIDB_PROGRESS_INTERVAL_MS", "200"),
    ]);
    let client = common::fresh_client();
    let mut states = Vec::new();
    let started = Instant::now();
    loop {
        if let Ok(response) = client.get(service.url("/health")).send().await {
            let ready = response.status() == 200;
            if let Ok(body) = response.json::<Value>().await
                && let Some(state) = body["states"][0]["state"].as_str()
                && states.last().map(String::as_str) != Some(state)
            {
                states.push(state.to_string());
            }
            if ready {
                break;
            }
        }
        if let Ok(Some(status)) = service.child.try_wait() {
            panic!("akidb-rest ended ({status}):\n{}", service.log());
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "not ready after 300 s:\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let addr = service.addr.clone();
    let answer = tokio::task::spawn_blocking(move || seed_curl(&addr))
        .await
        .unwrap();
    assert_eq!(answer["dimension"], dimension, "{answer}");
    assert_eq!(answer["count"], 1, "{answer}");
    let vector: Vec<f32> = serde_json::from_value(answer["embeddings"][0].clone()).unwrap();
    assert_eq!(vector.len(), dimension);
    let norm: f32 = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "norm {norm}");
    service.terminate();
    service.wait_exit(Duration::from_secs(30)).await;
    (service.log(), states)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_commands_give_a_gemma_double_vector_and_show_the_download() {
    let dir = tiny_gemma_dir();
    // About 67 MB at 40 MB/s: the download takes over a second, long enough to watch.
    let (log, states) = seed_commands(&dir, Some(40_000_000), 32).await;

    // One warning per legacy setting, naming it.
    assert_eq!(
        log.matches("old name of the `onnx` provider").count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("AKIDB_EMBEDDING_PYTHON_PATH").count(),
        1,
        "{log}"
    );
    // Progress lines of the download: bytes, rate and ETA, every few hundred ms here.
    let progress: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("downloading") && line.contains("model.onnx_data"))
        .collect();
    assert!(!progress.is_empty(), "no progress lines:\n{log}");
    for line in &progress {
        for field in [
            "bytes=",
            "total_bytes=33808384",
            "rate_mb_s=",
            "eta_s=",
            "percent=",
        ] {
            assert!(line.contains(field), "{field} missing in {line}");
        }
    }
    assert!(log.contains("download finished"), "{log}");
    assert!(log.contains("model loaded"), "{log}");
    // `/health` went through the states as the model loaded.
    assert!(states.contains(&"downloading".to_string()), "{states:?}");
    assert_eq!(
        states.last().map(String::as_str),
        Some("ready"),
        "{states:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs AKIDB_GEMMA_DIR"]
async fn the_seed_commands_give_a_768_dimension_vector_from_the_real_model() {
    let dir = akidb_test_support::real_gemma_dir();
    let (log, _) = seed_commands(&dir, None, 768).await;
    assert!(log.contains("model loaded"), "{log}");
}
