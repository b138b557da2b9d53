//! The service's one error type and its one table: each error's status code and body in each
//! dialect (the service's own, OpenAI's, text-embeddings-inference's), chosen by its variant,
//! never by its message.
//!
//! | variant | status | `type` | OpenAI `code` | TEI status, `error_type` |
//! | --- | --- | --- | --- | --- |
//! | `InvalidJson` | 400 | `invalid_json` | `invalid_value` | 422 `Validation` |
//! | `InvalidRequest` | 422 | `invalid_request` | `invalid_value` | 422 `Validation` |
//! | `EmptyInputs` | 422 | `invalid_request` | `invalid_value` | 400 `Empty` |
//! | `UnsupportedMediaType` | 415 | `unsupported_media_type` | – | 415 `Validation` |
//! | `PayloadTooLarge` | 413 | `payload_too_large` | `context_length_exceeded` | 413 `Validation` |
//! | `ModelNotFound` | 404 | `model_not_found` | `model_not_found` | 404 `Validation` |
//! | `RouteNotFound` | 404 | `not_found` | – | 404 `Validation` |
//! | `MethodNotAllowed` | 405 | `method_not_allowed` | – | 405 `Validation` |
//! | `DuplicateCredentials` | 400 | `duplicate_credentials` | `invalid_api_key` | 400 `Validation` |
//! | `Unauthorized` | 401 | `unauthorized` | `invalid_api_key` | 401 `Validation` |
//! | `RequestTimeout` | 408 | `request_timeout` | – | 408 `Validation` |
//! | `NotReady` | 503 | `not_ready` | `server_busy` | 503 `Unhealthy` |
//! | `Overloaded`, `Shed` | 503 | `overloaded` | `server_busy` | 429 `Overloaded` |
//! | `Timeout` | 504 | `timeout` | – | 504 `Backend` |
//! | `Internal` | 500 | `internal_error` | – | 424 `Backend` |
//!
//! Bodies: the service's own `{"error": {"type", "message"}}`; OpenAI's
//! `{"error": {"message", "type", "param", "code"}}`, `param` being the request field the
//! variant is about ([`Field`]); TEI's `{"error", "error_type"}`. `Retry-After` comes with
//! 503/429 and `WWW-Authenticate: Bearer` with 401, in every dialect.
//!
//! A value the client sent appears in a message only cut to its first 64 characters and its
//! length ([`crate::engine::shown`]), and no message is longer than [`MAX_MESSAGE_CHARS`].

use akidb_embedding_core::{EmbeddingError, ErrorKind};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::{EngineError, shown};

/// Seconds a client is told to wait (`Retry-After`) when the service is busy or loading.
const RETRY_AFTER_SECONDS: u64 = 1;

/// Longest message an error body carries, in characters: a bound on what a client can make
/// the service send back, whatever a message was built from.
pub const MAX_MESSAGE_CHARS: usize = 2048;

/// The request field an error is about, named as OpenAI's `param` names it (`input` for the
/// texts, whichever dialect called them `inputs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `model`.
    Model,
    /// `input` (OpenAI) or `inputs` (the service's own and TEI's): the texts.
    Input,
    /// `dimensions`.
    Dimensions,
    /// `encoding_format`.
    EncodingFormat,
    /// `prompt_name`.
    PromptName,
    /// `timeout`.
    Timeout,
    /// `normalize`.
    Normalize,
    /// `truncate`.
    Truncate,
    /// `truncation_direction`.
    TruncationDirection,
    /// `add_special_tokens`.
    AddSpecialTokens,
    /// `return_offsets`.
    ReturnOffsets,
    /// `user` (OpenAI's, accepted and ignored).
    User,
}

impl Field {
    /// Every field, for lookups by name.
    const ALL: [Self; 12] = [
        Self::Model,
        Self::Input,
        Self::Dimensions,
        Self::EncodingFormat,
        Self::PromptName,
        Self::Timeout,
        Self::Normalize,
        Self::Truncate,
        Self::TruncationDirection,
        Self::AddSpecialTokens,
        Self::ReturnOffsets,
        Self::User,
    ];

    /// The field's name as OpenAI's `param` gives it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Input => "input",
            Self::Dimensions => "dimensions",
            Self::EncodingFormat => "encoding_format",
            Self::PromptName => "prompt_name",
            Self::Timeout => "timeout",
            Self::Normalize => "normalize",
            Self::Truncate => "truncate",
            Self::TruncationDirection => "truncation_direction",
            Self::AddSpecialTokens => "add_special_tokens",
            Self::ReturnOffsets => "return_offsets",
            Self::User => "user",
        }
    }

    /// The field a top-level JSON key of a request body names, in any dialect; `None` for a
    /// key no body has.
    pub fn from_key(key: &str) -> Option<Self> {
        if key == "inputs" {
            return Some(Self::Input);
        }
        Self::ALL.into_iter().find(|field| field.name() == key)
    }
}

/// The answer shapes: one per dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The service's own: `{"error": {"type", "message"}}`.
    Seed,
    /// OpenAI's: `{"error": {"message", "type", "param", "code"}}`.
    OpenAi,
    /// text-embeddings-inference's: `{"error", "error_type"}`, with TEI's status codes.
    Tei,
}

/// Everything a request can fail with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON.
    #[error("{0}")]
    InvalidJson(String),
    /// The body is JSON but not a valid request: wrong types, missing or unknown fields, an
    /// unknown prompt, an unsupported dimension, an over-long text that may not be truncated.
    #[error("{message}")]
    InvalidRequest {
        /// The field at fault, when it is one.
        field: Option<Field>,
        /// What is wrong.
        message: String,
    },
    /// The request holds no texts.
    #[error("the request holds no texts: send at least one")]
    EmptyInputs,
    /// The body is not declared as JSON, or is compressed.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body, the number of texts or the tokens are more than the service accepts.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request names a model this service does not serve.
    #[error("{0}")]
    ModelNotFound(String),
    /// No route answers this path.
    #[error("{0}")]
    RouteNotFound(String),
    /// The route does not answer this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request carries its credentials more than once: which one counts is ambiguous.
    #[error("{0}")]
    DuplicateCredentials(String),
    /// The API key is missing or wrong.
    #[error("{0}")]
    Unauthorized(String),
    /// The client did not send its body within the client timeout.
    #[error("{0}")]
    RequestTimeout(String),
    /// The models are still loading, or the service is shutting down.
    #[error("{0}")]
    NotReady(String),
    /// The model's queue is full.
    #[error("{0}")]
    Overloaded(String),
    /// The work ahead of the request would not let it finish before its deadline: refused at
    /// once (with `Retry-After` from the estimate) instead of a timeout at the deadline.
    #[error("{message}")]
    Shed {
        /// What was estimated.
        message: String,
        /// Seconds after which the request could fit, by the estimate.
        retry_after_secs: u64,
    },
    /// The request did not finish within its deadline.
    #[error("{0}")]
    Timeout(String),
    /// The provider failed; the details are logged.
    #[error("{0}")]
    Internal(String),
}

/// One row of the error table: what each dialect answers for a variant.
struct Row {
    status: StatusCode,
    kind: &'static str,
    openai_code: Option<&'static str>,
    tei_status: StatusCode,
    tei_type: &'static str,
}

const fn row(
    status: StatusCode,
    kind: &'static str,
    openai_code: Option<&'static str>,
    tei_status: StatusCode,
    tei_type: &'static str,
) -> Row {
    Row {
        status,
        kind,
        openai_code,
        tei_status,
        tei_type,
    }
}

impl ApiError {
    /// A 422 about `field`.
    pub fn invalid(field: Field, message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            field: Some(field),
            message: message.into(),
        }
    }

    /// A 422 about the request as a whole (or a header), not one field.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            field: None,
            message: message.into(),
        }
    }

    /// The error table (see the module's documentation), kept one row per line.
    #[rustfmt::skip]
    fn row(&self) -> Row {
        use StatusCode as S;
        const INVALID: Option<&str> = Some("invalid_value");
        const BUSY: Option<&str> = Some("server_busy");
        const KEY: Option<&str> = Some("invalid_api_key");
        const V: &str = "Validation";
        match self {
            Self::InvalidJson(_) => row(S::BAD_REQUEST, "invalid_json", INVALID, S::UNPROCESSABLE_ENTITY, V),
            Self::InvalidRequest { .. } => row(S::UNPROCESSABLE_ENTITY, "invalid_request", INVALID, S::UNPROCESSABLE_ENTITY, V),
            Self::EmptyInputs => row(S::UNPROCESSABLE_ENTITY, "invalid_request", INVALID, S::BAD_REQUEST, "Empty"),
            Self::UnsupportedMediaType(_) => row(S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", None, S::UNSUPPORTED_MEDIA_TYPE, V),
            Self::PayloadTooLarge(_) => row(S::PAYLOAD_TOO_LARGE, "payload_too_large", Some("context_length_exceeded"), S::PAYLOAD_TOO_LARGE, V),
            Self::ModelNotFound(_) => row(S::NOT_FOUND, "model_not_found", Some("model_not_found"), S::NOT_FOUND, V),
            Self::RouteNotFound(_) => row(S::NOT_FOUND, "not_found", None, S::NOT_FOUND, V),
            Self::MethodNotAllowed(_) => row(S::METHOD_NOT_ALLOWED, "method_not_allowed", None, S::METHOD_NOT_ALLOWED, V),
            Self::DuplicateCredentials(_) => row(S::BAD_REQUEST, "duplicate_credentials", KEY, S::BAD_REQUEST, V),
            Self::Unauthorized(_) => row(S::UNAUTHORIZED, "unauthorized", KEY, S::UNAUTHORIZED, V),
            Self::RequestTimeout(_) => row(S::REQUEST_TIMEOUT, "request_timeout", None, S::REQUEST_TIMEOUT, V),
            Self::NotReady(_) => row(S::SERVICE_UNAVAILABLE, "not_ready", BUSY, S::SERVICE_UNAVAILABLE, "Unhealthy"),
            // TEI answers 429 `Overloaded` when it cannot take more work; a request shed
            // before its deadline is that case too.
            Self::Overloaded(_) | Self::Shed { .. } => row(S::SERVICE_UNAVAILABLE, "overloaded", BUSY, S::TOO_MANY_REQUESTS, "Overloaded"),
            Self::Timeout(_) => row(S::GATEWAY_TIMEOUT, "timeout", None, S::GATEWAY_TIMEOUT, "Backend"),
            Self::Internal(_) => row(S::INTERNAL_SERVER_ERROR, "internal_error", None, S::FAILED_DEPENDENCY, "Backend"),
        }
    }

    /// The HTTP status code of this error in the service's own and OpenAI's dialects.
    pub fn status(&self) -> StatusCode {
        self.row().status
    }

    /// The HTTP status code of this error in `dialect`.
    pub fn status_in(&self, dialect: Dialect) -> StatusCode {
        let row = self.row();
        match dialect {
            Dialect::Seed | Dialect::OpenAi => row.status,
            Dialect::Tei => row.tei_status,
        }
    }

    /// The `type` field of the error body: a stable, machine-readable name.
    pub fn type_name(&self) -> &'static str {
        self.row().kind
    }

    /// TEI's `error_type` for this error.
    pub fn tei_type(&self) -> &'static str {
        self.row().tei_type
    }

    /// The request field this error is about (OpenAI's `param`).
    pub fn field(&self) -> Option<Field> {
        match self {
            Self::InvalidRequest { field, .. } => *field,
            Self::EmptyInputs | Self::PayloadTooLarge(_) => Some(Field::Input),
            Self::ModelNotFound(_) => Some(Field::Model),
            _ => None,
        }
    }

    /// OpenAI's machine-readable `code` for this error.
    pub fn openai_code(&self) -> Option<&'static str> {
        self.row().openai_code
    }

    /// The message as an error body carries it: at most [`MAX_MESSAGE_CHARS`] characters.
    pub fn message(&self) -> String {
        cut_to(&self.to_string(), MAX_MESSAGE_CHARS)
    }

    /// This error answered in `dialect`.
    pub fn into_response_in(self, dialect: Dialect) -> Response {
        let message = self.message();
        match dialect {
            Dialect::Seed => self.respond(
                self.status(),
                &SeedBody {
                    error: SeedDetail {
                        kind: self.type_name(),
                        message,
                    },
                },
            ),
            Dialect::OpenAi => self.respond(
                self.status(),
                &OpenAiBody {
                    error: OpenAiDetail {
                        message,
                        kind: self.type_name(),
                        param: self.field().map(Field::name),
                        code: self.openai_code(),
                    },
                },
            ),
            Dialect::Tei => self.respond(
                self.status_in(Dialect::Tei),
                &TeiBody {
                    error: message,
                    error_type: self.tei_type(),
                },
            ),
        }
    }

    /// The one place an error becomes a response: `status`, `body` as JSON, and the headers
    /// this error calls for (`Retry-After`, `WWW-Authenticate`). `/health` gives its own body.
    pub fn respond(&self, status: StatusCode, body: &impl Serialize) -> Response {
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        let retry = match self {
            Self::NotReady(_) | Self::Overloaded(_) => Some(RETRY_AFTER_SECONDS),
            Self::Shed {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        };
        if let Some(seconds) = retry {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if matches!(self, Self::Unauthorized(_)) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// `text` cut to its first `max_chars` characters, with its length in bytes, when longer.
pub fn cut_to(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
        None => text.to_string(),
    }
}

impl From<EmbeddingError> for ApiError {
    fn from(error: EmbeddingError) -> Self {
        match error {
            // A size limit, like the limits on texts checked before it.
            EmbeddingError::TooManyTokens { .. } => Self::PayloadTooLarge(error.to_string()),
            EmbeddingError::EmptyBatch => Self::EmptyInputs,
            // The name is the client's: shown cut, never whole.
            EmbeddingError::UnknownPrompt { name, available } => Self::invalid(
                Field::PromptName,
                format!(
                    "unknown prompt `{}`; this model defines: {}",
                    shown(&name),
                    available.join(", ")
                ),
            ),
            EmbeddingError::UnsupportedDimension { .. } => {
                Self::invalid(Field::Dimensions, error.to_string())
            }
            EmbeddingError::TextTooLong { .. } | EmbeddingError::InvalidInput(_) => {
                Self::invalid(Field::Input, error.to_string())
            }
            error => match error.kind() {
                ErrorKind::InvalidInput => Self::invalid_request(error.to_string()),
                ErrorKind::Load | ErrorKind::Runtime => {
                    tracing::error!(%error, "provider failure");
                    Self::Internal(format!("the model failed: {error}"))
                }
            },
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::ModelRequired { .. } => Self::invalid(Field::Model, error.to_string()),
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.into_response_in(Dialect::Seed)
    }
}

#[derive(Serialize)]
struct SeedBody {
    error: SeedDetail,
}

#[derive(Serialize)]
struct SeedDetail {
    #[serde(rename = "type")]
    kind: &'static str,
    message: String,
}

#[derive(Serialize)]
struct OpenAiBody {
    error: OpenAiDetail,
}

#[derive(Serialize)]
struct OpenAiDetail {
    message: String,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

#[derive(Serialize)]
struct TeiBody {
    error: String,
    error_type: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_errors_map_by_variant() {
        let too_long = EmbeddingError::TextTooLong {
            index: 2,
            tokens: 300,
            max_tokens: 256,
        };
        let mapped = ApiError::from(too_long);
        assert_eq!(mapped.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(mapped.field(), Some(Field::Input));
        assert!(mapped.to_string().contains(
            "index 2 is longer than this model's limit of 256 tokens (at least 300 counted)"
        ));
        let too_many = ApiError::from(EmbeddingError::TooManyTokens {
            tokens: 70_000,
            limit: 65_536,
        });
        assert_eq!(too_many.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(too_many.type_name(), "payload_too_large");
        let dimension = ApiError::from(EmbeddingError::UnsupportedDimension {
            requested: 100,
            supported: vec![384],
        });
        assert_eq!(dimension.field(), Some(Field::Dimensions));
        let prompt = ApiError::from(EmbeddingError::UnknownPrompt {
            name: "p".repeat(10_000),
            available: vec!["query".into()],
        });
        assert_eq!(prompt.field(), Some(Field::PromptName));
        assert!(prompt.to_string().len() < 200, "{prompt}");
        assert!(prompt.to_string().contains("(10000 bytes)"), "{prompt}");
        let failed = ApiError::from(EmbeddingError::Inference("boom".into()));
        assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            failed.status_in(Dialect::Tei),
            StatusCode::FAILED_DEPENDENCY
        );
        let full = ApiError::from(EngineError::QueueFull {
            model: "m".into(),
            capacity: 4,
        });
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(full.status_in(Dialect::Tei), StatusCode::TOO_MANY_REQUESTS);
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
        assert_eq!(
            shed.clone().into_response_in(Dialect::Tei).headers()[header::RETRY_AFTER],
            "13"
        );
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
        let empty = ApiError::from(EmbeddingError::EmptyBatch);
        assert_eq!(empty.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            (empty.status_in(Dialect::Tei), empty.tei_type()),
            (StatusCode::BAD_REQUEST, "Empty")
        );
    }

    #[test]
    fn json_keys_name_fields_in_every_dialect() {
        assert_eq!(Field::from_key("inputs"), Some(Field::Input));
        assert_eq!(Field::from_key("input"), Some(Field::Input));
        assert_eq!(
            Field::from_key("encoding_format"),
            Some(Field::EncodingFormat)
        );
        assert_eq!(Field::from_key("bogus"), None);
        for field in Field::ALL {
            assert_eq!(Field::from_key(field.name()), Some(field));
        }
    }

    #[test]
    fn messages_are_bounded() {
        let long = ApiError::invalid_request("x".repeat(MAX_MESSAGE_CHARS * 3));
        let message = long.message();
        assert!(message.len() < MAX_MESSAGE_CHARS + 40, "{}", message.len());
        assert!(message.ends_with(&format!("({} bytes)", MAX_MESSAGE_CHARS * 3)));
        assert_eq!(cut_to("äbc", 2), "äb… (4 bytes)");
        assert_eq!(cut_to("abc", 3), "abc");
    }
}
