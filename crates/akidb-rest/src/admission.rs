//! Admission control: refuse at once what cannot finish before its deadline.
//!
//! Each model's [`Admission`] knows the work ahead of a new request: the padded tokens of the
//! requests already queued, plus what is left of the run in progress. It converts tokens into
//! time with the model's measured cost per padded token, learned online from the model's
//! recent runs (an exponentially weighted mean, so it follows a machine that gets busier or
//! quieter). A request whose estimated finish lies past its deadline (less a
//! [`HEADROOM`] for estimation errors) is refused with
//! [`Shed`], which carries how long the caller should wait before it could be served; the
//! service answers it with 503 and `Retry-After` in a few milliseconds, instead of a 504
//! after the whole deadline.
//!
//! Until the first run is measured there is no cost to estimate with, and every request is
//! admitted; an idle model (no work ahead) also admits every request, since the estimate may
//! be pessimistic and only the deadline itself is certain.
//!
//! ```
//! use std::time::Duration;
//! use akidb_rest::admission::Admission;
//!
//! let admission = Admission::default();
//! // Nothing measured yet: admitted.
//! let first = admission.admit(10_000, Duration::from_secs(1)).unwrap();
//! // The model took 2 s for those 10,000 padded tokens: 0.2 ms per token.
//! let mut batch = admission.start_batch(10_000, vec![first]);
//! batch.ran(10_000, Duration::from_secs(2), true);
//! drop(batch);
//! // 10,000 tokens queued ahead (2 s) + 10,000 of its own (2 s) cannot finish within 90 %
//! // (the headroom) of 3 s: 1.3 s too many, retry after 2 s.
//! let _queued = admission.admit(10_000, Duration::from_secs(3)).unwrap();
//! let shed = admission.admit(10_000, Duration::from_secs(3)).unwrap_err();
//! assert_eq!(shed.retry_after_secs(), 2);
//! ```

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Weight of the newest run in the cost per token (the rest is the previous estimate).
const NEWEST_RUN_WEIGHT: f64 = 0.3;

/// Share of a request's remaining time the estimate may fill: the rest absorbs estimation
/// errors (requests merged into one run pad differently than planned alone, a model's cost
/// per token varies with text length and with the machine's load).
pub const HEADROOM: f64 = 0.9;

/// One model's view of the work ahead; shared by its batcher handle and its task.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    inner: Arc<Mutex<Work>>,
}

#[derive(Debug, Default)]
struct Work {
    /// Padded tokens of the admitted requests not yet running.
    queued_tokens: u64,
    /// Padded tokens of the run in progress and when it started.
    running: Option<(u64, Instant)>,
    /// Measured seconds per padded token; `None` until the first run.
    seconds_per_token: Option<f64>,
}

/// Why a request was not admitted: the work ahead and its own would end past its deadline.
#[derive(Debug, Clone, PartialEq)]
pub struct Shed {
    /// Estimated time to finish the work already ahead of the request.
    pub ahead: Duration,
    /// Estimated time of the request's own work.
    pub own: Duration,
    /// The part of the request's remaining time the estimate may fill ([`HEADROOM`]).
    pub budget: Duration,
}

impl Shed {
    /// Whole seconds (at least 1) after which the same request could fit in the same budget,
    /// if no other work arrived meanwhile: the estimate's excess over the budget.
    pub fn retry_after_secs(&self) -> u64 {
        let excess = self
            .ahead
            .saturating_add(self.own)
            .saturating_sub(self.budget);
        excess.as_secs_f64().ceil().max(1.0) as u64
    }
}

impl std::fmt::Display for Shed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the work queued ahead ({:.1} s estimated) and this request's ({:.1} s) cannot finish \
             within its {:.1} s deadline",
            self.ahead.as_secs_f64(),
            self.own.as_secs_f64(),
            self.budget.as_secs_f64()
        )
    }
}

/// An admitted request's share of the queued work; returned to the estimate when dropped
/// (when the request leaves the queue for a run, is cancelled, or fails).
#[derive(Debug)]
pub struct Reservation {
    work: Arc<Mutex<Work>>,
    tokens: u64,
}

impl Reservation {
    /// The padded tokens this reservation holds.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut work = lock(&self.work);
        work.queued_tokens = work.queued_tokens.saturating_sub(self.tokens);
    }
}

/// A batch in progress (one or more model runs). Its remaining padded tokens count as work
/// ahead until each run reports through [`ran`](InFlight::ran), or the batch is dropped.
#[derive(Debug)]
pub struct InFlight {
    work: Arc<Mutex<Work>>,
    remaining: u64,
}

impl InFlight {
    /// Records that a run of `tokens` padded tokens of this batch ended after `elapsed`; a
    /// run that `succeeded` teaches the model's cost per token (a failed one may have stopped
    /// early, so it teaches nothing).
    pub fn ran(&mut self, tokens: u64, elapsed: Duration, succeeded: bool) {
        self.remaining = self.remaining.saturating_sub(tokens);
        let mut work = lock(&self.work);
        work.running = Some((self.remaining, Instant::now()));
        if succeeded && tokens > 0 {
            let measured = elapsed.as_secs_f64() / tokens as f64;
            work.seconds_per_token = Some(match work.seconds_per_token {
                Some(previous) => {
                    NEWEST_RUN_WEIGHT * measured + (1.0 - NEWEST_RUN_WEIGHT) * previous
                }
                None => measured,
            });
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.work).running = None;
    }
}

fn lock(work: &Mutex<Work>) -> MutexGuard<'_, Work> {
    // The critical sections only do arithmetic: a poisoned lock still holds sound numbers.
    work.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Admission {
    /// Admits a request of `tokens` padded tokens with `budget` left before its deadline, or
    /// says why it cannot finish in time.
    pub fn admit(&self, tokens: u64, budget: Duration) -> Result<Reservation, Shed> {
        let mut work = lock(&self.inner);
        if let Some(cost) = work.seconds_per_token {
            let ahead = work.ahead(cost);
            let own = seconds(tokens as f64 * cost);
            let budget = seconds(budget.as_secs_f64() * HEADROOM);
            if !ahead.is_zero() && ahead.saturating_add(own) > budget {
                return Err(Shed { ahead, own, budget });
            }
        }
        work.queued_tokens = work.queued_tokens.saturating_add(tokens);
        Ok(Reservation {
            work: Arc::clone(&self.inner),
            tokens,
        })
    }

    /// Starts a batch of `tokens` padded tokens (as its texts were planned together, which
    /// may differ from the sum of its requests' reservations, released here).
    pub fn start_batch(&self, tokens: u64, reservations: Vec<Reservation>) -> InFlight {
        drop(reservations);
        lock(&self.inner).running = Some((tokens, Instant::now()));
        InFlight {
            work: Arc::clone(&self.inner),
            remaining: tokens,
        }
    }

    /// Estimated time to finish the work ahead of a new request now (zero before the first run
    /// is measured).
    pub fn work_ahead(&self) -> Duration {
        let work = lock(&self.inner);
        work.seconds_per_token
            .map_or(Duration::ZERO, |cost| work.ahead(cost))
    }

    /// The measured cost of one padded token, once a run was measured.
    pub fn cost_per_token(&self) -> Option<Duration> {
        lock(&self.inner).seconds_per_token.map(seconds)
    }

    /// Padded tokens admitted and not yet running.
    pub fn queued_tokens(&self) -> u64 {
        lock(&self.inner).queued_tokens
    }
}

impl Work {
    fn ahead(&self, seconds_per_token: f64) -> Duration {
        let queued = self.queued_tokens as f64 * seconds_per_token;
        let running = self.running.map_or(0.0, |(tokens, started)| {
            (tokens as f64 * seconds_per_token - started.elapsed().as_secs_f64()).max(0.0)
        });
        seconds(queued + running)
    }
}

/// A duration of `value` seconds, saturating (never panics on an absurd estimate).
fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.max(0.0)).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learned(seconds_per_token: f64) -> Admission {
        let admission = Admission::default();
        let reservation = admission.admit(1_000, Duration::from_secs(1)).unwrap();
        let mut batch = admission.start_batch(1_000, vec![reservation]);
        batch.ran(
            1_000,
            Duration::from_secs_f64(seconds_per_token * 1_000.0),
            true,
        );
        drop(batch);
        admission
    }

    #[test]
    fn everything_is_admitted_until_a_run_is_measured_and_while_idle() {
        let admission = Admission::default();
        let held: Vec<_> = (0..10)
            .map(|_| {
                admission
                    .admit(1_000_000, Duration::from_millis(1))
                    .unwrap()
            })
            .collect();
        assert_eq!(admission.queued_tokens(), 10_000_000);
        drop(held);
        assert_eq!(admission.queued_tokens(), 0);
        // Measured, but nothing ahead: even a request that looks too big is admitted.
        let admission = learned(0.001);
        assert!(admission.admit(1_000_000, Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn a_request_that_cannot_finish_in_time_is_shed_with_the_excess() {
        let admission = learned(0.001);
        assert_eq!(admission.cost_per_token(), Some(Duration::from_millis(1)));
        let _ahead = admission.admit(5_000, Duration::from_secs(30)).unwrap();
        assert_eq!(admission.work_ahead(), Duration::from_secs(5));
        // 5 s ahead + 2 s own = 7 s: fits in 90 % of 8 s, not in 90 % of 4.5 s (2.95 s over:
        // retry after 3 s).
        let fits = admission.admit(2_000, Duration::from_secs(8)).unwrap();
        drop(fits);
        let shed = admission
            .admit(2_000, Duration::from_millis(4_500))
            .unwrap_err();
        assert_eq!(shed.ahead, Duration::from_secs(5));
        assert_eq!(shed.own, Duration::from_secs(2));
        assert_eq!(shed.retry_after_secs(), 3);
        assert!(shed.to_string().contains("5.0 s"), "{shed}");
        assert_eq!(
            admission.queued_tokens(),
            5_000,
            "a shed request holds nothing"
        );
    }

    #[test]
    fn the_batch_in_flight_counts_until_its_runs_end_and_the_cost_follows_recent_runs() {
        let admission = learned(0.001);
        let reservation = admission.admit(4_000, Duration::from_secs(30)).unwrap();
        let mut batch = admission.start_batch(4_000, vec![reservation]);
        assert_eq!(admission.queued_tokens(), 0);
        let ahead = admission.work_ahead();
        assert!(ahead > Duration::from_millis(3_900) && ahead <= Duration::from_secs(4));
        // Its first run (3,000 tokens) took 3× the estimate: the cost moves 30 % of the way
        // towards it, and only the last 1,000 tokens remain ahead.
        batch.ran(3_000, Duration::from_secs(9), true);
        let cost = admission.cost_per_token().unwrap().as_secs_f64();
        assert!((cost - 0.0016).abs() < 1e-9, "{cost}");
        let ahead = admission.work_ahead().as_secs_f64();
        assert!(ahead > 1.5 && ahead <= 1.6, "{ahead}");
        // A failed run frees its share and teaches nothing; the end of the batch frees all.
        batch.ran(500, Duration::from_secs(60), false);
        assert_eq!(admission.cost_per_token().unwrap().as_secs_f64(), cost);
        drop(batch);
        assert_eq!(admission.work_ahead(), Duration::ZERO);
    }
}
