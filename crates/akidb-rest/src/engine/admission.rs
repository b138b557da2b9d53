//! Admission control: every unit of work a request causes is estimated, in seconds, before it
//! starts, and a request that cannot finish before its deadline is refused at once.
//!
//! Each model's [`Admission`] keeps a ledger of the work ahead of a new request: the
//! estimated seconds of every admitted request not yet running (its tokenisation and its
//! model runs) plus what is left of the run in progress. Estimates come from the model's
//! [`CostModel`]:
//!
//! - a model run of `texts` texts padded to `length` tokens costs
//!   `texts × length × (per_token + per_token_per_position × length)` seconds: the second
//!   term is attention, whose cost per token grows with the sequence (on EmbeddingGemma-300m
//!   a 2,048-token text costs about twice as much per token as a 130-token one). Both
//!   coefficients are calibrated at start-up from two runs, one short and one at the model's
//!   token cap ([`CostModel::from_runs`]), and a scale learned online from every run (an
//!   exponentially weighted mean of measured over predicted) follows a machine that gets
//!   busier or quieter;
//! - tokenisation costs a learned number of seconds per byte of text read. On arrival, before
//!   any heavy step, a request is estimated from its bytes: its tokenisation, and its model
//!   runs at [`ARRIVAL_TOKEN_SHARE`] of the tokens its bytes usually hold (learned from every
//!   tokenisation). When the work ahead already fills [`ARRIVAL_AHEAD_SHARE`] of its budget,
//!   a request that cannot fit behind it is refused without being tokenised; otherwise only
//!   its tokenisation is checked, and its exact estimate decides (bytes can hold far fewer
//!   tokens than usual: 4,000 bytes of one letter are one MiniLM token). Once tokenised, its model runs are estimated again from its token
//!   counts.
//!
//! A request is refused ([`Refusal`]) when its own work alone cannot finish within the
//! service's longest deadline even on an idle machine ([`Refusal::NeverFits`]: sending it
//! again cannot help; judged on its token counts, at a learned scale of at most 1), or when
//! its own work, or the work ahead plus its own, cannot finish within the part of its own
//! remaining time the estimate may fill ([`HEADROOM`]) ([`Refusal::Shed`], with the time after
//! which it could fit). Until the model is calibrated every request is admitted.
//!
//! ```
//! use std::time::Duration;
//! use akidb_rest::engine::admission::{Admission, CostModel, Refusal};
//!
//! let admission = Admission::default();
//! // 1 ms per token for short texts, 2 ms per token at 1,000 tokens.
//! admission.calibrate(CostModel::from_runs((1, 10, Duration::from_millis(10)), (1, 1_000, Duration::from_secs(2))));
//! let limit = Duration::from_secs(30);
//! // A 1,000-token text costs about 2 s: it fits a 10 s deadline on an idle model…
//! let own = admission.run_cost(&[vec![1_000]]);
//! let first = admission.admit(own, Duration::from_secs(10), limit).unwrap();
//! // …but not a 1 s one, even with nothing ahead.
//! assert!(matches!(admission.admit(own, Duration::from_secs(1), limit), Err(Refusal::Shed(_))));
//! // Sixty of them never fit the 30 s limit.
//! let huge = admission.run_cost(&vec![vec![1_000]; 60]);
//! assert!(matches!(admission.admit(huge, Duration::from_secs(30), limit), Err(Refusal::NeverFits { .. })));
//! drop(first);
//! ```

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Weight of the newest measurement in each learned figure (the rest is the previous value).
const NEWEST_WEIGHT: f64 = 0.3;

/// Bounds of the learned scale: one odd run (a page fault storm, a noisy neighbour) moves the
/// estimate, it never makes it absurd.
const SCALE_BOUNDS: (f64, f64) = (0.25, 8.0);

/// Share of a request's remaining time the estimate may fill: the rest absorbs estimation
/// errors (requests merged into one run pad differently than planned alone, the machine's
/// load varies).
pub const HEADROOM: f64 = 0.9;

/// Share of the tokens a text's bytes usually hold (learned) that the arrival estimate counts:
/// low enough that text denser in bytes than usual (long words, repeated letters) is not
/// refused for tokens it does not have, high enough that a queue full of ordinary requests
/// refuses the next one before tokenising it.
pub const ARRIVAL_TOKEN_SHARE: f64 = 0.5;

/// Share of a request's budget the work ahead must fill before the arrival estimate of its
/// model runs can refuse it (see [`Admission::admit_on_arrival`]).
pub const ARRIVAL_AHEAD_SHARE: f64 = 0.5;

/// Most the cost per token may grow from a short text to one at the cap: four times (attention
/// at 2,048 tokens doubles EmbeddingGemma-300m's; a transformer's cost per token is linear in
/// its length).
pub const MAX_LENGTH_GROWTH: f64 = 4.0;

/// What one model run costs, by its shape, before the learned scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostModel {
    /// Seconds per padded token, independent of the run's length.
    pub per_token: f64,
    /// Seconds per padded token per token of the run's padded length (attention).
    pub per_token_per_position: f64,
}

impl CostModel {
    /// The model through two measured runs, each `(texts, padded length, elapsed)`: one short,
    /// one long. The cost per token is taken as a straight line through both points, never
    /// decreasing with length, never below zero, and at the long run's length at most
    /// [`MAX_LENGTH_GROWTH`] times the short run's (a run slowed by a noisy neighbour must not
    /// make every long request look hopeless; the learned scale corrects the rest).
    pub fn from_runs(short: (usize, usize, Duration), long: (usize, usize, Duration)) -> Self {
        let per_token_at = |(texts, length, elapsed): (usize, usize, Duration)| {
            elapsed.as_secs_f64() / (texts.max(1) * length.max(1)) as f64
        };
        let (short_length, long_length) = (short.1 as f64, long.1 as f64);
        let short_cost = per_token_at(short);
        let long_cost = per_token_at(long).min(short_cost * MAX_LENGTH_GROWTH);
        let slope = if long_length > short_length {
            ((long_cost - short_cost) / (long_length - short_length)).max(0.0)
        } else {
            0.0
        };
        let per_token = (short_cost - slope * short_length).max(short_cost * 0.1);
        Self {
            per_token,
            per_token_per_position: slope,
        }
    }

    /// Seconds of one run of `texts` texts padded to `length` tokens.
    pub fn run_seconds(&self, texts: usize, length: usize) -> f64 {
        let length = length as f64;
        texts as f64 * length * (self.per_token + self.per_token_per_position * length)
    }
}

/// One model's ledger of the work ahead; shared by its batcher and the requests it admits.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    inner: Arc<Mutex<Ledger>>,
}

#[derive(Debug)]
struct Ledger {
    /// Estimated work of the admitted requests not yet running: a sum of durations, kept in
    /// whole nanoseconds so that giving every reservation back leaves exactly nothing.
    queued: Duration,
    /// Estimated seconds left of the batch in progress, and when that was estimated.
    running: Option<(f64, Instant)>,
    /// The run cost's shape; `None` until calibrated.
    model: Option<CostModel>,
    /// Measured over predicted run time, learned from every run.
    scale: f64,
    /// Seconds of tokenisation per byte read; `None` until measured.
    tokenize_seconds_per_byte: Option<f64>,
    /// Tokens per byte read; `None` until measured.
    tokens_per_byte: Option<f64>,
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            queued: Duration::ZERO,
            running: None,
            model: None,
            scale: 1.0,
            tokenize_seconds_per_byte: None,
            tokens_per_byte: None,
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Its own estimated work exceeds the service's longest deadline even on an idle machine
    /// (the learned scale counted at most 1): it can never be served as it is (send fewer or
    /// shorter texts).
    NeverFits {
        /// Estimated time of the request's own work.
        own: Duration,
        /// The part of the service's longest deadline the estimate may fill.
        limit: Duration,
    },
    /// Its own work, or the work ahead and its own, cannot finish before its deadline now.
    Shed(Shed),
}

/// The estimate that refused a request for now.
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

/// An admitted request's share of the queued work; returned to the ledger when dropped (when
/// the request's work starts running, is cancelled, or fails).
#[derive(Debug)]
pub struct Reservation {
    ledger: Arc<Mutex<Ledger>>,
    held: Duration,
}

impl Reservation {
    /// The estimated work this reservation holds.
    pub fn cost(&self) -> Duration {
        self.held
    }

    /// Gives back `part` of the reservation (work that is done, a tokenisation that ended).
    pub fn release(&mut self, part: Duration) {
        let part = part.min(self.held);
        self.held -= part;
        let mut ledger = lock(&self.ledger);
        ledger.queued = ledger.queued.saturating_sub(part);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut ledger = lock(&self.ledger);
        ledger.queued = ledger.queued.saturating_sub(self.held);
    }
}

/// A batch in progress (one or more model runs). Its remaining estimated work counts as work
/// ahead until each run reports through [`ran`](InFlight::ran), or the batch is dropped.
#[derive(Debug)]
pub struct InFlight {
    ledger: Arc<Mutex<Ledger>>,
    remaining: f64,
}

impl InFlight {
    /// Records that a run of `texts` texts padded to `length` tokens ended after `elapsed`; a
    /// run that `succeeded` teaches the model's scale (a failed one may have stopped early, so
    /// it teaches nothing).
    pub fn ran(&mut self, texts: usize, length: usize, elapsed: Duration, succeeded: bool) {
        let mut ledger = lock(&self.ledger);
        let predicted = ledger.run_estimate(texts, length);
        self.remaining = (self.remaining - predicted).max(0.0);
        ledger.running = Some((self.remaining, Instant::now()));
        if succeeded && let Some(model) = ledger.model {
            let shape = model.run_seconds(texts, length);
            if shape > 0.0 {
                let measured =
                    (elapsed.as_secs_f64() / shape).clamp(SCALE_BOUNDS.0, SCALE_BOUNDS.1);
                ledger.scale = NEWEST_WEIGHT * measured + (1.0 - NEWEST_WEIGHT) * ledger.scale;
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.ledger).running = None;
    }
}

fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    // The critical sections only do arithmetic: a poisoned lock still holds sound numbers.
    ledger.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Admission {
    /// Sets the run cost's shape (from the start-up calibration); the learned scale restarts.
    pub fn calibrate(&self, model: CostModel) {
        let mut ledger = lock(&self.inner);
        ledger.model = Some(model);
        ledger.scale = 1.0;
    }

    /// The calibrated run cost's shape, once calibrated.
    pub fn cost_model(&self) -> Option<CostModel> {
        lock(&self.inner).model
    }

    /// Estimated seconds of model runs planned as `runs`, each a list of token counts.
    pub fn run_cost(&self, runs: &[Vec<usize>]) -> Duration {
        let ledger = lock(&self.inner);
        seconds(
            runs.iter()
                .map(|run| ledger.run_estimate(run.len(), run.iter().copied().max().unwrap_or(0)))
                .sum(),
        )
    }

    /// Estimated time to tokenise `bytes` bytes of text (zero until measured).
    pub fn tokenize_cost(&self, bytes: usize) -> Duration {
        let ledger = lock(&self.inner);
        seconds(ledger.tokenize_seconds_per_byte.unwrap_or(0.0) * bytes as f64)
    }

    /// Records a tokenisation of `bytes` bytes read into `tokens` tokens that took `elapsed`.
    pub fn tokenized(&self, bytes: usize, tokens: usize, elapsed: Duration) {
        if bytes == 0 {
            return;
        }
        let mut ledger = lock(&self.inner);
        let learn = |previous: Option<f64>, newest: f64| match previous {
            Some(previous) => NEWEST_WEIGHT * newest + (1.0 - NEWEST_WEIGHT) * previous,
            None => newest,
        };
        let bytes = bytes as f64;
        ledger.tokenize_seconds_per_byte = Some(learn(
            ledger.tokenize_seconds_per_byte,
            elapsed.as_secs_f64() / bytes,
        ));
        ledger.tokens_per_byte = Some(learn(ledger.tokens_per_byte, tokens as f64 / bytes));
    }

    /// The tokens the arrival estimate counts for a text of which `bytes` bytes are read, at
    /// most `cap`: [`ARRIVAL_TOKEN_SHARE`] of what such bytes usually hold (none until a
    /// tokenisation was measured).
    pub fn arrival_tokens(&self, bytes: usize, cap: usize) -> usize {
        let per_byte = lock(&self.inner).tokens_per_byte.unwrap_or(0.0);
        ((bytes as f64 * per_byte * ARRIVAL_TOKEN_SHARE) as usize).min(cap)
    }

    /// Admits work estimated at `own` for a request with `budget` left before its deadline,
    /// under the service's longest deadline `limit`, or says why it cannot finish in time.
    /// Uncalibrated, everything is admitted.
    pub fn admit(
        &self,
        own: Duration,
        budget: Duration,
        limit: Duration,
    ) -> Result<Reservation, Refusal> {
        let mut ledger = lock(&self.inner);
        if ledger.model.is_some() {
            ledger.check(own, budget, limit)?;
        }
        Ok(self.reserve(&mut ledger, own))
    }

    /// Counts `work` as queued, held by the reservation returned.
    fn reserve(&self, ledger: &mut Ledger, work: Duration) -> Reservation {
        ledger.queued = ledger.queued.saturating_add(work);
        Reservation {
            ledger: Arc::clone(&self.inner),
            held: work,
        }
    }

    /// Admits a request on arrival, before it is tokenised: its tokenisation estimated at
    /// `tokenize`, its model runs roughly at `runs` (from its bytes), `budget` left before its
    /// deadline. Only sheds ([`Refusal::Shed`]; a rough estimate never says a request never
    /// fits); the runs count only when the work ahead fills [`ARRIVAL_AHEAD_SHARE`] of the
    /// budget. The reservation holds the tokenisation alone, until
    /// [`readmit`](Self::readmit) replaces it by the exact estimate.
    pub fn admit_on_arrival(
        &self,
        tokenize: Duration,
        runs: Duration,
        budget: Duration,
    ) -> Result<Reservation, Refusal> {
        let mut ledger = lock(&self.inner);
        if ledger.model.is_some() {
            let busy = ledger.ahead() >= budget.as_secs_f64() * HEADROOM * ARRIVAL_AHEAD_SHARE;
            let counted = if busy {
                tokenize.saturating_add(runs)
            } else {
                tokenize
            };
            ledger.check(counted, budget, Duration::MAX)?;
        }
        Ok(self.reserve(&mut ledger, tokenize))
    }

    /// Replaces `reservation` by one of `own` (a request's exact estimate once tokenised),
    /// checked as [`admit`](Self::admit) checks, with the request's old share no longer
    /// counted ahead of it. On refusal the old reservation is given back too.
    pub fn readmit(
        &self,
        reservation: Reservation,
        own: Duration,
        budget: Duration,
        limit: Duration,
    ) -> Result<Reservation, Refusal> {
        drop(reservation);
        self.admit(own, budget, limit)
    }

    /// Starts a batch whose runs are estimated at `cost` (as its texts were planned together,
    /// which may differ from the sum of its requests' reservations, released here).
    pub fn start_batch(&self, cost: Duration, reservations: Vec<Reservation>) -> InFlight {
        drop(reservations);
        lock(&self.inner).running = Some((cost.as_secs_f64(), Instant::now()));
        InFlight {
            ledger: Arc::clone(&self.inner),
            remaining: cost.as_secs_f64(),
        }
    }

    /// Estimated time to finish the work ahead of a new request now.
    pub fn work_ahead(&self) -> Duration {
        seconds(lock(&self.inner).ahead())
    }

    /// The learned scale of the calibrated cost (1 right after calibration).
    pub fn scale(&self) -> f64 {
        lock(&self.inner).scale
    }

    /// Whether any admitted work is queued or running.
    pub fn is_idle(&self) -> bool {
        let ledger = lock(&self.inner);
        ledger.running.is_none() && ledger.queued.is_zero()
    }
}

impl Ledger {
    fn run_estimate(&self, texts: usize, length: usize) -> f64 {
        self.model
            .map_or(0.0, |model| model.run_seconds(texts, length) * self.scale)
    }

    fn ahead(&self) -> f64 {
        let running = self.running.map_or(0.0, |(remaining, since)| {
            (remaining - since.elapsed().as_secs_f64()).max(0.0)
        });
        self.queued.as_secs_f64() + running
    }

    fn check(&self, own: Duration, budget: Duration, limit: Duration) -> Result<(), Refusal> {
        let limit = seconds(limit.as_secs_f64() * HEADROOM);
        // A machine slower than at calibration (a busy neighbour, this service's own load)
        // makes work late now, not never: that is a shed, judged below.
        let idle = seconds(own.as_secs_f64() / self.scale.max(1.0));
        if idle > limit {
            return Err(Refusal::NeverFits { own: idle, limit });
        }
        let ahead = seconds(self.ahead());
        let budget = seconds(budget.as_secs_f64() * HEADROOM);
        if ahead.saturating_add(own) > budget {
            return Err(Refusal::Shed(Shed { ahead, own, budget }));
        }
        Ok(())
    }
}

/// A duration of `value` seconds, saturating (never panics on an absurd estimate).
fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.max(0.0)).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(30);

    /// 1 ms per token, flat.
    fn flat() -> Admission {
        let admission = Admission::default();
        admission.calibrate(CostModel {
            per_token: 0.001,
            per_token_per_position: 0.0,
        });
        admission
    }

    #[test]
    fn a_slow_machine_sheds_what_an_idle_one_could_serve_and_never_refuses_it_for_good() {
        let admission = flat();
        // Runs take three times their estimate (a busy neighbour): the scale learns it.
        for _ in 0..20 {
            let mut batch = admission.start_batch(Duration::from_secs(1), Vec::new());
            batch.ran(1, 1_000, Duration::from_secs(3), true);
        }
        assert!(admission.scale() > 2.5, "{}", admission.scale());
        // 20,000 tokens: 20 s on the calibrated machine, 60 s at the learned scale.
        let own = admission.run_cost(&[vec![1_000; 20]]);
        assert!(own > LIMIT, "{own:?}");
        let refused = admission.admit(own, LIMIT, LIMIT).unwrap_err();
        assert!(matches!(refused, Refusal::Shed(_)), "{refused:?}");
        // 40,000 tokens exceed the limit even at the calibrated speed.
        let huge = admission.run_cost(&[vec![1_000; 40]]);
        let refused = admission.admit(huge, LIMIT, LIMIT).unwrap_err();
        assert!(
            matches!(refused, Refusal::NeverFits { own, .. } if own > Duration::from_secs(27) && own < Duration::from_secs(60)),
            "{refused:?}"
        );
    }

    #[test]
    fn on_arrival_the_rough_runs_count_only_behind_a_busy_queue_and_never_refuse_for_good() {
        let admission = flat();
        let (tokenize, runs) = (Duration::from_millis(10), Duration::from_secs(100));
        // Idle: a rough 100 s is no reason to refuse; only the tokenisation is held.
        let idle = admission.admit_on_arrival(tokenize, runs, LIMIT).unwrap();
        assert_eq!(idle.cost(), tokenize);
        drop(idle);
        // Behind 20 s of work (over half of 27 s), the same request is shed at once.
        let _ahead = admission
            .admit(Duration::from_secs(20), LIMIT, LIMIT)
            .unwrap();
        let refused = admission
            .admit_on_arrival(tokenize, runs, LIMIT)
            .unwrap_err();
        assert!(matches!(refused, Refusal::Shed(_)), "{refused:?}");
        let small = admission.admit_on_arrival(tokenize, Duration::from_secs(1), LIMIT);
        assert!(small.is_ok(), "{small:?}");
    }

    #[test]
    fn the_ledger_is_idle_again_once_every_reservation_is_given_back() {
        // Estimates of awkward sizes, released in part and dropped out of order, as a busy
        // service does: the ledger must come back to exactly nothing queued, or the service
        // never looks idle again (and never gives memory back).
        const HOURS: Duration = Duration::from_secs(10_000);
        let admission = flat();
        let mut held: Vec<Reservation> = (1..=500u64)
            .map(|i| {
                let own = Duration::from_nanos(i * 7_919_333 % 1_234_567_891 + 1);
                admission.admit(own, HOURS, HOURS).unwrap()
            })
            .collect();
        for (i, reservation) in held.iter_mut().enumerate() {
            if i % 3 == 0 {
                reservation.release(Duration::from_nanos(i as u64 * 104_729 + 13));
            }
        }
        assert!(!admission.is_idle());
        while !held.is_empty() {
            let i = held.len() * 7 / 11;
            drop(held.swap_remove(i));
        }
        assert!(
            admission.is_idle(),
            "left queued: {:?}",
            admission.work_ahead()
        );
        assert_eq!(admission.work_ahead(), Duration::ZERO);
    }

    #[test]
    fn the_arrival_estimate_counts_half_the_tokens_bytes_usually_hold_up_to_the_cap() {
        let admission = Admission::default();
        assert_eq!(admission.arrival_tokens(10_000, 512), 0);
        admission.tokenized(1_000, 250, Duration::from_millis(1));
        assert_eq!(admission.arrival_tokens(1_000, 512), 125);
        assert_eq!(admission.arrival_tokens(100_000, 512), 512);
    }

    #[test]
    fn everything_is_admitted_until_calibrated() {
        let admission = Admission::default();
        let held: Vec<_> = (0..10)
            .map(|_| {
                admission
                    .admit(Duration::from_secs(100), Duration::from_millis(1), LIMIT)
                    .unwrap()
            })
            .collect();
        assert_eq!(admission.work_ahead(), Duration::from_secs(1_000));
        drop(held);
        assert!(admission.is_idle());
    }

    #[test]
    fn the_calibrated_cost_grows_with_length_as_attention_does() {
        // Gemma-like: 0.66 ms per token at 130 tokens, 1.26 ms per token at 2,048.
        let model = CostModel::from_runs(
            (1, 130, Duration::from_secs_f64(0.000_66 * 130.0)),
            (1, 2_048, Duration::from_secs_f64(0.001_26 * 2_048.0)),
        );
        let at = |length: usize| model.run_seconds(1, length) / length as f64;
        assert!((at(130) - 0.000_66).abs() < 1e-9, "{model:?}");
        assert!((at(2_048) - 0.001_26).abs() < 1e-9, "{model:?}");
        assert!(at(1_000) > at(500) && at(500) > at(130));
        // Eight texts of 2,048 tokens cost eight times one.
        assert!((model.run_seconds(8, 2_048) - 8.0 * model.run_seconds(1, 2_048)).abs() < 1e-9);
        // A long run measured cheaper per token than a short one: flat, never negative.
        let odd = CostModel::from_runs(
            (1, 100, Duration::from_millis(100)),
            (1, 1_000, Duration::from_millis(500)),
        );
        assert_eq!(odd.per_token_per_position, 0.0);
        assert!(odd.per_token > 0.0);
        // A long run slowed a hundredfold (a noisy neighbour) counts as four times at most.
        let noisy = CostModel::from_runs(
            (1, 100, Duration::from_millis(100)),
            (1, 1_000, Duration::from_secs(100)),
        );
        let growth = noisy.run_seconds(1, 1_000) / 1_000.0 / (noisy.run_seconds(1, 100) / 100.0);
        assert!((growth - MAX_LENGTH_GROWTH).abs() < 1e-9, "{growth}");
    }

    #[test]
    fn own_work_past_the_deadline_is_refused_even_on_an_idle_model() {
        let admission = flat();
        let own = admission.run_cost(&[vec![2_000]]);
        assert_eq!(own, Duration::from_secs(2));
        let shed = admission
            .admit(own, Duration::from_secs(1), LIMIT)
            .unwrap_err();
        assert!(
            matches!(shed, Refusal::Shed(ref shed) if shed.ahead.is_zero() && shed.retry_after_secs() == 2),
            "{shed:?}"
        );
        let never = admission
            .admit(Duration::from_secs(40), Duration::from_secs(30), LIMIT)
            .unwrap_err();
        assert!(matches!(never, Refusal::NeverFits { .. }), "{never:?}");
        assert!(admission.is_idle(), "a refused request holds nothing");
    }

    #[test]
    fn a_request_behind_too_much_work_is_shed_with_the_excess() {
        let admission = flat();
        let _ahead = admission
            .admit(Duration::from_secs(5), LIMIT, LIMIT)
            .unwrap();
        // 5 s ahead + 2 s own = 7 s: fits in 90 % of 8 s, not in 90 % of 4.5 s (2.95 s over:
        // retry after 3 s).
        let own = Duration::from_secs(2);
        drop(admission.admit(own, Duration::from_secs(8), LIMIT).unwrap());
        let refusal = admission
            .admit(own, Duration::from_millis(4_500), LIMIT)
            .unwrap_err();
        let Refusal::Shed(shed) = refusal else {
            panic!("{refusal:?}")
        };
        assert_eq!(shed.ahead, Duration::from_secs(5));
        assert_eq!(shed.retry_after_secs(), 3);
        assert!(shed.to_string().contains("5.0 s"), "{shed}");
    }

    #[test]
    fn the_exact_estimate_replaces_the_first_and_releases_count() {
        let admission = flat();
        let rough = admission
            .admit(Duration::from_secs(3), LIMIT, LIMIT)
            .unwrap();
        let mut exact = admission
            .readmit(rough, Duration::from_secs(1), LIMIT, LIMIT)
            .unwrap();
        assert_eq!(admission.work_ahead(), Duration::from_secs(1));
        exact.release(Duration::from_millis(400));
        assert_eq!(exact.cost(), Duration::from_millis(600));
        assert_eq!(admission.work_ahead(), Duration::from_millis(600));
        drop(exact);
        assert!(admission.is_idle());
    }

    #[test]
    fn the_batch_in_flight_counts_until_its_runs_end_and_the_scale_follows_runs() {
        let admission = flat();
        let reservation = admission
            .admit(Duration::from_secs(4), LIMIT, LIMIT)
            .unwrap();
        let mut batch = admission.start_batch(Duration::from_secs(4), vec![reservation]);
        let ahead = admission.work_ahead();
        assert!(ahead > Duration::from_millis(3_900) && ahead <= Duration::from_secs(4));
        // Its first run (3 texts of 1,000 tokens: 3 s estimated) took 9 s: the scale moves
        // 30 % of the way towards 3, and the last second now counts at that scale.
        batch.ran(3, 1_000, Duration::from_secs(9), true);
        assert!(
            (admission.scale() - 1.6).abs() < 1e-9,
            "{}",
            admission.scale()
        );
        let ahead = admission.work_ahead().as_secs_f64();
        assert!(ahead > 0.0 && ahead <= 1.0, "{ahead}");
        // A failed run teaches nothing; the end of the batch frees all.
        batch.ran(1, 1_000, Duration::from_secs(60), false);
        assert!((admission.scale() - 1.6).abs() < 1e-9);
        drop(batch);
        assert!(admission.is_idle());
    }

    #[test]
    fn tokenisation_is_estimated_from_bytes_and_learned() {
        let admission = Admission::default();
        assert_eq!(admission.tokenize_cost(1_000_000), Duration::ZERO);
        // 100 KB in 10 ms, then in 20 ms: the estimate moves 30 % of the way.
        admission.tokenized(100_000, 25_000, Duration::from_millis(10));
        assert_eq!(
            admission.tokenize_cost(1_000_000),
            Duration::from_millis(100)
        );
        admission.tokenized(100_000, 25_000, Duration::from_millis(20));
        assert_eq!(
            admission.tokenize_cost(1_000_000),
            Duration::from_millis(130)
        );
    }
}
