//! Giving memory back after a burst.
//!
//! glibc's allocator keeps what a burst freed (megabytes of request bodies, tokenizer buffers,
//! ONNX Runtime's per-run tensors) in its arenas, so the process's resident memory stays at
//! its peak long after the work is done. `malloc_trim(0)` returns every free page of every
//! arena to the system. Text-embeddings-inference calls it every 100 ms, busy or not; here it
//! runs only when the engine has gone idle after work (nothing queued or running), at most
//! once per [`TRIM_INTERVAL`], so it never contends with a model run for the arenas' locks.

use std::time::Duration;

use crate::http::state::AppState;

/// How often the trimmer looks for an idle engine after work.
pub const TRIM_INTERVAL: Duration = Duration::from_millis(250);

/// Trims the allocator's free memory whenever the service has gone idle after work: the
/// engine has nothing queued or running, and requests were answered or connections closed
/// since the last trim. Runs until the task is dropped.
pub async fn trim_when_idle(state: AppState) {
    let mut interval = tokio::time::interval(TRIM_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = activity(&state);
    loop {
        interval.tick().await;
        let now = activity(&state);
        if now == seen {
            continue;
        }
        if state.engine().is_ok_and(|engine| engine.is_idle()) {
            seen = now;
            let trimmed = trim();
            tracing::debug!(trimmed, "returned free memory to the system");
        }
    }
}

/// What has happened since start: requests the engine finished and connections closed.
fn activity(state: &AppState) -> (u64, u64) {
    let finished = state.engine().map_or(0, |engine| engine.finished());
    let metrics = state.metrics();
    let closed = metrics
        .connections_total()
        .saturating_sub(metrics.connections_open());
    (finished, closed)
}

/// Returns free heap pages to the system; whether any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() -> bool {
    // SAFETY: `malloc_trim` takes a plain integer and only walks glibc's own arenas under
    // their locks; it is safe to call from any thread at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators return memory on their own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}
