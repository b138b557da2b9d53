//! API-key authentication: `Authorization: Bearer <key>`, compared in constant time, sent
//! once (two `Authorization` headers are refused with 400).
//!
//! The key is never logged; a refused request is answered 401 with `WWW-Authenticate: Bearer`.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use subtle::{Choice, ConstantTimeEq};

use super::error::ApiError;
use crate::config::ApiKey;

/// Middleware that lets a request through only when it carries the configured key, in
/// exactly one `Authorization` header: with two, which one counts would depend on who reads
/// them (the first wins here, the last in some proxies), so the request is refused (400).
pub async fn require_api_key(
    State(key): State<ApiKey>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match presented_key(request.headers(), &key)? {
        Presented::Missing => Err(ApiError::Unauthorized(
            "send the API key as `Authorization: Bearer <key>`".to_string(),
        )),
        Presented::Wrong => Err(ApiError::Unauthorized(
            "the API key is not valid".to_string(),
        )),
        Presented::Valid => Ok(next.run(request).await),
    }
}

/// What a request presented as its API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// No `Bearer` credentials.
    Missing,
    /// A key that is not the configured one.
    Wrong,
    /// The configured key.
    Valid,
}

/// Whether `headers` present `key` (compared in constant time); 400 when they carry more than
/// one `Authorization` header.
pub fn presented_key(headers: &HeaderMap, key: &ApiKey) -> Result<Presented, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::DuplicateCredentials(
            "the request has more than one `Authorization` header: send the API key once"
                .to_string(),
        ));
    }
    let token = first
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token);
    Ok(match token {
        None => Presented::Missing,
        Some(token) if constant_time_eq(token.as_bytes(), key.as_bytes()) => Presented::Valid,
        Some(_) => Presented::Wrong,
    })
}

/// The token of a `Bearer` authorization header (scheme matched case-insensitively).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// Compares two byte strings with `subtle`'s constant-time primitives, in time that depends
/// only on `presented`'s length: every presented byte is compared (against the key repeated
/// as needed) and the length check is folded in, so response timing reveals neither how much
/// of the key matched nor the key's length.
fn constant_time_eq(presented: &[u8], key: &[u8]) -> bool {
    if key.is_empty() {
        return false;
    }
    let same_bytes = presented
        .iter()
        .zip(key.iter().cycle())
        .fold(Choice::from(1), |equal, (byte, expected)| {
            equal & byte.ct_eq(expected)
        });
    let same_length = (presented.len() as u64).ct_eq(&(key.len() as u64));
    bool::from(same_bytes & same_length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_whole_keys_only() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret!", b"secret"));
        assert!(!constant_time_eq(b"secre", b"secret"));
        assert!(!constant_time_eq(b"secrex", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
        // A repetition of the key must not pass through the modulo.
        assert!(!constant_time_eq(b"secretsecret", b"secret"));
    }

    #[test]
    fn parses_bearer_headers() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }
}
