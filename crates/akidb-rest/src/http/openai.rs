//! The OpenAI dialect: `POST /v1/embeddings`, `GET /v1/models`, `GET /v1/models/{id}`, with
//! errors shaped as OpenAI's (`{"error": {"message", "type", "param", "code"}}`), so the
//! official clients and the tools built on them (LangChain, LlamaIndex, Open WebUI) work
//! unchanged.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::dispatch::{encode_base64, run_embedding};
use super::error::{ApiError, Dialect};
use super::request::{ApiJson, EncodingFormat, OpenAiBody};
use super::state::AppState;

/// An [`ApiError`] answered in OpenAI's error shape, with the same status code.
#[derive(Debug)]
pub struct OpenAiError(pub ApiError);

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        self.0.into_response_in(Dialect::OpenAi)
    }
}

#[derive(Debug, Serialize)]
struct EmbeddingsOutput {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: String,
    usage: Usage,
}

#[derive(Debug, Serialize)]
struct EmbeddingItem {
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

/// `POST /v1/embeddings`: `input` string or array, `model` (an id or served name),
/// `dimensions`, `encoding_format` `float`/`base64`, and the extension `prompt_name`. The
/// answer names the model as the request did.
pub async fn embeddings(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<ApiJson<OpenAiBody>, ApiError>,
) -> Result<Response, OpenAiError> {
    let ApiJson(body) = body?;
    let parsed = body.into_parsed(&state.limits())?;
    let format = parsed.encoding;
    let asked = parsed.model.clone();
    let (model, response) = run_embedding(&state, &headers, parsed).await?;
    let total_tokens = response.total_tokens();
    let data = response
        .embeddings
        .into_iter()
        .enumerate()
        .map(|(index, vector)| EmbeddingItem {
            object: "embedding",
            index,
            embedding: match format {
                EncodingFormat::Float => EncodedVector::Float(vector),
                EncodingFormat::Base64 => EncodedVector::Base64(encode_base64(&vector)),
            },
        })
        .collect();
    Ok(Json(EmbeddingsOutput {
        object: "list",
        data,
        model: asked.unwrap_or(model),
        usage: Usage {
            prompt_tokens: total_tokens,
            total_tokens,
        },
    })
    .into_response())
}

/// One model as OpenAI's `GET /v1/models` lists it; `root` is the id the name resolves to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelCard {
    /// The name to send as `model`.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// When the service started (Unix seconds).
    pub created: u64,
    /// Always `akidb`.
    pub owned_by: &'static str,
    /// The model's own id (differs from `id` for an alias).
    pub root: String,
    /// Length of the model's vectors.
    pub dimension: usize,
    /// Most tokens per text.
    pub max_tokens: usize,
}

#[derive(Debug, Serialize)]
struct ModelList {
    object: &'static str,
    data: Vec<ModelCard>,
}

/// Unix seconds of the first call (the service's start, as `created`).
fn started_at() -> u64 {
    static STARTED: OnceLock<u64> = OnceLock::new();
    *STARTED.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs())
    })
}

fn cards(state: &AppState) -> Result<Vec<ModelCard>, ApiError> {
    let engine = state.engine()?;
    let infos: Vec<_> = engine.infos().collect();
    Ok(engine
        .names()
        .all()
        .filter_map(|(position, name)| {
            let info = infos.get(position)?;
            Some(ModelCard {
                id: name.to_string(),
                object: "model",
                created: started_at(),
                owned_by: "akidb",
                root: info.id.clone(),
                dimension: info.dimension,
                max_tokens: info.max_tokens,
            })
        })
        .collect())
}

/// `GET /v1/models`: every name each model answers to.
pub async fn list_models(State(state): State<AppState>) -> Result<Response, OpenAiError> {
    Ok(Json(ModelList {
        object: "list",
        data: cards(&state)?,
    })
    .into_response())
}

/// `GET /v1/models/{id}` (ids may hold slashes): the card of that name, or 404.
pub async fn retrieve_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, OpenAiError> {
    let id = id.trim_start_matches('/');
    let card = cards(&state)?
        .into_iter()
        .find(|card| card.id == id)
        .ok_or_else(|| {
            ApiError::ModelNotFound(format!(
                "model `{}` is not served here",
                crate::engine::shown(id)
            ))
        })?;
    Ok(Json(card).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::Field;

    #[test]
    fn errors_name_the_field_and_code_from_their_variant() {
        let unknown = ApiError::ModelNotFound("model `x` is not served here".into());
        assert_eq!(unknown.field(), Some(Field::Model));
        assert_eq!(unknown.openai_code(), Some("model_not_found"));
        // The message mentions a model; the field is still the one the variant names.
        let dimension = ApiError::invalid(
            Field::Dimensions,
            "unsupported output dimension 100; this model supports: 384",
        );
        assert_eq!(dimension.field().map(Field::name), Some("dimensions"));
        assert_eq!(dimension.openai_code(), Some("invalid_value"));
    }
}
