//! The service's own dialect: `POST /api/v1/embed`, `GET /api/v1/models`, `GET /health`,
//! `GET /metrics`.

use akidb_embedding_core::ModelInfo;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::dispatch::run_embedding;
use super::error::ApiError;
use super::request::ApiJson;
pub use super::request::EmbedBody;
use super::state::AppState;
use crate::engine::loading::{ModelState, ModelStatus};

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

pub async fn embed(
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

pub async fn health(State(state): State<AppState>) -> Response {
    let states = state.load_status().snapshot();
    match state.healthy_engine() {
        Ok(engine) => Json(HealthOutput {
            status: "ok",
            models: engine.ids(),
            states,
        })
        .into_response(),
        Err(error) => {
            let failed = states
                .iter()
                .any(|status| status.state == ModelState::Failed);
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

pub async fn models(State(state): State<AppState>) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    Ok(Json(ModelsOutput {
        models: engine.infos().collect(),
    })
    .into_response())
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let queues: Vec<(&str, usize)> = state
        .engine()
        .map(|engine| {
            engine
                .batchers()
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
