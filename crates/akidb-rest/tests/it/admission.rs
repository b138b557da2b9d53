//! Every unit of work a request causes is admitted and bounded, whatever its route: a request
//! whose own work cannot finish before its deadline is refused at once (413 when it never
//! could, 503 with `Retry-After` when it cannot now), `/tokenize` takes a place in the queue as
//! embedding does, an over-long text is refused from a bounded prefix, `Left` truncation keeps
//! the end of a text from one tokenisation, and a failed model load always stops the server
//! with its reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use akidb_embedding_core::{EmbedRequest, EmbeddingError, EmbeddingProvider, Truncation};
use akidb_embedding_mock::MockEmbeddingProvider;
use akidb_rest::engine::batcher::CALIBRATION_RUNS;
use akidb_rest::{Config, ServeError, Server};
use serde_json::json;

use common::{Fixture, TestServer, assert_error, config, wait_for};

fn words(count: usize) -> String {
    vec!["word"; count].join(" ")
}

/// A mock that costs 1 ms per padded token, behind a server whose deadline is 2 s.
async fn slow_server(queue_capacity: usize) -> (TestServer, Arc<MockEmbeddingProvider>) {
    let mock = Arc::new(
        MockEmbeddingProvider::new(8)
            .with_id("slow")
            .with_latency_per_token(Duration::from_millis(1)),
    );
    let config = Config {
        request_timeout_ms: 2_000,
        queue_capacity,
        ..config()
    };
    let provider: Arc<dyn EmbeddingProvider> = mock.clone();
    (TestServer::start(config, vec![provider]).await, mock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_own_work_cannot_finish_is_refused_before_it_runs() {
    let (server, mock) = slow_server(64).await;
    let calibration = mock.calls();
    assert_eq!(
        calibration, CALIBRATION_RUNS as u64,
        "start-up runs: one short, one at the cap"
    );
    // Four texts at the 512-token cap: about 2 s of work, past 90 % of the 2 s deadline.
    let (status, body) = server
        .post("/api/v1/embed", &json!({"inputs": vec![words(600); 4]}))
        .await;
    let message = assert_error(status, &body, 413, "payload_too_large");
    assert!(message.contains("fewer or shorter texts"), "{message}");
    // About 300 ms of its own work cannot fit a 100 ms deadline, even on an idle model.
    let response = server
        .client
        .post(server.url("/api/v1/embed"))
        .header("timeout", "0.1")
        .json(&json!({"inputs": [words(300)]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let (status, body) = common::json_of(response).await;
    assert_error(status, &body, 503, "overloaded");
    assert_eq!(
        mock.calls(),
        calibration,
        "no refused request reached the model"
    );
    // The same request with time enough is served.
    let (status, body) = server
        .post(
            "/api/v1/embed",
            &json!({"inputs": [words(300)], "timeout": 1.5}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_takes_a_place_in_the_queue_as_embedding_does() {
    let (server, mock) = slow_server(1).await;
    let server = Arc::new(server);
    let embed = |words_count: usize| {
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            server
                .post("/api/v1/embed", &json!({"inputs": [words(words_count)]}))
                .await
        })
    };
    // One request runs (300 ms), a second waits in the only place of the queue.
    let running = embed(300);
    wait_for("the first run to start", Duration::from_secs(10), || {
        mock.calls() == CALIBRATION_RUNS as u64 + 1
    })
    .await;
    let waiting = embed(10);
    let engine = server.state.engine().unwrap();
    let batcher = engine.resolve(None).unwrap();
    wait_for(
        "the second request to queue",
        Duration::from_secs(10),
        || batcher.queue_depth() == 1,
    )
    .await;
    let (status, body) = server
        .post("/tokenize", &json!({"inputs": "hello there"}))
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error_type"], "Overloaded", "{body}");
    assert_eq!(running.await.unwrap().0, 200);
    assert_eq!(waiting.await.unwrap().0, 200);
    let (status, body) = server
        .post("/tokenize", &json!({"inputs": "hello there"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0].as_array().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_text_is_refused_from_a_bounded_prefix_at_once() {
    let loaded = Fixture::MiniLm.load().await;
    let server = TestServer::start(config(), vec![Arc::clone(&loaded.provider)]).await;
    // 1.5 MB of prose, `truncate: false`: refused for its length from a bounded prefix.
    let text = "The night train to the northern coast leaves at eleven. ".repeat(27_000);
    let body = json!({"inputs": ["short", text], "truncate": false});
    let (status, answer) = server.post("/api/v1/embed", &body).await;
    let message = assert_error(status, &answer, 422, "invalid_request");
    assert!(message.contains("index 1 is longer than"), "{message}");
    // With 50 ms to answer it is refused too, for its length or its estimate, never 504;
    // either way nothing of it is left running.
    for _ in 0..4 {
        let response = server
            .client
            .post(server.url("/api/v1/embed"))
            .header("timeout", "0.05")
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, answer) = common::json_of(response).await;
        assert!(status == 422 || status == 503, "{status}: {answer}");
    }
    let engine = server.state.engine().unwrap();
    assert!(engine.is_idle(), "no work of the refused requests is left");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn left_truncation_keeps_the_end_of_a_long_text() {
    for fixture in [Fixture::Mock, Fixture::MiniLm, Fixture::TinyGemma] {
        let loaded = fixture.load().await;
        let server = TestServer::start(config(), vec![Arc::clone(&loaded.provider)]).await;
        let text = format!(
            "{} the very end of the text",
            "An opening that only a left cut drops. ".repeat(20_000)
        );
        let (status, body) = server
            .post(
                "/embed",
                &json!({"inputs": text, "truncation_direction": "Left"}),
            )
            .await;
        assert_eq!(status, 200, "{fixture:?}: {body}");
        let got: Vec<Vec<f32>> = serde_json::from_value(body).unwrap();
        let want = loaded
            .direct(EmbedRequest::new([text.as_str()]).with_truncation(Truncation::TruncateStart))
            .await;
        loaded.assert_same_vectors(&got, &want);
        // The tiny double's random weights give nearly one vector for any long text of one
        // sentence repeated; the others tell the two ends apart.
        if fixture != Fixture::TinyGemma {
            let right = loaded.direct(EmbedRequest::new([text.as_str()])).await;
            assert!(
                akidb_test_support::cosine(&got[0], &right[0]) < 0.9999,
                "{fixture:?}: the left cut differs from the right one"
            );
        }
        server.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_load_always_stops_the_server_with_its_reason() {
    // The failure may reach the server before or after the loader's task ends; both orders
    // must end in the load error, never in a clean stop.
    for attempt in 0..100 {
        let server = Server::bind(&config()).await.unwrap();
        let loader = async move {
            if attempt % 2 == 0 {
                tokio::task::yield_now().await;
            }
            Err::<Vec<Arc<dyn EmbeddingProvider>>, _>(EmbeddingError::model_load(
                "/models/broken",
                "model.onnx_data is missing",
            ))
        };
        let ended = tokio::time::timeout(
            Duration::from_secs(10),
            server.run(loader, std::future::pending()),
        )
        .await
        .expect("the server stops after a failed load");
        match ended {
            Err(ServeError::Load(error)) => {
                assert!(
                    error.to_string().contains("model.onnx_data is missing"),
                    "{error}"
                );
            }
            other => panic!("attempt {attempt}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_fails_its_calibration_run_does_not_serve() {
    let mock =
        MockEmbeddingProvider::new(8).with_failures(akidb_embedding_mock::FailureMode::Always);
    let provider: Arc<dyn EmbeddingProvider> = Arc::new(mock);
    let server = TestServer::start_loading(config(), async move { Ok(vec![provider]) }).await;
    match server.ended().await {
        Err(ServeError::Load(error)) => {
            assert!(
                error.to_string().contains("calibration run failed"),
                "{error}"
            );
        }
        other => panic!("{other:?}"),
    }
}
