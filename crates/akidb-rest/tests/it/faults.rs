//! Faults under a running service: model files removed or truncated, a provider that fails
//! or panics in the middle of concurrent load, SIGTERM while clients are sending and while
//! clients stall.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use akidb_embedding_core::{EmbedRequest, EmbeddingProvider};
use akidb_embedding_mock::{FailureMode, MockEmbeddingProvider};
use akidb_embedding_onnx::WeightsMapping;
use akidb_rest::Config;
use akidb_rest::config::ProviderKind;
use akidb_rest::engine::providers::{self, LoadPlan};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use common::process::Service;
use common::{Loaded, Probe, TestServer, assert_error, config, fresh_client, vectors, wait_for};

/// Loads the model in `dir` the way the service does (`providers::load`), one thread.
async fn load_as_the_service_does(dir: &Path, weights_mapping: WeightsMapping) -> Loaded {
    let config = akidb_rest::Config {
        provider: ProviderKind::Onnx,
        models: vec![dir.to_string_lossy().into_owned()],
        threads: Some(1),
        max_batch_size: 32,
        max_batch_tokens: 16_384,
        weights_mapping,
        weights_copy_dir: None,
        ..akidb_rest::Config::default()
    };
    let plan = LoadPlan::from(&config);
    let mut loaded = providers::load(plan).await.expect("load the copied model");
    Loaded {
        provider: loaded.remove(0),
        mock: None,
        fixture: common::Fixture::MiniLm,
    }
}

/// Shrinks `path` to `size` bytes: in place (the same inode), or, with `by_rename`, by
/// writing a shorter copy and renaming it over the original (a new inode, as a careful
/// deployment replaces files).
fn shrink(path: &Path, size: u64, by_rename: bool) {
    if by_rename {
        let mut bytes = std::fs::read(path).unwrap();
        bytes.truncate(size as usize);
        let replacement = path.with_extension("replacement");
        std::fs::write(&replacement, bytes).unwrap();
        std::fs::rename(&replacement, path).unwrap();
    } else {
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.set_len(size).unwrap();
    }
}

/// Truncates every file of the served model's folder to half, then to nothing, then removes
/// the folder; the loaded session keeps answering, correctly, and `/health` stays 200.
/// With [`WeightsMapping::InPlace`] the split weights are mapped from the folder itself, so
/// `model.onnx_data` is replaced by rename there (truncating a mapped file in place is
/// SIGBUS, which is why the default maps a private copy).
async fn files_change_under_the_service(source: &Path, name: &str, mapping: WeightsMapping) {
    let dir = akidb_test_support::copy_model(source, name, &[]);
    let loaded = load_as_the_service_does(dir.path(), mapping).await;
    let probe = Probe::new(&loaded).await;
    let server = TestServer::start(config(), vec![loaded.provider.clone()]).await;
    probe.check(&server, "start-up").await;

    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    let by_rename = |path: &Path| {
        mapping == WeightsMapping::InPlace && path.file_name().unwrap() == "model.onnx_data"
    };
    for path in &files {
        let half = std::fs::metadata(path).unwrap().len() / 2;
        shrink(path, half, by_rename(path));
    }
    probe.check(&server, "every model file cut to half").await;
    for path in &files {
        shrink(path, 0, by_rename(path));
    }
    probe.check(&server, "every model file emptied").await;
    std::fs::remove_dir_all(&dir).unwrap();
    probe.check(&server, "the model folder removed").await;
    assert_eq!(server.get("/health").await.status(), 200);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_files_truncated_or_removed_under_a_running_service() {
    let source = akidb_test_support::minilm_dir();
    files_change_under_the_service(&source, "faults-minilm", WeightsMapping::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemma_files_truncated_in_place_or_removed_under_a_running_service() {
    // EmbeddingGemma keeps its weights in `model.onnx_data`, which ONNX Runtime maps; by
    // default it maps a private copy, so every file can be truncated in place.
    let source = akidb_test_support::tiny_gemma_dir();
    files_change_under_the_service(&source, "faults-gemma", WeightsMapping::PrivateCopy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemma_weights_mapped_in_place_survive_replacement_by_rename() {
    let source = akidb_test_support::tiny_gemma_dir();
    files_change_under_the_service(&source, "faults-gemma-mapped", WeightsMapping::InPlace).await;
}

/// The service binary with its default settings: split weights truncated in place under it
/// (`cp new model.onnx_data` over the old file does this) must not kill it: the service maps
/// a private copy; were ONNX Runtime to map the folder's own file, this would be SIGBUS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemma_split_weights_truncated_in_place_do_not_kill_the_service() {
    let source = akidb_test_support::tiny_gemma_dir();
    let dir = akidb_test_support::copy_model(&source, "faults-gemma-in-place", &[]);
    let mut service = Service::start(&[
        ("AKIDB_EMBEDDING_MODEL", dir.path().to_str().unwrap()),
        ("AKIDB_THREADS", "1"),
    ]);
    service.wait_ready().await;
    let data = dir.path().join("model.onnx_data");
    let size = std::fs::metadata(&data).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(size / 2)
        .unwrap();
    let answer = fresh_client()
        .post(service.url("/api/v1/embed"))
        .json(&json!({"inputs": ["still there?"]}))
        .send()
        .await;
    let exit = service.wait_exit(Duration::from_millis(200)).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        exit.is_none(),
        "the service died ({exit:?}) after its split weights were truncated in place"
    );
    assert_eq!(answer.unwrap().status(), 200);
}

/// 32 clients, `rounds` requests each, against `provider`; returns (status, body, texts) of
/// every request, while a watcher asserts `/health` answers 200 throughout.
async fn concurrent_load(
    server: &Arc<TestServer>,
    rounds: usize,
    text: impl Fn(usize, usize) -> String + Send + Sync + 'static,
) -> Vec<(u16, Value, Vec<String>)> {
    let text = Arc::new(text);
    let done = Arc::new(AtomicBool::new(false));
    let health_checks = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let server = Arc::clone(server);
        let done = Arc::clone(&done);
        let checks = Arc::clone(&health_checks);
        tokio::spawn(async move {
            let client = fresh_client();
            while !done.load(Ordering::Acquire) {
                let status = client
                    .get(server.url("/health"))
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(status, 200, "/health during provider failures");
                checks.fetch_add(1, Ordering::AcqRel);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let clients: Vec<_> = (0..32)
        .map(|client| {
            let server = Arc::clone(server);
            let text = Arc::clone(&text);
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for round in 0..rounds {
                    let texts: Vec<String> = (0..1 + (client + round) % 3)
                        .map(|index| format!("{} #{index}", text(client, round)))
                        .collect();
                    let (status, body) = server
                        .post("/api/v1/embed", &json!({ "inputs": texts }))
                        .await;
                    answers.push((status, body, texts));
                }
                answers
            })
        })
        .collect();
    let mut answers = Vec::new();
    for client in clients {
        answers.extend(client.await.unwrap());
    }
    done.store(true, Ordering::Release);
    watcher.await.unwrap();
    assert!(health_checks.load(Ordering::Acquire) > 0);
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_failing_every_nth_run_never_gives_a_wrong_vector() {
    let flaky = Arc::new(
        MockEmbeddingProvider::new(64)
            .with_latency(Duration::from_millis(2))
            // The first failure falls after the calibration runs (a model that fails those
            // does not serve at all).
            .with_failures(FailureMode::EveryNth(
                akidb_rest::engine::batcher::CALIBRATION_RUNS as u64 + 1,
            )),
    );
    let provider: Arc<dyn EmbeddingProvider> = flaky.clone();
    let server = Arc::new(TestServer::start(config(), vec![provider]).await);
    let answers = concurrent_load(&server, 6, |client, round| {
        format!("client {client} round {round}")
    })
    .await;
    let (mut ok, mut failed) = (0, 0);
    let reference = MockEmbeddingProvider::new(64);
    for (status, body, texts) in &answers {
        match status {
            200 => {
                let want = reference
                    .embed(EmbedRequest::new(texts.clone()))
                    .await
                    .unwrap()
                    .embeddings;
                assert_eq!(vectors(body), want, "{texts:?}");
                ok += 1;
            }
            _ => {
                assert_error(*status, body, 500, "internal_error");
                failed += 1;
            }
        }
    }
    assert!(ok > 0 && failed > 0, "{ok} answered, {failed} failed");
    // Each failure is counted: the failed runs, and every 500 answered.
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(&format!(
            "akidb_http_requests_total{{route=\"/api/v1/embed\",status=\"500\"}} {failed}\n"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("akidb_batch_failures_total{model=\"mock\"}"),
        "{metrics}"
    );
    // The service is still whole: of three requests in a row, at most one meets a fault.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (status, _) = server
            .post("/api/v1/embed", &json!({"inputs": ["after"]}))
            .await;
        statuses.push(status);
    }
    assert!(
        statuses.iter().filter(|&&status| status == 200).count() >= 2,
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_provider_fails_only_its_own_requests() {
    // A provider with a bug: it panics in any run holding a text containing `panic`.
    let provider: Arc<dyn EmbeddingProvider> = Arc::new(
        MockEmbeddingProvider::new(16)
            .with_latency(Duration::from_millis(20))
            .with_failures(FailureMode::PanicWhenTextContains("panic".into())),
    );
    let config = Config {
        batch_wait_ms: 50,
        ..config()
    };
    let server = Arc::new(TestServer::start(config, vec![provider]).await);
    let texts = ["calm", "panic here", "steady", "fine"];
    let bodies = texts
        .iter()
        .map(|text| json!({ "inputs": [text] }))
        .collect();
    let answers = server.post_all_at_once("/api/v1/embed", bodies).await;
    for (text, (status, body)) in texts.iter().zip(answers) {
        if text.contains("panic") {
            assert_error(status, &body, 500, "internal_error");
        } else {
            assert_eq!(status, 200, "{text}: {body}");
        }
    }
    // The model still serves: the panic did not take its batcher down.
    let (status, body) = server
        .post("/api/v1/embed", &json!({"inputs": ["afterwards"]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get("/health").await.status(), 200);
}

/// Settings of a child service: all-MiniLM-L6-v2 (a required fixture).
fn child_model() -> Vec<(&'static str, String)> {
    let dir = akidb_test_support::minilm_dir();
    vec![
        ("AKIDB_EMBEDDING_MODEL", dir.to_string_lossy().into_owned()),
        ("AKIDB_THREADS", "1".to_string()),
    ]
}

fn start_child(extra: &[(&'static str, &str)]) -> Service {
    let mut settings: Vec<(&str, String)> = child_model();
    settings.extend(extra.iter().map(|(name, value)| (*name, value.to_string())));
    let borrowed: Vec<(&str, &str)> = settings
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    Service::start(&borrowed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_or_refuses_cleanly_and_exits() {
    let mut service = start_child(&[("AKIDB_SHUTDOWN_TIMEOUT_MS", "10000")]);
    service.wait_ready().await;
    let url = service.url("/api/v1/embed");
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..32)
        .map(|client| {
            let url = url.clone();
            let answered = Arc::clone(&answered);
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let mut outcomes = Vec::new();
                for round in 0.. {
                    let texts: Vec<String> = (0..1 + (client + round) % 4)
                        .map(|index| format!("client {client} round {round} text {index}"))
                        .collect();
                    let sent = Instant::now();
                    match http
                        .post(&url)
                        .json(&json!({ "inputs": texts }))
                        .send()
                        .await
                    {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let body: Value = response.json().await.unwrap_or(Value::Null);
                            outcomes.push(Ok((status, body, texts.len(), sent.elapsed())));
                            answered.fetch_add(1, Ordering::AcqRel);
                        }
                        Err(error) => {
                            let refused = error.is_connect();
                            outcomes.push(Err(error.to_string()));
                            if refused {
                                return outcomes; // the listener is gone: stop
                            }
                        }
                    }
                }
                outcomes
            })
        })
        .collect();
    wait_for(
        "64 answers before SIGTERM",
        Duration::from_secs(120),
        || answered.load(Ordering::Acquire) >= 64,
    )
    .await;
    service.terminate();
    let signalled = Instant::now();
    let status = service
        .wait_exit(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("still running 20 s after SIGTERM:\n{}", service.log()));
    assert!(status.success(), "exit {status}:\n{}", service.log());
    let exited_after = signalled.elapsed();
    let (mut ok, mut transport_errors) = (0, 0);
    for client in clients {
        let outcomes = tokio::time::timeout(Duration::from_secs(20), client)
            .await
            .expect("a client hung after the service exited")
            .unwrap();
        for outcome in outcomes {
            match outcome {
                Ok((status, body, count, _)) => {
                    assert_eq!(status, 200, "an answered request succeeded: {body}");
                    assert_eq!(body["count"], count, "{body}");
                    assert_eq!(vectors(&body).len(), count);
                    ok += 1;
                }
                Err(_) => transport_errors += 1,
            }
        }
    }
    assert!(ok >= 64);
    assert!(transport_errors >= 1, "clients saw the service go");
    let log = service.whole_log().await;
    assert!(log.contains("shutting down"), "{log}");
    assert!(
        exited_after < Duration::from_secs(15),
        "exited {exited_after:?} after SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_stalled_clients_exits_within_the_shutdown_timeout() {
    // Clients are given a minute; the shutdown only two seconds.
    let mut service = start_child(&[
        ("AKIDB_CLIENT_TIMEOUT_MS", "60000"),
        ("AKIDB_SHUTDOWN_TIMEOUT_MS", "2000"),
    ]);
    service.wait_ready().await;
    let addr = service.addr.parse().unwrap();
    let mut stalled = Vec::new();
    let mut half_headers = common::raw::connect(addr).await;
    half_headers
        .write_all(b"POST /api/v1/embed HTTP/1.1\r\nhost: t\r\n")
        .await
        .unwrap();
    stalled.push(half_headers);
    let mut half_body = common::raw::connect(addr).await;
    half_body
        .write_all(
            b"POST /api/v1/embed HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"inputs\": [",
        )
        .await
        .unwrap();
    stalled.push(half_body);
    stalled.push(common::raw::connect(addr).await);
    // Let the service take them in (an answered request proves the accept loop went past).
    let (status, _) = common::json_of(
        fresh_client()
            .get(service.url("/health"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);

    service.terminate();
    let signalled = Instant::now();
    let status = service
        .wait_exit(Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("stalled clients held the shutdown:\n{}", service.log()));
    assert!(status.success(), "exit {status}:\n{}", service.log());
    assert!(
        signalled.elapsed() >= Duration::from_millis(1500),
        "the shutdown waited for the stalled clients first"
    );
    assert!(
        service.log().contains("shutdown timeout reached"),
        "{}",
        service.log()
    );
    drop(stalled);
}
