//! The HTTP routes in-process (`tower::ServiceExt::oneshot`, no socket) over the mock: the
//! fuzz input is the body of `POST /api/v1/embed` and of `POST /v1/embeddings`.
//!
//! Invariants: no panic; every answer is 200 with one vector per text, or a client error
//! (400, 404 for a model not served, 413, 422) in the service's one error shape; never a 5xx
//! but a 504 for a body that sets its own (possibly tiny) `timeout`.

#![no_main]

use std::sync::{Arc, LazyLock};

use akidb_embedding_core::EmbeddingProvider;
use akidb_embedding_mock::MockEmbeddingProvider;
use akidb_rest::request::{self, EmbedBody, OpenAiBody};
use akidb_rest::{AppState, Config, router};
use axum::body::{Body, to_bytes};
use axum::http::{Request, header};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct Service {
    runtime: tokio::runtime::Runtime,
    state: AppState,
}

static SERVICE: LazyLock<Service> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let config = Config {
        max_inputs: 16,
        batch_wait_ms: 0,
        ..Config::default()
    };
    let state = AppState::new(&config);
    let mock: Arc<dyn EmbeddingProvider> = Arc::new(MockEmbeddingProvider::new(8).with_id("mock"));
    // Batchers are spawned on the runtime that will drive them.
    runtime
        .block_on(state.install(vec![mock]))
        .expect("install");
    Service { runtime, state }
});

fuzz_target!(|data: &[u8]| {
    let service = &*SERVICE;
    for path in ["/api/v1/embed", "/v1/embeddings"] {
        let request = Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(data.to_vec()))
            .expect("request");
        let (status, body) = service.runtime.block_on(async {
            let response = router(service.state.clone())
                .oneshot(request)
                .await
                .expect("infallible");
            let status = response.status().as_u16();
            let body = to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("body");
            (status, body)
        });
        let answer: serde_json::Value = serde_json::from_slice(&body).expect("JSON answer");
        match status {
            200 => {
                let (vectors, texts) = if path == "/v1/embeddings" {
                    let body: OpenAiBody = request::parse_json(data).expect("accepted body");
                    (
                        answer["data"].as_array().expect("data").len(),
                        body.input.0.len(),
                    )
                } else {
                    let body: EmbedBody = request::parse_json(data).expect("accepted body");
                    let count = answer["count"].as_u64().expect("count") as usize;
                    let vectors = answer["embeddings"].as_array().expect("embeddings").len();
                    assert_eq!(count, vectors);
                    (vectors, body.inputs.len())
                };
                assert!(vectors >= 1);
                assert_eq!(vectors, texts, "one vector per text");
            }
            // A caller's own `timeout` may be too short for any work: 504 then.
            504 if request::parse_json::<serde_json::Value>(data)
                .is_ok_and(|body| body["timeout"].is_number()) => {}
            400 | 404 | 413 | 422 => {
                let error = answer["error"].as_object().expect("error object");
                assert_eq!(error.len(), 2, "{answer}");
                assert!(answer["error"]["type"].is_string());
                assert!(answer["error"]["message"].is_string());
            }
            other => panic!("{path}: status {other}: {answer}"),
        }
    }
});
