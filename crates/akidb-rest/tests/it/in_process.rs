//! The router in-process, through `tower::ServiceExt::oneshot` (no socket).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use akidb_embedding_core::EmbeddingProvider;
use akidb_embedding_mock::MockEmbeddingProvider;
use akidb_rest::{AppState, Config, router};
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::common::post_request as post;

async fn state(config: &Config) -> AppState {
    let state = AppState::new(config);
    let mock: Arc<dyn EmbeddingProvider> = Arc::new(MockEmbeddingProvider::new(16));
    state.install(vec![mock]).await.unwrap();
    state
}

async fn answer(state: AppState, request: Request<Body>) -> (StatusCode, Value) {
    let response = router(state).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn embeds_through_the_router() {
    let (status, body) = answer(
        state(&Config::default()).await,
        post(
            "/api/v1/embed",
            &json!({"inputs": ["a", "b"], "dimensions": 8}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["count"], 2);
    assert_eq!(body["dimension"], 8);
}

#[tokio::test]
async fn answers_503_before_models_are_installed() {
    let empty = AppState::new(&Config::default());
    let (status, body) = answer(
        empty.clone(),
        Request::get("/health").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["type"], "not_ready");
    let (status, _) = answer(empty, post("/v1/embeddings", &json!({"input": "a"}))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

/// The limit applies to a request that passed the key (the key itself is tested in
/// `security.rs`).
#[tokio::test]
async fn refuses_bodies_over_the_limit() {
    let config = Config {
        max_body_bytes: 100,
        api_key: Some("k".parse().unwrap()),
        ..Config::default()
    };
    let big = json!({"inputs": ["x".repeat(200)]});
    let mut request = post("/api/v1/embed", &big);
    request
        .headers_mut()
        .insert(header::AUTHORIZATION, "Bearer k".parse().unwrap());
    let (status, body) = answer(state(&config).await, request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["type"], "payload_too_large");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let (status, body) = answer(
        state(&Config::default()).await,
        Request::get("/v2/embed").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["type"], "not_found");
    let (status, body) = answer(
        state(&Config::default()).await,
        Request::delete("/health").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"]["type"], "method_not_allowed");
}
