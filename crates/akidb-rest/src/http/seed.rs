//! The service's own dialect: `POST /api/v1/embed`, `GET /api/v1/models`, `GET /health`,
//! `GET /metrics`.

use akidb_embedding_core::ModelInfo;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::auth;
use super::dispatch::run_embedding;
use super::error::ApiError;
use super::request::ApiJson;
pub use super::request::EmbedBody;
use super::state::AppState;
use crate::engine::Engine;
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

/// Answer of `GET /health`. `states` (each configured model's state, with its configured
/// name or path, download figures and load error) only for a caller that may see details.
#[derive(Debug, Serialize)]
struct HealthOutput<'a> {
    status: &'static str,
    models: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    states: Option<Vec<ModelStatus>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDetail>,
}

#[derive(Debug, Serialize)]
struct ErrorDetail {
    #[serde(rename = "type")]
    kind: &'static str,
    message: String,
}

/// `POST /api/v1/embed`: the vectors of `inputs`.
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

/// `GET /health` on the main listener: 200 once every model serves, 503 before and while
/// draining. It never needs the API key; without it (when one is configured) the answer says
/// only the state and the served models' ids: the configured model entries (file paths,
/// perhaps), download figures and load errors need the key, or the metrics listener.
pub async fn health(State(state): State<AppState>, headers: HeaderMap) -> Response {
    // Duplicate or wrong credentials see what no credentials see.
    let detailed = state.api_key().is_none_or(|key| {
        matches!(
            auth::presented_key(&headers, key),
            Ok(auth::Presented::Valid)
        )
    });
    health_answer(&state, detailed)
}

/// `GET /health` on the metrics listener (`AKIDB_METRICS_BIND`), an operator's port: every
/// detail, without the key.
pub async fn health_detailed(State(state): State<AppState>) -> Response {
    health_answer(&state, true)
}

fn health_answer(state: &AppState, detailed: bool) -> Response {
    let states = detailed.then(|| state.load_status().snapshot());
    match state.healthy_engine() {
        Ok(engine) => Json(HealthOutput {
            status: "ok",
            models: engine.ids(),
            states,
            error: None,
        })
        .into_response(),
        Err(error) => {
            let failed = state
                .load_status()
                .snapshot()
                .iter()
                .any(|status| status.state == ModelState::Failed);
            let body = HealthOutput {
                status: if state.is_draining() {
                    "draining"
                } else if failed {
                    "failed"
                } else {
                    "loading"
                },
                models: state.engine().map(Engine::ids).unwrap_or_default(),
                states,
                error: Some(ErrorDetail {
                    kind: error.type_name(),
                    message: error.message(),
                }),
            };
            error.respond(error.status(), &body)
        }
    }
}

/// `GET /api/v1/models`: the served models.
pub async fn models(State(state): State<AppState>) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    Ok(Json(ModelsOutput {
        models: engine.infos().collect(),
    })
    .into_response())
}

/// `GET /metrics`: the Prometheus text exposition.
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
