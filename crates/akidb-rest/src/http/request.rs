//! Request bodies at the edge: the two JSON shapes, read with a deadline, parsed and checked
//! against the service's limits before anything is queued.
//!
//! The handlers and the fuzz targets (`fuzz/`) go through the same functions:
//! [`parse_embed`] and [`parse_openai`] take the raw body bytes and give a [`Parsed`] request
//! or the [`ApiError`] the client gets. What depends on the model (prompt names, dimensions,
//! token limits) is checked later, by the batcher.
//!
//! ```
//! use akidb_rest::request::parse_openai;
//! use akidb_rest::Limits;
//! use akidb_rest::Config;
//!
//! let limits = Limits::from_config(&Config::default());
//! let parsed = parse_openai(br#"{"input": "hello", "model": "m"}"#, &limits).unwrap();
//! assert_eq!(parsed.request.texts, ["hello"]);
//! assert_eq!(parsed.model.as_deref(), Some("m"));
//! let refused = parse_openai(br#"{"input": 42}"#, &limits).unwrap_err();
//! assert_eq!(refused.status(), 422);
//! ```

use std::fmt;
use std::time::Duration;

use akidb_embedding_core::{EmbedRequest, Truncation};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::{self, DeserializeOwned, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_path_to_error::Segment;

use super::error::{ApiError, Field};
use super::state::{AppState, Limits};
use crate::engine::shown;

/// Body of `POST /api/v1/embed`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
    /// The caller's own deadline in seconds (a number), capped by the service's
    /// `AKIDB_REQUEST_TIMEOUT_MS`; also accepted as a `timeout` header.
    #[serde(default)]
    pub timeout: Option<f64>,
}

/// Body of `POST /v1/embeddings` (OpenAI's embeddings API).
///
/// Fields OpenAI clients may add (such as `user`) are accepted and ignored.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
    /// Extension: the caller's own deadline in seconds, capped by the service's; also
    /// accepted as a `timeout` header.
    #[serde(default)]
    pub timeout: Option<f64>,
}

/// The `input` of an OpenAI request: a string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
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
                // No capacity from the size hint: a client must not size our allocations.
                let mut texts = Vec::new();
                while let Some(item) = seq.next_element::<serde_json::Value>()? {
                    match item {
                        serde_json::Value::String(text) => texts.push(text),
                        other => {
                            return Err(de::Error::custom(format!(
                                "input[{}] is {}, not a string: token arrays are not supported. \
                                 Token ids only mean something to the tokenizer that made them \
                                 (OpenAI's), not to this model's: send the texts. LangChain's \
                                 OpenAIEmbeddings sends token ids unless you pass \
                                 check_embedding_ctx_length=False",
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// JSON arrays of numbers.
    Float,
    /// Base64 of the vector's little-endian `f32` bytes, as OpenAI sends it.
    Base64,
}

fn yes() -> bool {
    true
}

/// A request both routes hand on: the model asked for, the texts and options, and how the
/// vectors are to be encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The model's id as the client sent it (looked up among the served models only).
    pub model: Option<String>,
    /// What the batcher embeds.
    pub request: EmbedRequest,
    /// How the answer encodes vectors (always `Float` on `/api/v1/embed`).
    pub encoding: EncodingFormat,
    /// The caller's own deadline, if it sent one (the service caps it by its own).
    pub timeout: Option<Duration>,
}

impl EmbedBody {
    /// The request this body asks for, refused (413) when it is over `limits`.
    pub fn into_parsed(self, limits: &Limits) -> Result<Parsed, ApiError> {
        limits.check(&self.inputs)?;
        let timeout = self.timeout.map(timeout_seconds).transpose()?;
        Ok(Parsed {
            model: self.model,
            request: EmbedRequest {
                texts: self.inputs,
                normalize: self.normalize,
                prompt_name: self.prompt_name,
                dimensions: self.dimensions,
                truncation: if self.truncate {
                    Truncation::Truncate
                } else {
                    Truncation::Error
                },
            },
            encoding: EncodingFormat::Float,
            timeout,
        })
    }
}

impl OpenAiBody {
    /// The request this body asks for, refused (413) when it is over `limits`.
    pub fn into_parsed(self, limits: &Limits) -> Result<Parsed, ApiError> {
        limits.check(&self.input.0)?;
        let timeout = self.timeout.map(timeout_seconds).transpose()?;
        let mut request = EmbedRequest::new(self.input.0);
        request.dimensions = self.dimensions;
        request.prompt_name = self.prompt_name;
        Ok(Parsed {
            model: self.model,
            request,
            encoding: self.encoding_format.unwrap_or(EncodingFormat::Float),
            timeout,
        })
    }
}

/// A caller's deadline of `seconds`: a positive, finite number (422 otherwise).
pub fn timeout_seconds(seconds: f64) -> Result<Duration, ApiError> {
    if seconds.is_finite() && seconds > 0.0 {
        // Anything past a day is as good as none: the service's own deadline caps it.
        Ok(Duration::from_secs_f64(seconds.min(86_400.0)))
    } else {
        Err(ApiError::invalid(
            Field::Timeout,
            format!("`timeout` must be a positive number of seconds, not {seconds}"),
        ))
    }
}

/// The caller's deadline from a `timeout` header (seconds, as in the body's `timeout`
/// field), if it sent one; 422 when it is not a positive number.
pub fn timeout_header(headers: &HeaderMap) -> Result<Option<Duration>, ApiError> {
    let Some(value) = headers.get(TIMEOUT_HEADER) else {
        return Ok(None);
    };
    let seconds = value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse::<f64>().ok())
        .ok_or_else(|| {
            // A header, not a body field: OpenAI's `param` names body fields only.
            ApiError::invalid_request("the `timeout` header must be a positive number of seconds")
        })?;
    timeout_seconds(seconds).map(Some)
}

/// The header a caller may send its own deadline in (seconds).
pub const TIMEOUT_HEADER: &str = "timeout";

/// Parses a JSON body into `T` as the handlers do: a body that is not UTF-8 (anywhere, even
/// in a field that is ignored) and syntax errors are 400 `invalid_json`; wrong types, missing
/// or unknown fields 422 `invalid_request` (the message names the path, such as `inputs[0]`;
/// the error's [`Field`] is the top-level key the path starts with).
///
/// Every value of the body that serde's messages repeat (unknown field names, unknown
/// variants such as an `encoding_format`, strings of the wrong type) is cut to 64 characters
/// and its length, and so is every key of the path.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // JSON exchanged between systems is UTF-8 (RFC 8259). serde_json checks the strings it
    // keeps, but skips ignored ones unchecked: check the whole body once.
    if let Err(error) = std::str::from_utf8(bytes) {
        return Err(ApiError::InvalidJson(format!(
            "the request body is not UTF-8 (invalid byte at offset {})",
            error.valid_up_to()
        )));
    }
    // What `axum::Json` does, with the path kept apart from serde's message, so that each can
    // be cut and the field told from the path rather than read back out of the text.
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(json_error)?;
    deserializer.end().map_err(|error| {
        ApiError::InvalidJson(format!(
            "Failed to parse the request body as JSON: {}",
            cut_quoted(&error.to_string())
        ))
    })?;
    Ok(value)
}

/// The client's error for a body serde refused, in `axum::Json`'s wording.
fn json_error(error: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = error.path();
    let at = if path.iter().next().is_none() {
        String::new()
    } else {
        format!("{}: ", shown_path(path))
    };
    let reason = cut_quoted(&error.inner().to_string());
    match error.inner().classify() {
        serde_json::error::Category::Data => ApiError::InvalidRequest {
            field: match path.iter().next() {
                Some(Segment::Map { key }) => Field::from_key(key),
                _ => None,
            },
            message: format!(
                "Failed to deserialize the JSON body into the target type: {at}{reason}"
            ),
        },
        _ => ApiError::InvalidJson(format!(
            "Failed to parse the request body as JSON: {at}{reason}"
        )),
    }
}

/// A path into the body (`inputs[3]`, `options.mode`) with every key cut.
fn shown_path(path: &serde_path_to_error::Path) -> String {
    let mut shown_path = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => shown_path.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !shown_path.is_empty() {
                    shown_path.push('.');
                }
                shown_path.push_str(&shown(key));
            }
            Segment::Unknown => {
                if !shown_path.is_empty() {
                    shown_path.push('.');
                }
                shown_path.push('?');
            }
        }
    }
    shown_path
}

/// `message` (one of serde's) with every quoted value in it cut: serde quotes what it repeats
/// of the input in backticks (`` unknown field `x` ``, `` unknown variant `x` ``) or as a Rust
/// string (`invalid type: string "x"`). A value that holds its own quotes may end a span
/// early; the error body's length bound ([`super::error::MAX_MESSAGE_CHARS`]) still holds.
pub fn cut_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(1024));
    let mut rest = message;
    while let Some(open) = rest.find(['`', '"']) {
        let quote = rest.as_bytes()[open];
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        let close = if quote == b'"' {
            closing_quote(after)
        } else {
            after.find('`')
        };
        let Some(close) = close else {
            out.push_str(&shown(after));
            return out;
        };
        out.push_str(&shown(&after[..close]));
        out.push(char::from(quote));
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// The position of the `"` that ends a Rust string literal's contents (escapes skipped).
fn closing_quote(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (position, byte) in text.bytes().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return Some(position),
            _ => {}
        }
    }
    None
}

/// Everything `POST /api/v1/embed` does with its body before the batcher: parse, then check
/// the limits.
pub fn parse_embed(bytes: &[u8], limits: &Limits) -> Result<Parsed, ApiError> {
    parse_json::<EmbedBody>(bytes)?.into_parsed(limits)
}

/// Everything `POST /v1/embeddings` does with its body before the batcher: parse, then check
/// the limits.
pub fn parse_openai(bytes: &[u8], limits: &Limits) -> Result<Parsed, ApiError> {
    parse_json::<OpenAiBody>(bytes)?.into_parsed(limits)
}

/// Whether the request declares a JSON body: `application/json` or `application/<x>+json`,
/// parameters (`; charset=utf-8`) allowed, as `axum::Json` accepts.
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let subtype = subtype.to_ascii_lowercase();
    kind.eq_ignore_ascii_case("application") && (subtype == "json" || subtype.ends_with("+json"))
}

/// Extractor of a JSON body `T`: checks the content type (415), reads the body within the
/// service's client timeout (408) and its size limit (413), then [`parse_json`]s it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        check_codings(request.headers())?;
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "send the body as JSON with `Content-Type: application/json`".to_string(),
            ));
        }
        // Refuse a declared length over the limit from the headers alone, before a byte of
        // the body is read (axum's limit only counts the bytes as they arrive).
        let limit = state.limits().max_body_bytes;
        if let Some(declared) = declared_length(request.headers())
            && declared > limit
        {
            return Err(ApiError::PayloadTooLarge(format!(
                "the request body has {declared} bytes, more than the limit of {limit}"
            )));
        }
        let timeout = state.client_timeout();
        let bytes = tokio::time::timeout(timeout, Bytes::from_request(request, state))
            .await
            .map_err(|_| {
                ApiError::RequestTimeout(format!(
                    "the request body did not arrive within {} ms",
                    timeout.as_millis()
                ))
            })?
            .map_err(body_error)?;
        Ok(Self(parse_json(&bytes)?))
    }
}

/// Refuses (415) a body in a coding the service does not decode: a `Content-Encoding` other
/// than `identity`, or a `Transfer-Encoding` that names anything but `chunked` (which the HTTP
/// layer undoes) and `identity`. Reading a compressed body as JSON would only fail later with
/// a confusing syntax error; decoding it would let a small body grow past the size limit
/// before that limit could count it. The service does not decode: send bodies uncompressed.
pub fn check_codings(headers: &HeaderMap) -> Result<(), ApiError> {
    let codings = |name: header::HeaderName| {
        headers
            .get_all(name)
            .iter()
            .flat_map(|value| {
                // A value that is not visible ASCII is no coding the service knows.
                value.to_str().unwrap_or("(not ASCII)").split(',')
            })
            .map(|coding| coding.split(';').next().unwrap_or_default().trim())
            .filter(|coding| !coding.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    if let Some(coding) = codings(header::CONTENT_ENCODING)
        .into_iter()
        .find(|coding| !coding.eq_ignore_ascii_case("identity"))
    {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the request body is sent with `Content-Encoding: {}`; this service does not \
             decode bodies: send it uncompressed (or `Content-Encoding: identity`)",
            shown(&coding)
        )));
    }
    if let Some(coding) = codings(header::TRANSFER_ENCODING)
        .into_iter()
        .find(|coding| {
            !coding.eq_ignore_ascii_case("chunked") && !coding.eq_ignore_ascii_case("identity")
        })
    {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the request body is sent with the transfer coding `{}`; this service reads \
             `chunked` bodies and plain ones only: send it uncompressed",
            shown(&coding)
        )));
    }
    Ok(())
}

/// The `content-length` the client declared, if it is a number (the HTTP parser has already
/// refused malformed or conflicting ones).
fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn body_error(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(format!(
            "the request body is too large: {}",
            rejection.body_text()
        ))
    } else {
        ApiError::InvalidJson(format!(
            "cannot read the request body: {}",
            rejection.body_text()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn limits() -> Limits {
        Limits {
            max_body_bytes: 1 << 20,
            max_inputs: 4,
        }
    }

    #[test]
    fn both_shapes_parse_into_the_same_request() {
        let native = parse_embed(br#"{"inputs": ["a", "b"], "dimensions": 8}"#, &limits()).unwrap();
        let openai = parse_openai(br#"{"input": ["a", "b"], "dimensions": 8}"#, &limits()).unwrap();
        assert_eq!(native.request, openai.request);
        assert_eq!(
            native.request,
            EmbedRequest::new(["a", "b"]).with_dimensions(8)
        );
        let truncate = parse_embed(br#"{"inputs": ["a"], "truncate": false}"#, &limits()).unwrap();
        assert_eq!(truncate.request.truncation, Truncation::Error);
        assert_eq!(truncate.timeout, None);
        let native = parse_embed(br#"{"inputs": ["a"], "timeout": 2.5}"#, &limits()).unwrap();
        let openai = parse_openai(br#"{"input": "a", "timeout": 2.5}"#, &limits()).unwrap();
        assert_eq!(native.timeout, Some(Duration::from_millis(2_500)));
        assert_eq!(openai.timeout, native.timeout);
    }

    #[test]
    fn errors_have_the_documented_status() {
        let status = |result: Result<Parsed, ApiError>| result.unwrap_err().status().as_u16();
        assert_eq!(status(parse_embed(b"{\"inputs\": [", &limits())), 400);
        assert_eq!(status(parse_embed(b"\xff", &limits())), 400);
        // Invalid UTF-8 in a field the OpenAI shape ignores is refused too (a request_parse
        // fuzz case).
        assert_eq!(
            status(parse_openai(
                b"{\"input\": \"a\", \"user\": \"\xff\"}",
                &limits()
            )),
            400
        );
        assert_eq!(status(parse_embed(br#"{"inputs": [1]}"#, &limits())), 422);
        assert_eq!(
            status(parse_embed(br#"{"inputs": ["a"], "x": 1}"#, &limits())),
            422
        );
        assert_eq!(status(parse_openai(br#"{"input": [[1]]}"#, &limits())), 422);
        assert_eq!(
            status(parse_embed(
                br#"{"inputs": ["a","b","c","d","e"]}"#,
                &limits()
            )),
            413
        );
        // No character limit: a long text is the tokenizer's to cut.
        let long = format!(r#"{{"input": ["{}"]}}"#, "x".repeat(100_000));
        assert!(parse_openai(long.as_bytes(), &limits()).is_ok());
        assert_eq!(
            status(parse_embed(
                br#"{"inputs": ["a"], "timeout": 0}"#,
                &limits()
            )),
            422
        );
        assert_eq!(
            status(parse_openai(br#"{"input": "a", "timeout": -1}"#, &limits())),
            422
        );
        assert_eq!(
            status(parse_openai(
                br#"{"input": "a", "timeout": "soon"}"#,
                &limits()
            )),
            422
        );
    }

    #[test]
    fn timeout_headers_are_positive_seconds() {
        let header = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(TIMEOUT_HEADER, HeaderValue::from_str(value).unwrap());
            timeout_header(&headers)
        };
        assert_eq!(timeout_header(&HeaderMap::new()).unwrap(), None);
        assert_eq!(header(" 0.25 ").unwrap(), Some(Duration::from_millis(250)));
        for bad in ["0", "-3", "NaN", "inf", "5s", ""] {
            assert_eq!(header(bad).unwrap_err().status(), 422, "{bad}");
        }
    }

    #[test]
    fn json_content_types_are_recognised() {
        let check = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            is_json(&headers)
        };
        assert!(check("application/json"));
        assert!(check("Application/JSON; charset=utf-8"));
        assert!(check("application/vnd.api+json"));
        assert!(!check("text/plain"));
        assert!(!check("application/jsonx"));
        assert!(!check("application/x-www-form-urlencoded"));
        assert!(!check("json"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
