//! The HTTP layer: parses and checks requests at the edge, hands them to the engine and maps
//! every error to a status and body, per dialect.
//!
//! | route | what |
//! | --- | --- |
//! | `POST /api/v1/embed` | `{"model"?, "inputs": [..], "normalize"?, "prompt_name"?, "dimensions"?, "truncate"?}` → `{"embeddings", "dimension", "count"}` ([`seed`]) |
//! | `POST /v1/embeddings` | OpenAI-compatible: `input` string or array, `model`, `dimensions`, `encoding_format` `float`/`base64` ([`openai`]) |
//! | `GET /v1/models`, `GET /v1/models/{id}` | OpenAI's model list and card: every name each model answers to |
//! | `POST /embed`, `POST /` | text-embeddings-inference: `inputs`, `normalize`, `truncate`, `truncation_direction`, `prompt_name`, `dimensions` → bare array of vectors ([`tei`]) |
//! | `POST /tokenize`, `GET /info` | text-embeddings-inference: token ids; model id, revision, dtype, limits, version |
//! | `GET /health` | 200 once every model is loaded and calibrated, 503 before; never needs the API key, but without it (when one is set) says only the state and the model ids ([`seed::health`]) |
//! | `GET /api/v1/models` | the served models: id, dimension, max_tokens, dimensions, prompts |
//! | `GET /metrics` | Prometheus text exposition |
//!
//! With `AKIDB_METRICS_BIND`, a second listener serves `GET /metrics` and a detailed
//! `GET /health`, without the API key ([`metrics_router`]).
//!
//! - [`request`]: the request bodies, read with a deadline, parsed and checked against the
//!   limits (the functions the fuzz targets call);
//! - [`dispatch`]: the one path from a parsed request to the engine (model, deadline);
//! - [`error`]: the service's error type and its one table of status codes and bodies per
//!   dialect;
//! - [`auth`]: the `Authorization: Bearer` check (one header, constant-time);
//! - [`observability`]: request ids, spans, timing headers;
//! - [`state`]: what handlers share.

pub mod auth;
pub mod dispatch;
pub mod error;
pub mod observability;
pub mod openai;
pub mod request;
pub mod seed;
pub mod state;
pub mod tei;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tower::util::MapRequestLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use error::ApiError;
use state::AppState;

use crate::engine::shown;

/// Builds the service's router over `state`.
pub fn router(state: AppState) -> Router {
    let mut protected = Router::new()
        .route("/api/v1/embed", post(seed::embed))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{*id}", get(openai::retrieve_model))
        .route("/embed", post(tei::embed))
        .route("/", post(tei::embed))
        .route("/tokenize", post(tei::tokenize))
        .route("/info", get(tei::info))
        .route("/api/v1/models", get(seed::models))
        .route("/metrics", get(seed::metrics));
    if let Some(key) = state.api_key() {
        protected = protected.route_layer(middleware::from_fn_with_state(
            key.clone(),
            auth::require_api_key,
        ));
    }
    let routes = Router::new()
        .route("/health", get(seed::health))
        .merge(protected);
    observed(routes, &state)
        .layer(DefaultBodyLimit::max(state.limits().max_body_bytes))
        .with_state(state)
}

/// The router of the metrics listener (`AKIDB_METRICS_BIND`), an operator's port: `GET /metrics`
/// without the API key, as Prometheus scrapes by convention (text-embeddings-inference's
/// `--prometheus-port`), and `GET /health` with every detail. Requests are counted and logged
/// like those of the main listener.
pub fn metrics_router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/metrics", get(seed::metrics))
        .route("/health", get(seed::health_detailed));
    observed(routes, &state).with_state(state)
}

/// What every listener's routes share: in-flight tracking, the request log and metrics, the
/// JSON answers for unknown routes and methods, and request ids on every answer.
fn observed(routes: Router<AppState>, state: &AppState) -> Router<AppState> {
    routes
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            observability::observe,
        ))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        // Outermost last: a client's id is checked, then kept or made, then returned.
        .layer(PropagateRequestIdLayer::new(observability::REQUEST_ID))
        .layer(SetRequestIdLayer::new(
            observability::REQUEST_ID,
            MakeRequestUuid,
        ))
        .layer(MapRequestLayer::new(observability::keep_sane_request_id))
}

/// Records every routed request's status and latency.
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics()
        .observe_request(&route, response.status().as_u16(), started.elapsed());
    response
}

/// 404 for a path no route answers; the path and method are the client's, shown cut.
async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::RouteNotFound(format!(
        "no route for {} {}",
        shown(method.as_str()),
        shown(uri.path())
    ))
}

/// 405 for a method the route does not answer; the path and method are shown cut.
async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{} does not accept {}",
        shown(uri.path()),
        shown(method.as_str())
    ))
}
