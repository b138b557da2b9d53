//! Where one request's time went: queue, tokenisation and inference, filled in by the engine
//! while the request's task runs ([`Timings::current`]), read by the HTTP layer for its timing
//! headers, log line and metrics. The engine needs no HTTP type for it, and no signature
//! carries it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

tokio::task_local! {
    static CURRENT: Timings;
}

/// Where one request's time went; shared between the handler's task and the batcher's.
#[derive(Debug, Clone, Default)]
pub struct Timings(Arc<Recorded>);

#[derive(Debug, Default)]
struct Recorded {
    queue_us: AtomicU64,
    tokenization_us: AtomicU64,
    inference_us: AtomicU64,
    tokens: AtomicU64,
    embedded: AtomicU64,
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

impl Timings {
    /// The timings of the request whose task runs this (none outside a request).
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Adds time spent tokenising, and the tokens counted.
    pub fn record_tokenization(&self, elapsed: Duration, tokens: usize) {
        self.0
            .tokenization_us
            .fetch_add(micros(elapsed), Ordering::AcqRel);
        self.0.tokens.fetch_add(tokens as u64, Ordering::AcqRel);
    }

    /// Adds time spent waiting for a model run.
    pub fn record_queue(&self, elapsed: Duration) {
        self.0.queue_us.fetch_add(micros(elapsed), Ordering::AcqRel);
    }

    /// Adds time of a model run the request took part in.
    pub fn record_inference(&self, elapsed: Duration) {
        self.0
            .inference_us
            .fetch_add(micros(elapsed), Ordering::AcqRel);
        self.0.embedded.store(1, Ordering::Release);
    }

    /// Queue time so far.
    pub fn queue(&self) -> Duration {
        Duration::from_micros(self.0.queue_us.load(Ordering::Acquire))
    }

    /// Tokenisation time so far.
    pub fn tokenization(&self) -> Duration {
        Duration::from_micros(self.0.tokenization_us.load(Ordering::Acquire))
    }

    /// Inference time so far.
    pub fn inference(&self) -> Duration {
        Duration::from_micros(self.0.inference_us.load(Ordering::Acquire))
    }

    /// Tokens counted for the request.
    pub fn tokens(&self) -> u64 {
        self.0.tokens.load(Ordering::Acquire)
    }

    /// Whether a model run embedded the request (its timing headers mean something).
    pub fn embedded(&self) -> bool {
        self.0.embedded.load(Ordering::Acquire) == 1
    }
}

/// Runs `future` with `timings` as the current request's timings.
pub async fn with_timings<F: Future>(timings: Timings, future: F) -> F::Output {
    CURRENT.scope(timings, future).await
}
