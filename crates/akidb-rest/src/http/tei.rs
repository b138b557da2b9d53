//! The text-embeddings-inference (TEI) dialect, for clients written for TEI
//! (`huggingface_hub.InferenceClient.feature_extraction`, LangChain's
//! `HuggingFaceEndpointEmbeddings`, LlamaIndex's `TextEmbeddingsInference`, Haystack's TEI
//! embedders):
//!
//! - `POST /embed` and `POST /` (TEI's root route): `inputs` a string or an array of strings;
//!   `normalize`, `truncate`, `truncation_direction` (`Right`/`Left`), `prompt_name`,
//!   `dimensions`, and the extension `model`; answers a bare array of vectors;
//! - `POST /tokenize`: the tokens of each text (`[[{"id", "text", "special", "start",
//!   "stop"}]]`, TEI's shape), with `start`/`stop` byte offsets into the input (see
//!   [`SimpleToken`]);
//! - `GET /info`: model id, revision, dtype/variant, limits, version.
//!
//! Errors are TEI's: `{"error": "...", "error_type": "Validation"}` with TEI's status codes
//! (422 validation, 400 empty input, 429 overloaded, 503 not ready, 424 model failure).

use akidb_embedding_core::{EmbedRequest, EmbeddingError, TokenKind, TokenSpan, Truncation};
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::dispatch::{deadline, run_embedding, within};
use super::error::{ApiError, Dialect};
use super::request::{ApiJson, EncodingFormat, Parsed};
use super::state::AppState;

/// An [`ApiError`] answered in TEI's shape and with TEI's status codes.
#[derive(Debug)]
pub struct TeiError(pub ApiError);

impl From<ApiError> for TeiError {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl From<EmbeddingError> for TeiError {
    fn from(error: EmbeddingError) -> Self {
        Self(error.into())
    }
}

impl IntoResponse for TeiError {
    fn into_response(self) -> Response {
        self.0.into_response_in(Dialect::Tei)
    }
}

/// TEI's `inputs`: one text or an array of texts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum TeiInputs {
    /// One text.
    One(String),
    /// Several texts.
    Many(Vec<String>),
}

impl TeiInputs {
    fn into_texts(self) -> Vec<String> {
        match self {
            Self::One(text) => vec![text],
            Self::Many(texts) => texts,
        }
    }
}

/// Which end of an over-long text is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum TruncationDirection {
    /// Keep the start (the default).
    #[default]
    #[serde(alias = "right", alias = "RIGHT")]
    Right,
    /// Keep the end.
    #[serde(alias = "left", alias = "LEFT")]
    Left,
}

/// Body of `POST /embed` and `POST /`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TeiEmbedBody {
    /// The texts.
    pub inputs: TeiInputs,
    /// L2-normalise (default `true`).
    #[serde(default = "yes")]
    pub normalize: bool,
    /// Cut over-long texts (default `true`, as TEI with `--auto-truncate`); `false` refuses them.
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Which end to cut.
    #[serde(default)]
    pub truncation_direction: TruncationDirection,
    /// A prompt the model defines.
    #[serde(default)]
    pub prompt_name: Option<String>,
    /// Matryoshka output dimension.
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// Extension: the model, when the service serves several.
    #[serde(default)]
    pub model: Option<String>,
}

fn yes() -> bool {
    true
}

/// `POST /embed` and `POST /`: a bare array of vectors.
pub async fn embed(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<ApiJson<TeiEmbedBody>, ApiError>,
) -> Result<Json<Vec<Vec<f32>>>, TeiError> {
    let ApiJson(body) = body?;
    let texts = body.inputs.into_texts();
    if texts.is_empty() {
        return Err(ApiError::EmptyInputs.into());
    }
    state.limits().check(&texts)?;
    let truncation = match (body.truncate.unwrap_or(true), body.truncation_direction) {
        (false, _) => Truncation::Error,
        (true, TruncationDirection::Right) => Truncation::Truncate,
        (true, TruncationDirection::Left) => Truncation::TruncateStart,
    };
    let parsed = Parsed {
        model: body.model,
        request: EmbedRequest {
            texts,
            normalize: body.normalize,
            prompt_name: body.prompt_name,
            dimensions: body.dimensions,
            truncation,
        },
        encoding: EncodingFormat::Float,
        timeout: None,
    };
    let (_, response) = run_embedding(&state, &headers, parsed).await?;
    Ok(Json(response.embeddings))
}

/// Body of `POST /tokenize`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TokenizeBody {
    /// The texts.
    pub inputs: TeiInputs,
    /// Include the special tokens (`[CLS]`, `<bos>`, …) in the answer (default `true`, as
    /// TEI). `false` leaves them out of the answer; the other tokens are unchanged (the model
    /// still reads the special tokens, and truncation still counts them).
    #[serde(default = "yes")]
    pub add_special_tokens: bool,
    /// A prompt the model defines, prepended before tokenising (default: the model's default
    /// prompt, as on the embedding routes).
    #[serde(default)]
    pub prompt_name: Option<String>,
    /// Require each token's text span: refused (422) when the model cannot give them. Spans
    /// are given whenever the model can, asked or not, as TEI always gives them.
    #[serde(default)]
    pub return_offsets: bool,
    /// Extension: the model, when the service serves several.
    #[serde(default)]
    pub model: Option<String>,
}

/// One token as TEI's `/tokenize` returns it.
///
/// A text token has its `text` (the bytes of the input it stands for) and `start`/`stop`,
/// **byte** offsets into the input as sent (TEI's, from the tokenizer's byte offsets), always
/// on UTF-8 character boundaries. A special token has its vocabulary entry as `text`
/// (`[CLS]`), `special: true` and no offsets (TEI's answer). A token of a task prompt
/// (`prompt_name`) has its vocabulary entry as `text`, `special: false` and no offsets: the
/// offsets refer to the caller's input, never to the prompt prepended to it (TEI's refer to
/// the prompted string). Without spans from the model, `text`, `special`, `start` and
/// `stop` are null.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimpleToken {
    /// The token id, as the model reads it.
    pub id: u32,
    /// The input's text the token stands for, or the vocabulary entry of a special or prompt
    /// token.
    pub text: Option<String>,
    /// Whether it is a special token.
    pub special: Option<bool>,
    /// First byte of its span in the input.
    pub start: Option<usize>,
    /// End (exclusive) of its span in the input, in bytes.
    pub stop: Option<usize>,
}

impl SimpleToken {
    /// The answer for `token`, a token of `input`.
    fn from_span(token: TokenSpan, input: &str) -> Self {
        let text = token.slice(input).map(str::to_string);
        match (token.kind, token.span, text) {
            (TokenKind::Text, Some(span), Some(text)) => Self {
                id: token.id,
                text: Some(text),
                special: Some(false),
                start: Some(span.start),
                stop: Some(span.end),
            },
            (kind, _, _) => Self {
                id: token.id,
                text: Some(token.token),
                special: Some(kind == TokenKind::Special),
                start: None,
                stop: None,
            },
        }
    }

    /// A token known only by its id.
    fn id_only(id: u32) -> Self {
        Self {
            id,
            text: None,
            special: None,
            start: None,
            stop: None,
        }
    }
}

/// `POST /tokenize`: each text's tokens as the model reads them (prompt, special tokens,
/// truncation applied: the ids embedding uses), with their spans in the input.
pub async fn tokenize(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<ApiJson<TokenizeBody>, ApiError>,
) -> Result<Json<Vec<Vec<SimpleToken>>>, TeiError> {
    let ApiJson(body) = body?;
    let texts = body.inputs.into_texts();
    if texts.is_empty() {
        return Err(ApiError::EmptyInputs.into());
    }
    state.limits().check(&texts)?;
    let engine = state.engine()?;
    let due = deadline(&state, &headers, None)?;
    let mut request = EmbedRequest::new(texts);
    request.prompt_name = body.prompt_name;
    let model = body.model.as_deref();
    let spans = within(due, async {
        match engine.token_spans(model, request.clone(), due.0).await {
            // A provider without spans still shows its ids, unless spans were required or
            // special tokens must be told apart.
            Err(crate::engine::EngineError::Embedding(EmbeddingError::Unsupported { .. }))
                if !body.return_offsets && body.add_special_tokens =>
            {
                let ids = engine.token_ids(model, request.clone(), due.0).await?;
                Ok(ids
                    .into_iter()
                    .map(|ids| ids.into_iter().map(SimpleToken::id_only).collect())
                    .collect())
            }
            Err(error) => Err(error),
            Ok(spans) => Ok(spans
                .into_iter()
                .zip(&request.texts)
                .map(|(tokens, text)| {
                    tokens
                        .into_iter()
                        .filter(|token| body.add_special_tokens || !token.is_special())
                        .map(|token| SimpleToken::from_span(token, text))
                        .collect()
                })
                .collect()),
        }
    })
    .await?;
    Ok(Json(spans))
}

/// Answer of `GET /info`, in TEI's shape with AkiDB's additions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Info {
    /// The model's id.
    pub model_id: String,
    /// The pinned hub revision (`main` unless set).
    pub model_sha: Option<String>,
    /// The ONNX export (`fp32`, `q8`, …).
    pub model_dtype: String,
    /// The first name the model answers to besides its id, else its id.
    pub served_model_name: String,
    /// Every name the model answers to.
    pub served_model_names: Vec<String>,
    /// TEI's model type: an embedding model.
    pub model_type: serde_json::Value,
    /// Most requests waiting per model.
    pub max_concurrent_requests: usize,
    /// Most tokens per text.
    pub max_input_length: usize,
    /// Most padded tokens per model run.
    pub max_batch_tokens: usize,
    /// Most texts per model run.
    pub max_batch_requests: Option<usize>,
    /// Most texts per request.
    pub max_client_batch_size: usize,
    /// Over-long texts are cut unless a request says `truncate: false`.
    pub auto_truncate: bool,
    /// Texts tokenised at once, at most (`AKIDB_TOKENIZATION_WORKERS`).
    pub tokenization_workers: usize,
    /// Vector length.
    pub dimension: usize,
    /// Every dimension a request may ask for.
    pub dimensions: Vec<usize>,
    /// Prompt names a request may use.
    pub prompts: Vec<String>,
    /// This service's version.
    pub version: &'static str,
    /// Not built from a tagged commit.
    pub sha: Option<&'static str>,
    /// Not a Docker build label.
    pub docker_label: Option<&'static str>,
}

/// `GET /info`: the first (or only) model's description; `?model=` is not needed by TEI
/// clients, which talk to one model.
pub async fn info(State(state): State<AppState>) -> Result<Json<Info>, TeiError> {
    let engine = state.engine()?;
    let batcher = engine
        .batchers()
        .next()
        .ok_or_else(|| ApiError::NotReady("no model is served".into()))?;
    let model = batcher.model_info();
    let config = state.config();
    let names = engine.names().of(0).to_vec();
    Ok(Json(Info {
        model_id: model.id.clone(),
        model_sha: Some(config.revision.clone()),
        model_dtype: variant_name(&config.variant),
        served_model_name: names.get(1).cloned().unwrap_or_else(|| model.id.clone()),
        served_model_names: names,
        model_type: serde_json::json!({"embedding": {"pooling": "model"}}),
        max_concurrent_requests: config.queue_capacity,
        max_input_length: model.max_tokens,
        max_batch_tokens: config.max_batch_tokens,
        max_batch_requests: Some(config.max_batch_size),
        max_client_batch_size: config.max_inputs,
        auto_truncate: true,
        tokenization_workers: batcher.tokenization_workers(),
        dimension: model.dimension,
        dimensions: model.dimensions.clone(),
        prompts: model.prompts.clone(),
        version: env!("CARGO_PKG_VERSION"),
        sha: None,
        docker_label: None,
    }))
}

fn variant_name(variant: &akidb_embedding_onnx::OnnxVariant) -> String {
    use akidb_embedding_onnx::OnnxVariant;
    match variant {
        OnnxVariant::Fp32 => "fp32".into(),
        OnnxVariant::Fp16 => "fp16".into(),
        OnnxVariant::Q4 => "q4".into(),
        OnnxVariant::Quantized => "quantized".into(),
        OnnxVariant::Q8 => "q8".into(),
        OnnxVariant::File(name) => name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn tei_bodies_parse_as_tei_clients_send_them() {
        let body: TeiEmbedBody = serde_json::from_str(
            r#"{"inputs":"hi","normalize":true,"prompt_name":"query","truncate":true,"truncation_direction":"left"}"#,
        )
        .unwrap();
        assert_eq!(body.inputs, TeiInputs::One("hi".into()));
        assert_eq!(body.truncation_direction, TruncationDirection::Left);
        let body: TeiEmbedBody =
            serde_json::from_str(r#"{"inputs":["a","b"],"truncation_direction":"Right"}"#).unwrap();
        assert_eq!(body.inputs.into_texts(), ["a", "b"]);
        assert!(serde_json::from_str::<TeiEmbedBody>(r#"{"inputs":[[1,2]]}"#).is_err());
    }

    #[test]
    fn errors_take_tei_status_codes() {
        let status = |error: ApiError| (error.status_in(Dialect::Tei), error.tei_type());
        assert_eq!(
            status(ApiError::Overloaded("full".into())),
            (StatusCode::TOO_MANY_REQUESTS, "Overloaded")
        );
        assert_eq!(
            status(ApiError::EmptyInputs),
            (StatusCode::BAD_REQUEST, "Empty")
        );
        // Only the variant decides: a message that reads like the empty case is not it.
        assert_eq!(
            status(ApiError::invalid_request("`inputs` is empty: send")),
            (StatusCode::UNPROCESSABLE_ENTITY, "Validation")
        );
        assert_eq!(
            status(ApiError::Internal("boom".into())),
            (StatusCode::FAILED_DEPENDENCY, "Backend")
        );
        assert_eq!(
            status(ApiError::NotReady("loading".into())),
            (StatusCode::SERVICE_UNAVAILABLE, "Unhealthy")
        );
        assert_eq!(
            status(ApiError::Shed {
                message: "busy".into(),
                retry_after_secs: 3
            }),
            (StatusCode::TOO_MANY_REQUESTS, "Overloaded")
        );
    }
}
