//! Seeing inside a request: a `tracing` span per request with its id (`x-request-id`, taken
//! from the client when it sends a sane one, else a new UUID, and always returned:
//! tower-http's `SetRequestId` and `PropagateRequestId` layers, after
//! [`keep_sane_request_id`]), one log line per request (client-supplied values in it are
//! escaped: see [`crate::logging`]), and the timing headers `x-queue-time`,
//! `x-tokenization-time`, `x-inference-time` and `x-total-time` (milliseconds, as
//! text-embeddings-inference sends them).
//!
//! The engine fills the request's [`Timings`] (set here, found by the engine in the request's
//! task), so it needs no HTTP type.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::request_id::RequestId;
use tracing::Instrument;

use crate::engine::timings::{Timings, with_timings};

use super::state::AppState;

/// The request-id header, read and returned.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Time the request waited for a model run, in ms.
pub const QUEUE_TIME: HeaderName = HeaderName::from_static("x-queue-time");
/// Time spent tokenising the request before it queued, in ms.
pub const TOKENIZATION_TIME: HeaderName = HeaderName::from_static("x-tokenization-time");
/// Time of the model run that embedded the request, in ms.
pub const INFERENCE_TIME: HeaderName = HeaderName::from_static("x-inference-time");
/// Time from the request's arrival to its answer, in ms.
pub const TOTAL_TIME: HeaderName = HeaderName::from_static("x-total-time");

/// Longest client-given request id kept; longer or non-printable ones are replaced.
pub const MAX_REQUEST_ID: usize = 128;

/// Whether a client's request id is kept: visible ASCII (no spaces, no control characters)
/// of at most [`MAX_REQUEST_ID`] bytes, as text-embeddings-inference and tower-http's users
/// check them.
pub fn is_sane_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= MAX_REQUEST_ID && bytes.iter().all(u8::is_ascii_graphic)
}

/// Drops a client's `x-request-id` unless it is one sane value, so that tower-http's
/// `SetRequestId` (which keeps any value it finds) makes a new one instead.
///
/// Kept by hand: tower-http sets and propagates ids but does not check a client's.
pub fn keep_sane_request_id(mut request: Request) -> Request {
    let mut values = request.headers().get_all(&REQUEST_ID).iter();
    let sane = match (values.next(), values.next()) {
        (Some(value), None) => is_sane_request_id(value),
        (None, _) => true,
        (Some(_), Some(_)) => false,
    };
    if !sane {
        request.headers_mut().remove(&REQUEST_ID);
    }
    request
}

fn millis_header(elapsed: Duration) -> HeaderValue {
    HeaderValue::from(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

/// Middleware: the request's span, id, timings, timing headers and log line.
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Set by tower-http's `SetRequestId` layer, which runs before this middleware.
    let id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or("-")
        .to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let method = request.method().clone();
    let span = tracing::info_span!("request", id = %id, method = %method, route = %route);
    let timings = Timings::default();
    let mut response = with_timings(timings.clone(), next.run(request))
        .instrument(span.clone())
        .await;
    let total = started.elapsed();
    let headers = response.headers_mut();
    if timings.embedded() {
        headers.insert(QUEUE_TIME, millis_header(timings.queue()));
        headers.insert(TOKENIZATION_TIME, millis_header(timings.tokenization()));
        headers.insert(INFERENCE_TIME, millis_header(timings.inference()));
        state.metrics().observe_timings(&route, &timings);
    }
    headers.insert(TOTAL_TIME, millis_header(total));
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            status,
            total_ms = total.as_secs_f64() * 1000.0,
            queue_ms = timings.queue().as_secs_f64() * 1000.0,
            tokenization_ms = timings.tokenization().as_secs_f64() * 1000.0,
            inference_ms = timings.inference().as_secs_f64() * 1000.0,
            tokens = timings.tokens(),
            "request answered"
        );
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_kept_and_others_dropped() {
        let with = |values: &[&str]| {
            let mut request = Request::new(axum::body::Body::empty());
            for value in values {
                request
                    .headers_mut()
                    .append(REQUEST_ID, HeaderValue::from_str(value).unwrap());
            }
            keep_sane_request_id(request)
                .headers()
                .get(REQUEST_ID)
                .map(|value| value.to_str().unwrap().to_string())
        };
        assert_eq!(with(&["req-42.abc"]).as_deref(), Some("req-42.abc"));
        assert_eq!(with(&["two words"]), None);
        assert_eq!(with(&[&"x".repeat(MAX_REQUEST_ID + 1)]), None);
        assert_eq!(with(&["a", "b"]), None);
        assert_eq!(with(&[]), None);
    }

    #[tokio::test]
    async fn timings_reach_the_request_task_only() {
        assert!(Timings::current().is_none());
        let timings = Timings::default();
        with_timings(timings.clone(), async {
            let current = Timings::current().unwrap();
            current.record_tokenization(Duration::from_millis(2), 7);
            current.record_inference(Duration::from_millis(5));
        })
        .await;
        assert_eq!(timings.tokens(), 7);
        assert!(timings.embedded());
        assert_eq!(timings.inference(), Duration::from_millis(5));
    }
}
