//! Giving memory back after a burst.
//!
//! glibc's allocator keeps what a burst freed (megabytes of request bodies, tokenizer buffers,
//! ONNX Runtime's per-run tensors) in its arenas, so the process's resident memory stays at
//! its peak long after the work is done. `malloc_trim(0)` returns every free page of every
//! arena to the system. Text-embeddings-inference calls it every 100 ms, busy or not; here it
//! runs once the service has gone quiet after work: nothing happened for a whole
//! [`TRIM_INTERVAL`] and the engine has nothing queued or running. Under steady traffic it
//! never runs, so it never holds the arenas' locks while a request allocates, nor hands back
//! pages the next request would fault in again.

use std::time::Duration;

use crate::http::state::AppState;

/// How often the trimmer looks for an idle engine after work.
pub const TRIM_INTERVAL: Duration = Duration::from_millis(250);

/// Trims the allocator's free memory whenever the service has gone quiet after work: requests
/// were answered or connections closed since the last trim, none since the previous tick, and
/// the engine has nothing queued or running. Runs until the task is dropped.
pub async fn trim_when_idle(state: AppState) {
    let mut interval = tokio::time::interval(TRIM_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trimmed_at = activity(&state);
    let mut previous = trimmed_at;
    loop {
        interval.tick().await;
        let now = activity(&state);
        let idle = state.engine().is_ok_and(|engine| engine.is_idle());
        let due = gone_quiet(previous, now, trimmed_at, idle);
        previous = now;
        if !due {
            continue;
        }
        trimmed_at = now;
        // Walking the arenas can take milliseconds: not on an async worker.
        match tokio::task::spawn_blocking(trim).await {
            Ok(trimmed) => tracing::debug!(trimmed, "returned free memory to the system"),
            Err(error) => tracing::warn!(%error, "trimming the allocator failed"),
        }
    }
}

/// Whether to trim at a tick that saw `now` after `previous` at the tick before, `trimmed_at`
/// at the last trim: there was work since the last trim, none during the last interval, and
/// the engine is `idle`.
fn gone_quiet(previous: (u64, u64), now: (u64, u64), trimmed_at: (u64, u64), idle: bool) -> bool {
    idle && now == previous && now != trimmed_at
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

#[cfg(test)]
mod tests {
    use super::gone_quiet;

    #[test]
    fn trims_once_after_work_and_a_quiet_interval_never_under_steady_traffic() {
        // Steady traffic: every tick sees new work, never a trim.
        assert!(!gone_quiet((5, 0), (9, 0), (0, 0), true));
        // Quiet for a whole interval after work, engine idle: trim.
        assert!(gone_quiet((9, 0), (9, 0), (0, 0), true));
        // Already trimmed at this point: not again.
        assert!(!gone_quiet((9, 0), (9, 0), (9, 0), true));
        // A connection closed meanwhile counts as work; a busy engine waits.
        assert!(!gone_quiet((9, 0), (9, 1), (9, 0), true));
        assert!(!gone_quiet((9, 1), (9, 1), (9, 0), false));
        assert!(gone_quiet((9, 1), (9, 1), (9, 0), true));
    }
}
