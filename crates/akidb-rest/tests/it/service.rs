//! Service behaviour that needs a controllable provider (latency, failures, slow loading):
//! run with the mock over a real socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

/// Model runs (and tokenisations) a model's calibration makes before it serves.
const CALIBRATION_RUNS: u64 = akidb_rest::engine::batcher::CALIBRATION_RUNS as u64;

use std::sync::Arc;
use std::time::Duration;

use akidb_embedding_core::{EmbeddingError, EmbeddingProvider};
use akidb_embedding_mock::{FailureMode, MockEmbeddingProvider};
use akidb_rest::{Config, ServeError};
use serde_json::json;

use common::{TestServer, assert_error, config};

fn mock(id: &str, dimension: usize) -> Arc<MockEmbeddingProvider> {
    Arc::new(MockEmbeddingProvider::new(dimension).with_id(id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_while_loading_and_200_once_loaded() {
    let provider: Arc<dyn EmbeddingProvider> = mock("slow", 8);
    let (finish_loading, loaded) = tokio::sync::oneshot::channel::<()>();
    let server = TestServer::start_loading(config(), async move {
        // The "model" loads when the test says so.
        let _ = loaded.await;
        Ok(vec![provider])
    })
    .await;

    let response = server.get("/health").await;
    assert_eq!(response.headers()["retry-after"], "1");
    let (status, body) = common::json_of(response).await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "loading", "{body}");
    assert_eq!(body["error"]["type"], "not_ready", "{body}");
    assert!(body["states"].is_array(), "{body}");
    let (status, body) = server
        .post("/api/v1/embed", &json!({"inputs": ["a"]}))
        .await;
    assert_error(status, &body, 503, "not_ready");
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("akidb_models_ready 0"), "{metrics}");

    finish_loading.send(()).unwrap();
    server.wait_ready().await;
    let (status, _) = server
        .post("/api/v1/embed", &json!({"inputs": ["a"]}))
        .await;
    assert_eq!(status, 200);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_fails_to_load_stops_the_service_with_the_reason() {
    let server = TestServer::start_loading(config(), async {
        Err(EmbeddingError::model_load(
            "/models/missing",
            "no model.onnx",
        ))
    })
    .await;
    match server.ended().await {
        Err(ServeError::Load(error)) => {
            assert!(error.to_string().contains("/models/missing"), "{error}")
        }
        other => panic!("expected a load error, got {other:?}"),
    }

    // A provider that fails its health check is a load failure too.
    let broken: Arc<dyn EmbeddingProvider> =
        Arc::new(MockEmbeddingProvider::new(8).with_failures(FailureMode::Always));
    let server = TestServer::start_loading(config(), async move { Ok(vec![broken]) }).await;
    assert!(matches!(server.ended().await, Err(ServeError::Load(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_times_out_with_504() {
    let slow: Arc<dyn EmbeddingProvider> =
        Arc::new(MockEmbeddingProvider::new(8).with_latency(Duration::from_millis(500)));
    let config = Config {
        request_timeout_ms: 50,
        ..config()
    };
    let server = TestServer::start(config, vec![slow]).await;
    let (status, body) = server
        .post("/api/v1/embed", &json!({"inputs": ["a"]}))
        .await;
    let message = assert_error(status, &body, 504, "timeout");
    assert!(message.contains("50 ms"), "{message}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after() {
    let slow = Arc::new(MockEmbeddingProvider::new(8).with_latency(Duration::from_millis(400)));
    let provider: Arc<dyn EmbeddingProvider> = slow.clone();
    let config = Config {
        queue_capacity: 1,
        batch_wait_ms: 0,
        ..config()
    };
    let server = Arc::new(TestServer::start(config, vec![provider]).await);
    let send = |text: &'static str| {
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            server
                .post("/api/v1/embed", &json!({"inputs": [text]}))
                .await
        })
    };
    let running = send("first");
    // The calibration runs came before the model was ready; the next is `first`.
    wait_until(|| async { slow.calls() == CALIBRATION_RUNS + 1 }).await; // `first` is running
    let waiting = send("second");
    wait_until(|| queue_depth_is(&server, 1)).await; // `second` fills the queue

    let response = server
        .client
        .post(server.url("/api/v1/embed"))
        .json(&json!({"inputs": ["third"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    let (status, body) = common::json_of(response).await;
    let message = assert_error(status, &body, 503, "overloaded");
    assert!(message.contains("full"), "{message}");

    assert_eq!(running.await.unwrap().0, 200);
    assert_eq!(waiting.await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_models_are_addressed_by_id() {
    let small: Arc<dyn EmbeddingProvider> = mock("small", 8);
    let large: Arc<dyn EmbeddingProvider> = mock("large", 64);
    let server = TestServer::start(config(), vec![small, large]).await;
    for (model, dimension) in [("small", 8), ("large", 64)] {
        let (status, body) = server
            .post("/api/v1/embed", &json!({"model": model, "inputs": ["a"]}))
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["dimension"], dimension);
        let (status, body) = server
            .post("/v1/embeddings", &json!({"model": model, "input": "a"}))
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["model"], model);
    }
    let (status, body) = server
        .post("/api/v1/embed", &json!({"inputs": ["a"]}))
        .await;
    let message = assert_error(status, &body, 422, "invalid_request");
    assert!(
        message.contains("small") && message.contains("large"),
        "{message}"
    );
    let (_, models) = common::json_of(server.get("/api/v1/models").await).await;
    let ids: Vec<&str> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["small", "large"]);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_dynamic_batching_every_request_runs_alone() {
    let counted = Arc::new(MockEmbeddingProvider::new(8).with_latency(Duration::from_millis(20)));
    let provider: Arc<dyn EmbeddingProvider> = counted.clone();
    let config = Config {
        dynamic_batching: false,
        ..config()
    };
    let server = Arc::new(TestServer::start(config, vec![provider]).await);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let server = Arc::clone(&server);
            tokio::spawn(async move {
                server
                    .post(
                        "/api/v1/embed",
                        &json!({"inputs": [format!("text {i}"), "shared"]}),
                    )
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().0, 200);
    }
    // The first runs are the calibration before the model was ready.
    assert_eq!(counted.batch_sizes()[CALIBRATION_RUNS as usize..], [2; 8]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_then_refuses_connections() {
    let slow = Arc::new(MockEmbeddingProvider::new(8).with_latency(Duration::from_millis(300)));
    let provider: Arc<dyn EmbeddingProvider> = slow.clone();
    let server = TestServer::start(config(), vec![provider]).await;
    let addr = server.addr;
    let client = server.client.clone();
    let in_flight = tokio::spawn(async move {
        client
            .post(format!("http://{addr}/api/v1/embed"))
            .json(&json!({"inputs": ["finishing"]}))
            .send()
            .await
    });
    // The calibration runs came before the model was ready; the next is the request's.
    wait_until(|| async { slow.calls() == CALIBRATION_RUNS + 1 }).await; // the request is being embedded
    server.stop().await.unwrap();
    let response = in_flight
        .await
        .unwrap()
        .expect("in-flight request answered");
    assert_eq!(response.status(), 200);
    assert!(
        reqwest::Client::new()
            .get(format!("http://{addr}/health"))
            .send()
            .await
            .is_err(),
        "no longer accepting connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_text_is_tokenised_once_per_request_through_the_service() {
    let counting = Arc::new(MockEmbeddingProvider::new(16));
    let provider: Arc<dyn EmbeddingProvider> = counting.clone();
    let config = Config {
        batch_wait_ms: 20,
        ..config()
    };
    let server = Arc::new(TestServer::start(config, vec![provider]).await);
    // The calibration runs (before the model was ready) tokenised one text each.
    assert_eq!(counting.tokenizer_calls(), CALIBRATION_RUNS);
    let bodies: Vec<serde_json::Value> = vec![
        json!({"inputs": ["one", "two words", "three more words"]}),
        json!({"inputs": ["query text"], "prompt_name": "query", "dimensions": 8}),
        json!({"inputs": ["x y z"], "truncate": false, "normalize": false}),
        json!({"inputs": ["alpha", "beta"]}),
    ];
    let texts: usize = bodies
        .iter()
        .map(|body| body["inputs"].as_array().unwrap().len())
        .sum();
    let answers = server.post_all_at_once("/api/v1/embed", bodies).await;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    let (status, _) = server
        .post("/v1/embeddings", &json!({"input": ["a", "b"]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        counting.tokenizer_calls() - CALIBRATION_RUNS,
        texts as u64 + 2,
        "one tokenisation per text per request: validation, the token limit, admission and \
         the model run all use the same encodings"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_own_timeout_is_honoured_and_capped_by_the_service() {
    let slow = || -> Arc<dyn EmbeddingProvider> {
        Arc::new(MockEmbeddingProvider::new(8).with_latency(Duration::from_millis(600)))
    };
    // The body's `timeout` field (seconds) shortens the service's 30 s deadline.
    let server = TestServer::start(config(), vec![slow()]).await;
    let (status, body) = server
        .post("/api/v1/embed", &json!({"inputs": ["a"], "timeout": 0.1}))
        .await;
    let message = assert_error(status, &body, 504, "timeout");
    assert!(message.contains("100 ms"), "{message}");
    server.stop().await.unwrap();

    // So does a `timeout` header, on the OpenAI route too.
    let server = TestServer::start(config(), vec![slow()]).await;
    let response = server
        .client
        .post(server.url("/v1/embeddings"))
        .header("timeout", "0.15")
        .json(&json!({"input": "a"}))
        .send()
        .await
        .unwrap();
    let (status, body) = common::json_of(response).await;
    let message = assert_error(status, &body, 504, "timeout");
    assert!(message.contains("150 ms"), "{message}");
    let (status, body) = server
        .post("/api/v1/embed", &json!({"inputs": ["a"], "timeout": -1}))
        .await;
    assert_error(status, &body, 422, "invalid_request");
    server.stop().await.unwrap();

    // A longer one is capped by the service's own deadline.
    let capped = Config {
        request_timeout_ms: 200,
        ..config()
    };
    let server = TestServer::start(capped, vec![slow()]).await;
    let (status, body) = server
        .post("/api/v1/embed", &json!({"inputs": ["a"], "timeout": 60}))
        .await;
    let message = assert_error(status, &body, 504, "timeout");
    assert!(message.contains("200 ms"), "{message}");
    server.stop().await.unwrap();
}

/// Polls `condition` every 5 ms; panics after 10 s.
async fn wait_until<F: std::future::Future<Output = bool>>(mut condition: impl FnMut() -> F) {
    let started = std::time::Instant::now();
    while !condition().await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "condition never held"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether `/metrics` reports `depth` requests waiting for the mock.
async fn queue_depth_is(server: &TestServer, depth: usize) -> bool {
    let text = server.get("/metrics").await.text().await.unwrap();
    text.contains(&format!("akidb_queue_depth{{model=\"mock\"}} {depth}"))
}
