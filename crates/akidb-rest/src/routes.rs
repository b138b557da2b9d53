//! The HTTP layer: parses requests, checks limits, hands texts to the batchers and maps every
//! error through [`ApiError`].
//!
//! | route | what |
//! | --- | --- |
//! | `POST /api/v1/embed` | `{"model"?, "inputs": [..], "normalize"?, "prompt_name"?, "dimensions"?, "truncate"?}` → `{"embeddings", "dimension", "count"}` |
//! | `POST /v1/embeddings` | OpenAI-compatible: `input` string or array, `model`, `dimensions`, `encoding_format` `float`/`base64` |
//! | `GET /health` | 200 once every model is loaded and warmed up, 503 before (never needs the API key) |
//! | `GET /api/v1/models` | the served models: id, dimension, max_tokens, dimensions, prompts |
//! | `GET /metrics` | Prometheus text exposition |

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
use crate::request::{ApiJson, Parsed, timeout_header};
pub use crate::request::{EmbedBody, EncodingFormat, OpenAiBody, OpenAiInput};
use crate::state::AppState;

/// Builds the service's router over `state`.
pub fn router(state: AppState) -> Router {
    let mut protected = Router::new()
        .route("/api/v1/embed", post(embed))
        .route("/v1/embeddings", post(openai_embeddings))
        .route("/api/v1/models", get(models))
        .route("/metrics", get(metrics));
    if let Some(key) = state.api_key() {
        protected = protected.route_layer(middleware::from_fn_with_state(
            key.clone(),
            auth::require_api_key,
        ));
    }
    Router::new()
        .route("/health", get(health))
        .merge(protected)
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.limits().max_body_bytes))
        .with_state(state)
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
struct OpenAiOutput {
    object: &'static str,
    data: Vec<OpenAiEmbedding>,
    model: String,
    usage: Usage,
}

#[derive(Debug, Serialize)]
struct OpenAiEmbedding {
    object: &'static str,
    index: usize,
    embedding: EncodedVector,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum EncodedVector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

#[derive(Debug, Serialize)]
struct ModelsOutput<'a> {
    models: Vec<&'a ModelInfo>,
}

#[derive(Debug, Serialize)]
struct HealthOutput<'a> {
    status: &'static str,
    models: Vec<&'a str>,
}

/// Shared path of both embedding routes once the body is parsed and within the limits: pick
/// the model, queue (or be shed at once when the work ahead would not let the request finish
/// in time), wait. The deadline is the service's, or the caller's own (`timeout` field or
/// header) when shorter.
async fn run_embedding(
    state: &AppState,
    headers: &HeaderMap,
    parsed: Parsed,
) -> Result<(String, EmbedResponse), ApiError> {
    let batcher = state.models()?.resolve(parsed.model.as_deref())?;
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

async fn openai_embeddings(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<OpenAiBody>,
) -> Result<Json<OpenAiOutput>, ApiError> {
    let parsed = body.into_parsed(&state.limits())?;
    let format = parsed.encoding;
    let (model, response) = run_embedding(&state, &headers, parsed).await?;
    let total_tokens = response.total_tokens();
    let data = response
        .embeddings
        .into_iter()
        .enumerate()
        .map(|(index, vector)| OpenAiEmbedding {
            object: "embedding",
            index,
            embedding: match format {
                EncodingFormat::Float => EncodedVector::Float(vector),
                EncodingFormat::Base64 => EncodedVector::Base64(encode_base64(&vector)),
            },
        })
        .collect();
    Ok(Json(OpenAiOutput {
        object: "list",
        data,
        model,
        usage: Usage {
            prompt_tokens: total_tokens,
            total_tokens,
        },
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

async fn health(State(state): State<AppState>) -> Result<Response, ApiError> {
    let models = state.healthy_models()?;
    Ok(Json(HealthOutput {
        status: "ok",
        models: models.ids(),
    })
    .into_response())
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
