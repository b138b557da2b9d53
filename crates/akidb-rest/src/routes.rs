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

use std::fmt;
use std::time::Instant;

use akidb_embedding_core::{EmbedRequest, EmbedResponse, ModelInfo, Truncation};
use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::auth;
use crate::error::{ApiError, ApiJson};
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

/// Body of `POST /api/v1/embed`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedBody {
    /// The model's id; may be left out when the service serves one model.
    #[serde(default)]
    pub model: Option<String>,
    /// The texts.
    pub inputs: Vec<String>,
    /// L2-normalise the vectors (default `true`).
    #[serde(default = "yes")]
    pub normalize: bool,
    /// A task prompt the model defines (`query`, `document`, …).
    #[serde(default)]
    pub prompt_name: Option<String>,
    /// Output dimension (Matryoshka truncation); default: the model's full dimension.
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// Truncate over-long texts (default `true`); `false` refuses them with 422.
    #[serde(default = "yes")]
    pub truncate: bool,
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

/// Body of `POST /v1/embeddings` (OpenAI's embeddings API).
///
/// Fields OpenAI clients may add (such as `user`) are accepted and ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OpenAiBody {
    /// The model's id; may be left out when the service serves one model.
    #[serde(default)]
    pub model: Option<String>,
    /// One text or an array of texts (token arrays are not supported).
    pub input: OpenAiInput,
    /// Output dimension (Matryoshka truncation).
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// `float` (default) or `base64` (little-endian `f32` bytes).
    #[serde(default)]
    pub encoding_format: Option<EncodingFormat>,
    /// Extension: a task prompt the model defines (`query`, `document`, …).
    #[serde(default)]
    pub prompt_name: Option<String>,
}

/// The `input` of an OpenAI request: a string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAiInput(pub Vec<String>);

impl<'de> Deserialize<'de> for OpenAiInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InputVisitor;

        impl<'de> Visitor<'de> for InputVisitor {
            type Value = OpenAiInput;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(OpenAiInput(vec![text.to_string()]))
            }

            fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
                Ok(OpenAiInput(vec![text]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut texts = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element::<serde_json::Value>()? {
                    match item {
                        serde_json::Value::String(text) => texts.push(text),
                        other => {
                            return Err(de::Error::custom(format!(
                                "input[{}] is {}, not a string: send texts (token arrays are not supported)",
                                texts.len(),
                                json_kind(&other)
                            )));
                        }
                    }
                }
                Ok(OpenAiInput(texts))
            }
        }

        deserializer.deserialize_any(InputVisitor)
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// How `POST /v1/embeddings` encodes vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// JSON arrays of numbers.
    Float,
    /// Base64 of the vector's little-endian `f32` bytes, as OpenAI sends it.
    Base64,
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

fn yes() -> bool {
    true
}

/// Shared path of both embedding routes: pick the model, check limits, queue, wait.
async fn run_embedding(
    state: &AppState,
    model: Option<&str>,
    request: EmbedRequest,
) -> Result<(String, EmbedResponse), ApiError> {
    let batcher = state.models()?.resolve(model)?;
    state.limits().check(&request.texts)?;
    let timeout = state.request_timeout();
    let response = tokio::time::timeout(timeout, batcher.embed(request))
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
    ApiJson(body): ApiJson<EmbedBody>,
) -> Result<Json<EmbedOutput>, ApiError> {
    let request = EmbedRequest {
        texts: body.inputs,
        normalize: body.normalize,
        prompt_name: body.prompt_name,
        dimensions: body.dimensions,
        truncation: if body.truncate {
            Truncation::Truncate
        } else {
            Truncation::Error
        },
    };
    let (_, response) = run_embedding(&state, body.model.as_deref(), request).await?;
    Ok(Json(EmbedOutput {
        count: response.count,
        dimension: response.dimension,
        embeddings: response.embeddings,
    }))
}

async fn openai_embeddings(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<OpenAiBody>,
) -> Result<Json<OpenAiOutput>, ApiError> {
    let mut request = EmbedRequest::new(body.input.0);
    request.dimensions = body.dimensions;
    request.prompt_name = body.prompt_name;
    let format = body.encoding_format.unwrap_or(EncodingFormat::Float);
    let (model, response) = run_embedding(&state, body.model.as_deref(), request).await?;
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
            prompt_tokens: response.total_tokens,
            total_tokens: response.total_tokens,
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
    let models = state.models()?;
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
