//! The service's one error type and the one place that maps errors to HTTP status codes.
//!
//! Every error leaves the service as `{"error": {"type": "...", "message": "..."}}`, axum's
//! own rejections included (see [`super::request::ApiJson`]).

use akidb_embedding_core::{EmbeddingError, ErrorKind};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::EngineError;

/// Seconds a client is told to wait (`Retry-After`) when the service is busy or loading.
const RETRY_AFTER_SECONDS: u64 = 1;

/// Everything a request can fail with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON (400).
    #[error("{0}")]
    InvalidJson(String),
    /// The body is JSON but not a valid request: wrong types, missing or unknown fields,
    /// empty inputs, an unknown prompt, an unsupported dimension, an over-long text that may
    /// not be truncated (422).
    #[error("{0}")]
    InvalidRequest(String),
    /// The body is not declared as JSON (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body, the number of texts or one text is larger than the service accepts (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request names a model this service does not serve (404).
    #[error("{0}")]
    ModelNotFound(String),
    /// No route answers this path (404) or method (405).
    #[error("{message}")]
    NoRoute {
        /// 404 or 405.
        status: StatusCode,
        /// What was asked for.
        message: String,
    },
    /// The API key is missing or wrong (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The client did not send its body within the client timeout (408).
    #[error("{0}")]
    RequestTimeout(String),
    /// The models are still loading (503, with `Retry-After`).
    #[error("{0}")]
    NotReady(String),
    /// The model's queue is full (503, with `Retry-After`).
    #[error("{0}")]
    Overloaded(String),
    /// The work ahead of the request would not let it finish before its deadline: refused at
    /// once (503, with `Retry-After` from the estimate) instead of a 504 at the deadline.
    #[error("{message}")]
    Shed {
        /// What was estimated.
        message: String,
        /// Seconds after which the request could fit, by the estimate.
        retry_after_secs: u64,
    },
    /// The request did not finish within the configured deadline (504).
    #[error("{0}")]
    Timeout(String),
    /// The provider failed; the details are logged (500).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status code of this error: the service's whole error→status table.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidJson(_) => StatusCode::BAD_REQUEST,
            Self::InvalidRequest(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ModelNotFound(_) => StatusCode::NOT_FOUND,
            Self::NoRoute { status, .. } => *status,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::NotReady(_) | Self::Overloaded(_) | Self::Shed { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `type` field of the error body: a stable, machine-readable name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::InvalidRequest(_) => "invalid_request",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::ModelNotFound(_) => "model_not_found",
            Self::NoRoute { status, .. } if *status == StatusCode::METHOD_NOT_ALLOWED => {
                "method_not_allowed"
            }
            Self::NoRoute { .. } => "not_found",
            Self::Unauthorized(_) => "unauthorized",
            Self::RequestTimeout(_) => "request_timeout",
            Self::NotReady(_) => "not_ready",
            Self::Overloaded(_) | Self::Shed { .. } => "overloaded",
            Self::Timeout(_) => "timeout",
            Self::Internal(_) => "internal_error",
        }
    }
}

impl From<EmbeddingError> for ApiError {
    fn from(error: EmbeddingError) -> Self {
        match error.kind() {
            // A size limit, like the character limits checked before it.
            _ if matches!(error, EmbeddingError::TooManyTokens { .. }) => {
                Self::PayloadTooLarge(error.to_string())
            }
            ErrorKind::InvalidInput => Self::InvalidRequest(error.to_string()),
            ErrorKind::Load | ErrorKind::Runtime => {
                tracing::error!(%error, "provider failure");
                Self::Internal(format!("the model failed: {error}"))
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::ModelRequired { .. } => Self::InvalidRequest(error.to_string()),
            EngineError::ModelNotFound { .. } => Self::ModelNotFound(error.to_string()),
            EngineError::QueueFull { .. } => Self::Overloaded(error.to_string()),
            EngineError::Shed { ref shed, .. } => Self::Shed {
                retry_after_secs: shed.retry_after_secs(),
                message: error.to_string(),
            },
            // Sending it again cannot help: too large, as a size limit is.
            EngineError::NeverFits { .. } => Self::PayloadTooLarge(error.to_string()),
            EngineError::Timeout => Self::Timeout(error.to_string()),
            EngineError::Stopped { .. } => Self::NotReady(error.to_string()),
            EngineError::Embedding(error) => error.into(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let message = rejection.body_text();
        match rejection {
            JsonRejection::JsonSyntaxError(_) => Self::InvalidJson(message),
            JsonRejection::JsonDataError(_) => Self::InvalidRequest(message),
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType(
                "send the body as JSON with `Content-Type: application/json`".to_string(),
            ),
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge(format!("the request body is too large: {message}"))
            }
            _ => Self::InvalidJson(message),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry = match &self {
            Self::NotReady(_) | Self::Overloaded(_) => Some(RETRY_AFTER_SECONDS),
            Self::Shed {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        };
        let unauthorized = matches!(self, Self::Unauthorized(_));
        let body = ErrorBody {
            error: ErrorDetail {
                kind: self.type_name(),
                message: self.to_string(),
            },
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = retry {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if unauthorized {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_errors_map_by_kind() {
        let too_long = EmbeddingError::TextTooLong {
            index: 2,
            tokens: 300,
            max_tokens: 256,
        };
        let mapped = ApiError::from(too_long);
        assert_eq!(mapped.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(mapped.to_string().contains(
            "index 2 is longer than this model's limit of 256 tokens (at least 300 counted)"
        ));
        let too_many = ApiError::from(EmbeddingError::TooManyTokens {
            tokens: 70_000,
            limit: 65_536,
        });
        assert_eq!(too_many.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(too_many.type_name(), "payload_too_large");
        let failed = ApiError::from(EmbeddingError::Inference("boom".into()));
        assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let full = ApiError::from(EngineError::QueueFull {
            model: "m".into(),
            capacity: 4,
        });
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        let response = full.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let shed = ApiError::from(EngineError::Shed {
            model: "m".into(),
            shed: crate::engine::admission::Shed {
                ahead: std::time::Duration::from_secs(40),
                own: std::time::Duration::from_secs(3),
                budget: std::time::Duration::from_secs(30),
            },
        });
        assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(shed.type_name(), "overloaded");
        assert!(shed.to_string().contains("40.0 s"), "{shed}");
        assert_eq!(shed.into_response().headers()[header::RETRY_AFTER], "13");
        let never = ApiError::from(EngineError::NeverFits {
            model: "m".into(),
            own: std::time::Duration::from_secs(40),
            limit: std::time::Duration::from_secs(27),
        });
        assert_eq!(never.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(never.to_string().contains("40.0 s"), "{never}");
        assert_eq!(
            ApiError::from(EngineError::Timeout).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
    }
}
