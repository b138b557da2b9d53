//! The HTTP layer: parses requests, checks limits, hands texts to the batchers and maps every
//! error through [`ApiError`].
//!
//! | route | what |
//! | --- | --- |
//! | `POST /api/v1/embed` | `{"model"?, "inputs": [..], "normalize"?, "prompt_name"?, "dimensions"?, "truncate"?}` → `{"embeddings", "dimension", "count"}` |
//! | `POST /v1/embeddings` | OpenAI-compatible: `input` string or array, `model`, `dimensions`, `encoding_format` `float`/`base64` ([`crate::openai`]) |
//! | `GET /v1/models`, `GET /v1/models/{id}` | OpenAI's model list and card: every name each model answers to |
//! | `POST /embed`, `POST /` | text-embeddings-inference: `inputs`, `normalize`, `truncate`, `truncation_direction`, `prompt_name`, `dimensions` → bare array of vectors ([`crate::tei`]) |
//! | `POST /tokenize`, `GET /info` | text-embeddings-inference: token ids; model id, revision, dtype, limits, version |
//! | `GET /health` | 200 once every model is loaded and warmed up, 503 before, with each model's state (never needs the API key) |
//! | `GET /api/v1/models` | the served models: id, dimension, max_tokens, dimensions, prompts |
//! | `GET /metrics` | Prometheus text exposition |
//!
//! With `AKIDB_METRICS_BIND`, a second listener serves `GET /metrics` alone, without the API
//! key ([`metrics_router`]).

use std::time::Instant;

use akidb_embedding_core::{EmbedResponse, ModelInfo};
use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::Serialize;

use crate::auth;
use crate::error::ApiError;
use crate::loading::ModelStatus;
use crate::request::{ApiJson, Parsed, timeout_header};
pub use crate::request::{EmbedBody, EncodingFormat, OpenAiBody, OpenAiInput};
use crate::state::AppState;
use crate::{observability, openai, tei};

/// Builds the service's router over `state`.
pub fn router(state: AppState) -> Router {
    let mut protected = Router::new()
        .route("/api/v1/embed", post(embed))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{*id}", get(openai::retrieve_model))
        .route("/embed", post(tei::embed))
        .route("/", post(tei::embed))
        .route("/tokenize", post(tei::tokenize))
        .route("/info", get(tei::info))
        .route("/api/v1/models", get(models))
        .route("/metrics", get(metrics));
    if let Some(key) = state.api_key() {
        protected = protected.route_layer(middleware::from_fn_with_state(
            key.clone(),
            auth::require_api_key,
        ));
    }
    let routes = Router::new().route("/health", get(health)).merge(protected);
    observed(routes, &state)
        .layer(DefaultBodyLimit::max(state.limits().max_body_bytes))
        .with_state(state)
}

/// What every listener's routes share: in-flight tracking, the request log and metrics, and
/// the JSON answers for unknown routes and methods.
fn observed(routes: Router<AppState>, state: &AppState) -> Router<AppState> {
    routes
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            observability::observe,
        ))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
}

/// Answer of `POST /api/v1/embed`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbedOutput {
    /// One vector per input, in input order.
    pub embeddings: Vec<Vec<f32>>,
    /// Length of every vector.
    pub dimension: usize,
    /// Number of vectors.
    pub count: usize,
}

#[derive(Debug, Serialize)]
struct ModelsOutput<'a> {
    models: Vec<&'a ModelInfo>,
}

#[derive(Debug, Serialize)]
struct HealthOutput<'a> {
    status: &'static str,
    models: Vec<&'a str>,
    states: Vec<ModelStatus>,
}

#[derive(Debug, Serialize)]
struct UnhealthyOutput {
    status: &'static str,
    states: Vec<ModelStatus>,
    error: ErrorDetail,
}

#[derive(Debug, Serialize)]
struct ErrorDetail {
    #[serde(rename = "type")]
    kind: &'static str,
    message: String,
}

/// Shared path of every embedding route once the body is parsed and within the limits: pick
/// the model, apply its default prompt when the request names none, queue (or be shed at once
/// when the work ahead would not let the request finish in time), wait. The deadline is the
/// service's, or the caller's own (`timeout` field or header) when shorter.
pub(crate) async fn run_embedding(
    state: &AppState,
    headers: &HeaderMap,
    mut parsed: Parsed,
) -> Result<(String, EmbedResponse), ApiError> {
    let models = state.models()?;
    let batcher = models.resolve(parsed.model.as_deref())?;
    if parsed.request.prompt_name.is_none() {
        parsed.request.prompt_name = models.default_prompt(batcher).map(str::to_string);
    }
    let requested = match parsed.timeout {
        Some(timeout) => Some(timeout),
        None => timeout_header(headers)?,
    };
    let timeout = requested.map_or(state.request_timeout(), |requested| {
        requested.min(state.request_timeout())
    });
    let deadline = tokio::time::Instant::now() + timeout;
    let response = tokio::time::timeout_at(
        deadline,
        batcher.embed_before(parsed.request, Some(deadline)),
    )
    .await
    .map_err(|_| {
        ApiError::Timeout(format!(
            "the request did not finish within {} ms",
            timeout.as_millis()
        ))
    })??;
    Ok((batcher.model_info().id.clone(), response))
}

async fn embed(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<EmbedBody>,
) -> Result<Json<EmbedOutput>, ApiError> {
    let parsed = body.into_parsed(&state.limits())?;
    let (_, response) = run_embedding(&state, &headers, parsed).await?;
    Ok(Json(EmbedOutput {
        count: response.count(),
        dimension: response.dimension,
        embeddings: response.embeddings,
    }))
}

/// Base64 of the vector's little-endian `f32` bytes.
pub fn encode_base64(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn health(State(state): State<AppState>) -> Response {
    let states = state.load_status().snapshot();
    match state.healthy_models() {
        Ok(models) => Json(HealthOutput {
            status: "ok",
            models: models.ids(),
            states,
        })
        .into_response(),
        Err(error) => {
            let failed = states
                .iter()
                .any(|status| status.state == crate::loading::ModelState::Failed);
            let mut response = error.clone().into_response();
            let body = UnhealthyOutput {
                status: if state.is_draining() {
                    "draining"
                } else if failed {
                    "failed"
                } else {
                    "loading"
                },
                states,
                error: ErrorDetail {
                    kind: error.type_name(),
                    message: error.to_string(),
                },
            };
            *response.body_mut() =
                axum::body::Body::from(serde_json::to_vec(&body).unwrap_or_default());
            response
        }
    }
}

async fn models(State(state): State<AppState>) -> Result<Response, ApiError> {
    let models = state.models()?;
    Ok(Json(ModelsOutput {
        models: models.infos().collect(),
    })
    .into_response())
}

async fn metrics(State(state): State<AppState>) -> Response {
    let queues: Vec<(&str, usize)> = state
        .models()
        .map(|models| {
            models
                .batchers()
                .iter()
                .map(|batcher| (batcher.model_info().id.as_str(), batcher.queue_depth()))
                .collect()
        })
        .unwrap_or_default();
    let body = state.metrics().render(state.is_ready(), queues);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The router of the metrics listener (`AKIDB_METRICS_BIND`): `GET /metrics` only, without
/// the API key, as Prometheus scrapes by convention (text-embeddings-inference's
/// `--prometheus-port`). Scrapes are counted and logged like those of the main listener.
pub fn metrics_router(state: AppState) -> Router {
    observed(Router::new().route("/metrics", get(metrics)), &state).with_state(state)
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

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NoRoute {
        status: StatusCode::NOT_FOUND,
        message: format!("no route for {method} {}", uri.path()),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::NoRoute {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!("{} does not accept {method}", uri.path()),
    }
}
