//! Seeing inside a request: a `tracing` span per request with its id (`x-request-id`, taken
//! from the client when it sends a sane one, else made here, and always returned), one log
//! line per request, and the timing headers `x-queue-time`, `x-tokenization-time`,
//! `x-inference-time` and `x-total-time` (milliseconds, as text-embeddings-inference sends
//! them).
//!
//! The engine fills the request's [`Timings`] (set here, found by the engine in the request's
//! task), so it needs no HTTP type.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
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
const MAX_REQUEST_ID: usize = 128;

/// The client's request id when it is printable ASCII of sane length, else a new one.
pub fn request_id(given: Option<&HeaderValue>) -> String {
    if let Some(id) = given.and_then(|value| value.to_str().ok())
        && !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id.bytes().all(|byte| byte.is_ascii_graphic())
    {
        return id.to_string();
    }
    new_request_id()
}

/// A new request id: 32 hex digits from the clock, the process and a counter, mixed (unique
/// within and across processes in practice; not a secret).
pub fn new_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let seed = nanos ^ (u64::from(std::process::id()) << 32);
    format!(
        "{:016x}{:016x}",
        mix(seed),
        mix(seed ^ count.rotate_left(17))
    )
}

/// SplitMix64's finaliser: spreads every input bit over the output.
fn mix(mut value: u64) -> u64 {
    value = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

fn millis_header(elapsed: Duration) -> HeaderValue {
    HeaderValue::from(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

/// Middleware: the request's span, id, timings, timing headers and log line.
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(request.headers().get(&REQUEST_ID));
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
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID, value);
    }
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
    fn sane_ids_are_kept_and_others_replaced() {
        let kept = HeaderValue::from_static("req-42.abc");
        assert_eq!(request_id(Some(&kept)), "req-42.abc");
        let spaced = HeaderValue::from_static("two words");
        assert_ne!(request_id(Some(&spaced)), "two words");
        let long = HeaderValue::from_str(&"x".repeat(MAX_REQUEST_ID + 1)).unwrap();
        assert_eq!(request_id(Some(&long)).len(), 32);
        assert_ne!(new_request_id(), new_request_id());
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
