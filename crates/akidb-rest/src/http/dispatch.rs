//! The one path from a parsed request to the engine, shared by every dialect: the deadline
//! (the service's, or the caller's own when shorter), the engine's call within it, and the
//! vectors' encodings.

use std::time::Duration;

use akidb_embedding_core::EmbedResponse;
use axum::http::HeaderMap;
use base64::Engine as _;
use tokio::time::Instant;

use super::error::ApiError;
use super::request::{Parsed, timeout_header};
use super::state::AppState;
use crate::engine::EngineError;

/// The deadline of a request and its length: the service's, or the caller's own (`timeout`
/// field or header) when shorter.
pub fn deadline(
    state: &AppState,
    headers: &HeaderMap,
    field: Option<Duration>,
) -> Result<(Instant, Duration), ApiError> {
    let requested = match field {
        Some(timeout) => Some(timeout),
        None => timeout_header(headers)?,
    };
    let timeout = requested.map_or(state.request_timeout(), |requested| {
        requested.min(state.request_timeout())
    });
    Ok((Instant::now() + timeout, timeout))
}

/// Runs `work` (an engine call given the deadline) before the deadline; past it, the work is
/// dropped and the client gets 504.
pub async fn within<T, F>((deadline, timeout): (Instant, Duration), work: F) -> Result<T, ApiError>
where
    F: Future<Output = Result<T, EngineError>>,
{
    tokio::time::timeout_at(deadline, work)
        .await
        .map_err(|_| {
            ApiError::Timeout(format!(
                "the request did not finish within {} ms",
                timeout.as_millis()
            ))
        })?
        .map_err(|error| match error {
            EngineError::Timeout => ApiError::Timeout(format!(
                "the request did not finish within {} ms",
                timeout.as_millis()
            )),
            other => other.into(),
        })
}

/// Embeds a parsed request through the engine before its deadline; the model's id and the
/// vectors, or the error the client gets. When the deadline passes, the request's work is
/// dropped (its tokenisation stops between texts, its queued runs are skipped).
pub async fn run_embedding(
    state: &AppState,
    headers: &HeaderMap,
    parsed: Parsed,
) -> Result<(String, EmbedResponse), ApiError> {
    let engine = state.engine()?;
    let due = deadline(state, headers, parsed.timeout)?;
    let (info, response) = within(
        due,
        engine.embed(parsed.model.as_deref(), parsed.request, due.0),
    )
    .await?;
    Ok((info.id.clone(), response))
}

/// Base64 of the vector's little-endian `f32` bytes.
pub fn encode_base64(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
