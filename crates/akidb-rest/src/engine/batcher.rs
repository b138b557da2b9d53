//! The dynamic batcher: admits, tokenises and queues requests for one model and cuts shared
//! model runs from them, in tokens.
//!
//! Knows nothing of HTTP. Each served model gets one [`Batcher`]; callers `embed` through it,
//! and a background task owns the queue. A request crosses the provider once:
//!
//! 1. it takes a place in the queue (past `queue_capacity` requests in the engine, tokenising
//!    or waiting, it is refused at once with [`EngineError::QueueFull`]) and is admitted on
//!    the cost of its tokenisation, known from its bytes alone ([`crate::engine::admission`]):
//!    a request that cannot even be tokenised before its deadline, behind the work ahead, is
//!    refused before any heavy work;
//! 2. the tokenisation pool ([`TokenizerPool`]) validates it and tokenises each text (once,
//!    prompt and truncation applied), one text at a time, stopping between texts when the
//!    request has ended; the request's token limit is counted from these encodings, so a
//!    request over it, or an invalid one, never queues;
//! 3. its exact estimate (its texts planned into runs, costed by the model's calibrated cost)
//!    replaces the rough one, and is checked again;
//! 4. the task takes the oldest waiting request and the later ones, up to `max_batch_size`
//!    texts and `max_batch_tokens` padded tokens, waiting at most `max_wait` (counted from
//!    the oldest request's arrival) for more; the encodings carry their prompts and
//!    truncation, so any requests may share a run;
//! 5. the library's least-padding planner ([`plan_runs`], the one the providers use
//!    themselves) cuts the texts into model runs bounded by texts and padded tokens, run
//!    oldest request first; each run returns raw vectors, and each request is finished by
//!    [`pipeline::finish`] with its own dimension and normalisation as soon as its last text
//!    has run;
//! 6. when a run holding texts of several requests fails, its requests run again one by
//!    one: one bad request never decides the fate of the others. When the provider names the
//!    text at fault (an over-long text), only its request gets the error and the others run
//!    again together. A provider that panics fails only its run (the call runs in its own
//!    task), never the batcher.
//!
//! Work whose caller went away (a timeout, a closed connection) is never started: such
//! requests leave the queue, and their texts are dropped from runs not yet started.
//!
//! ```
//! use std::sync::Arc;
//! use akidb_embedding_core::EmbedRequest;
//! use akidb_embedding_mock::MockEmbeddingProvider;
//! use akidb_rest::engine::batcher::{Batcher, BatcherConfig};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let batcher = Batcher::spawn(
//!     Arc::new(MockEmbeddingProvider::new(8)),
//!     BatcherConfig::default(),
//!     Arc::new(()),
//! );
//! batcher.calibrate().await.unwrap();
//! let response = batcher.embed(EmbedRequest::new(["hello"])).await.unwrap();
//! assert_eq!(response.dimension, 8);
//! # });
//! ```

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use akidb_embedding_core::batching::{padded_tokens, plan_runs};
use akidb_embedding_core::{
    EmbedRequest, EmbedResponse, EmbeddingError, EmbeddingProvider, Encoding, ModelInfo, Result,
    TokenSpan, TokenizedRequest, pipeline, validate,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::EngineError;
use super::admission::{Admission, CostModel, InFlight, Refusal, Reservation};
use super::timings::Timings;
use super::tokenize::TokenizerPool;

/// Words of the short calibration text ([`Batcher::calibrate`]): long enough that a run's
/// fixed cost does not dominate its cost per token.
pub const CALIBRATION_WORDS: usize = 128;

/// Model runs of [`Batcher::calibrate`]: one short, one at the cap.
pub const CALIBRATION_RUNS: usize = 2;

/// How a [`Batcher`] forms its batches and admits work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatcherConfig {
    /// Most texts in one model run (a request with more is cut into several runs).
    pub max_batch_size: usize,
    /// Most padded tokens (texts × the run's longest text) in one model run; a single longer
    /// text still runs, alone.
    pub max_batch_tokens: usize,
    /// Most tokens in one request, all its texts together, prompts and special tokens
    /// included: counted from the request's encodings before it queues, and refused with
    /// [`EmbeddingError::TooManyTokens`] past it.
    pub max_request_tokens: usize,
    /// Longest the oldest waiting request waits for others to join its batch.
    pub max_wait: Duration,
    /// Most requests in the engine at once for this model (tokenising or waiting for a run);
    /// more are refused with [`EngineError::QueueFull`].
    pub queue_capacity: usize,
    /// Texts tokenised at once, at most, for this model.
    pub tokenization_workers: usize,
    /// The service's longest deadline: a request whose own work is estimated past it is
    /// refused with [`EngineError::NeverFits`].
    pub request_timeout: Duration,
    /// `false`: every request runs alone (a baseline for benchmarks).
    pub dynamic: bool,
}

impl Default for BatcherConfig {
    /// The service's defaults.
    fn default() -> Self {
        Self {
            max_batch_size: 32,
            max_batch_tokens: 16_384,
            max_request_tokens: 65_536,
            max_wait: Duration::ZERO,
            queue_capacity: 1024,
            tokenization_workers: 2,
            request_timeout: Duration::from_secs(30),
            dynamic: true,
        }
    }
}

/// What a batcher tells its observer after every provider run.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchReport<'a> {
    /// The model that ran.
    pub model: &'a str,
    /// Requests with texts in the run.
    pub requests: usize,
    /// Texts in the run.
    pub texts: usize,
    /// Tokens embedded (0 when the run failed).
    pub tokens: usize,
    /// How long the provider took.
    pub elapsed: Duration,
    /// Whether the provider succeeded.
    pub succeeded: bool,
}

/// Receives a [`BatchReport`] after every provider run (metrics hook; `()` ignores them).
pub trait BatchObserver: Send + Sync {
    /// Called by the batcher task after each provider run.
    fn batch_ran(&self, report: &BatchReport<'_>);
}

impl BatchObserver for () {
    fn batch_ran(&self, _report: &BatchReport<'_>) {}
}

/// The handle callers embed through; the queue and the model runs live in its task.
pub struct Batcher {
    info: ModelInfo,
    /// Also here: requests are tokenised by their callers' tasks, before they queue.
    provider: Arc<dyn EmbeddingProvider>,
    config: BatcherConfig,
    sender: mpsc::UnboundedSender<Job>,
    /// One permit per request in the engine (tokenising or queued).
    places: Arc<Semaphore>,
    admission: Admission,
    pool: TokenizerPool,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("model", &self.info.id)
            .field("config", &self.config)
            .field("queued", &self.queue_depth())
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// Starts the batcher task for `provider` on the current tokio runtime. The task ends
    /// once the handle is dropped and the requests already queued are answered. Admission
    /// refuses nothing until [`calibrate`](Self::calibrate) has run.
    pub fn spawn(
        provider: Arc<dyn EmbeddingProvider>,
        config: BatcherConfig,
        observer: Arc<dyn BatchObserver>,
    ) -> Self {
        let info = provider.model_info().clone();
        let (sender, receiver) = mpsc::unbounded_channel();
        let admission = Admission::default();
        let worker = Worker {
            model: info.id.clone(),
            provider: Arc::clone(&provider),
            config: config.clone(),
            observer,
            admission: admission.clone(),
            receiver,
            waiting: VecDeque::new(),
            closed: false,
        };
        tokio::spawn(worker.run());
        Self {
            info,
            provider,
            places: Arc::new(Semaphore::new(
                config.queue_capacity.min(Semaphore::MAX_PERMITS),
            )),
            pool: TokenizerPool::new(config.tokenization_workers),
            config,
            sender,
            admission,
        }
    }

    /// The model this batcher serves.
    pub fn model_info(&self) -> &ModelInfo {
        &self.info
    }

    /// Whether the batcher's task still takes requests (false once it has stopped).
    pub fn is_running(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Requests in the engine for this model now (tokenising or waiting for a run).
    pub fn queue_depth(&self) -> usize {
        self.config
            .queue_capacity
            .min(Semaphore::MAX_PERMITS)
            .saturating_sub(self.places.available_permits())
    }

    /// The model's admission ledger (work ahead, calibrated cost).
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// Texts this model tokenises at once, at most.
    pub fn tokenization_workers(&self) -> usize {
        self.pool.workers()
    }

    /// Embeds `request` with no deadline of its own (refused only when its own work exceeds
    /// the service's deadline; see [`embed_before`](Self::embed_before)).
    ///
    /// The vectors are those `provider.embed(request)` would give (the provider may pad a
    /// merged run differently, so a real model can differ in the last float bits).
    pub async fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse, EngineError> {
        self.embed_before(request, None).await
    }

    /// Admits `request` on its tokenisation's cost, tokenises it on the pool, admits it again
    /// on its exact estimate, queues its encodings and waits for its vectors; refused at once when
    /// the work ahead and its own would not let it finish by `deadline`.
    pub async fn embed_before(
        &self,
        request: EmbedRequest,
        deadline: Option<Instant>,
    ) -> Result<EmbedResponse, EngineError> {
        // The caller's timings (set by the service's middleware; none for library callers).
        let timings = Timings::current();
        let permit = self.take_place()?;
        // On arrival only bytes are known, not tokens (a megabyte of one repeated letter may
        // be three tokens): a request that cannot fit behind the work ahead on a cautious
        // estimate from its bytes is refused before any heavy step; the exact estimate below,
        // from its token counts, decides the rest.
        let mut reservation = self.admit_on_arrival(
            self.tokenize_cost(&request),
            self.arrival_runs(&request),
            deadline,
        )?;
        let tokenizing = Instant::now();
        let admission = &self.admission;
        let tokenized = self
            .pool
            .tokenize(&self.provider, request, deadline, admission, |bytes| {
                reservation.release(admission.tokenize_cost(bytes));
            })
            .await?;
        let lengths = tokenized.token_counts();
        if let Some(timings) = &timings {
            timings.record_tokenization(tokenizing.elapsed(), lengths.iter().sum());
        }
        validate::check_total_tokens(&lengths, self.config.max_request_tokens)?;
        let exact = self.admission.run_cost(&self.planned(&lengths));
        let reservation = self
            .admission
            .readmit(
                reservation,
                exact,
                budget(deadline),
                self.config.request_timeout,
            )
            .map_err(|refusal| self.refused(refusal))?;
        let padded = padded_tokens(
            &lengths,
            &plan_runs(
                &lengths,
                self.config.max_batch_size,
                self.config.max_batch_tokens,
            ),
        );
        let (reply, answer) = oneshot::channel();
        let job = Job {
            tokenized,
            padded,
            place: Some(Place {
                _permit: permit,
                reservation,
            }),
            enqueued: Instant::now(),
            reply,
            timings,
        };
        self.sender.send(job).map_err(|_| self.stopped())?;
        Ok(answer.await.map_err(|_| self.stopped())??)
    }

    /// The tokens of each text of `request` with their spans, as the provider gives them:
    /// a place in the queue, admitted on its tokenisation's estimate and tokenised on the
    /// pool as [`embed_before`](Self::embed_before) does, within the request token limit.
    pub async fn token_spans_before(
        &self,
        request: EmbedRequest,
        deadline: Option<Instant>,
    ) -> Result<Vec<Vec<TokenSpan>>, EngineError> {
        let (_place, mut reservation) = self.admit_to_tokenize(&request, deadline)?;
        let admission = &self.admission;
        let spans = self
            .pool
            .token_spans(&self.provider, request, deadline, |bytes| {
                reservation.release(admission.tokenize_cost(bytes));
            })
            .await?;
        let lengths: Vec<usize> = spans.iter().map(Vec::len).collect();
        validate::check_total_tokens(&lengths, self.config.max_request_tokens)?;
        Ok(spans)
    }

    /// The token ids of each text of `request` (for providers without spans), admitted and
    /// tokenised as [`token_spans_before`](Self::token_spans_before).
    pub async fn token_ids_before(
        &self,
        request: EmbedRequest,
        deadline: Option<Instant>,
    ) -> Result<Vec<Vec<u32>>, EngineError> {
        let (_place, mut reservation) = self.admit_to_tokenize(&request, deadline)?;
        let admission = &self.admission;
        let tokenized = self
            .pool
            .tokenize(&self.provider, request, deadline, admission, |bytes| {
                reservation.release(admission.tokenize_cost(bytes));
            })
            .await?;
        validate::check_total_tokens(&tokenized.token_counts(), self.config.max_request_tokens)?;
        Ok(tokenized
            .encodings
            .into_iter()
            .map(|encoding| encoding.ids)
            .collect())
    }

    /// Calibrates the model's cost (see [`crate::engine::admission`]) with runs of one text
    /// each: one of about [`CALIBRATION_WORDS`] words, one of a text that fills the model's
    /// token cap. Their vectors are checked (one per text, of the
    /// model's dimension, finite), so a model that passes can serve. The runs go to the provider directly (no queue, no
    /// observer). Fails with a load error when either run fails.
    pub async fn calibrate(&self) -> Result<(), EmbeddingError> {
        let short = vec!["calibration"; CALIBRATION_WORDS].join(" ");
        // Every word is at least one token: this many words reach the cap.
        let long = vec!["calibration"; self.info.max_tokens].join(" ");
        // One run of each: the provider's own warm-up has already paid for first-run buffers
        // (a second short run measured no faster on EmbeddingGemma-300m).
        let short = self.measure(short).await?;
        let long = self.measure(long).await?;
        let model = CostModel::from_runs((1, short.0, short.1), (1, long.0, long.1));
        self.admission.calibrate(model);
        tracing::info!(
            model = %self.info.id,
            short_tokens = short.0,
            short_ms = short.1.as_secs_f64() * 1e3,
            long_tokens = long.0,
            long_ms = long.1.as_secs_f64() * 1e3,
            "calibrated the model's cost"
        );
        Ok(())
    }

    /// One calibration run of `text`: its token count and how long the model took.
    async fn measure(&self, text: String) -> Result<(usize, Duration), EmbeddingError> {
        let failed = |error: EngineError| {
            EmbeddingError::model_load(&self.info.id, format!("calibration run failed: {error}"))
        };
        let bytes = text.len();
        let tokenizing = Instant::now();
        let tokenized = self
            .provider
            .tokenize(EmbedRequest::new([text]))
            .await
            .map_err(|error| failed(error.into()))?;
        let length = tokenized.total_tokens();
        self.admission.tokenized(
            TokenizerPool::bytes_read(bytes, self.info.max_tokens),
            length,
            tokenizing.elapsed(),
        );
        let provider = Arc::clone(&self.provider);
        let started = Instant::now();
        let vectors = tokio::spawn(async move { provider.run(tokenized.encodings).await })
            .await
            .unwrap_or_else(|failure| Err(provider_failure(&self.info.id, "model run", failure)))
            .map_err(|error| failed(error.into()))?;
        let elapsed = started.elapsed();
        match vectors.as_slice() {
            [vector]
                if vector.len() == self.info.dimension
                    && vector.iter().all(|value| value.is_finite()) =>
            {
                Ok((length, elapsed))
            }
            _ => Err(failed(
                EmbeddingError::Inference(format!(
                    "the model gave no finite vector of {} values for one text",
                    self.info.dimension
                ))
                .into(),
            )),
        }
    }

    /// Token counts `lengths` planned into runs, as lists of token counts.
    fn planned(&self, lengths: &[usize]) -> Vec<Vec<usize>> {
        plan_runs(
            lengths,
            self.config.max_batch_size,
            self.config.max_batch_tokens,
        )
        .into_iter()
        .map(|run| run.into_iter().map(|text| lengths[text]).collect())
        .collect()
    }

    /// The estimated tokenisation of every text of `request`.
    fn tokenize_cost(&self, request: &EmbedRequest) -> Duration {
        let bytes: usize = request
            .texts
            .iter()
            .map(|text| TokenizerPool::bytes_read(text.len(), self.info.max_tokens))
            .sum();
        self.admission.tokenize_cost(bytes)
    }

    /// A place in the queue and the arrival admission of a request that is only tokenised
    /// (`/tokenize`): its tokenisation is all its work.
    fn admit_to_tokenize(
        &self,
        request: &EmbedRequest,
        deadline: Option<Instant>,
    ) -> Result<(OwnedSemaphorePermit, Reservation), EngineError> {
        let place = self.take_place()?;
        let reservation =
            self.admit_on_arrival(self.tokenize_cost(request), Duration::ZERO, deadline)?;
        Ok((place, reservation))
    }

    /// A place in the queue, or [`EngineError::QueueFull`] at once.
    fn take_place(&self) -> Result<OwnedSemaphorePermit, EngineError> {
        Arc::clone(&self.places)
            .try_acquire_owned()
            .map_err(|_| EngineError::QueueFull {
                model: self.info.id.clone(),
                capacity: self.config.queue_capacity,
            })
    }

    /// The arrival estimate of `request`'s model runs (see [`crate::engine::admission`]): at
    /// the tokens its bytes cautiously hold.
    fn arrival_runs(&self, request: &EmbedRequest) -> Duration {
        let cap = self.info.max_tokens;
        let lengths: Vec<usize> = request
            .texts
            .iter()
            .map(|text| {
                let bytes = TokenizerPool::bytes_read(text.len(), cap);
                self.admission.arrival_tokens(bytes, cap)
            })
            .collect();
        self.admission.run_cost(&self.planned(&lengths))
    }

    /// Admits a request on arrival: its tokenisation estimated at `tokenize`, its model runs
    /// at `runs`, due by `deadline` ([`Admission::admit_on_arrival`]).
    fn admit_on_arrival(
        &self,
        tokenize: Duration,
        runs: Duration,
        deadline: Option<Instant>,
    ) -> Result<Reservation, EngineError> {
        self.admission
            .admit_on_arrival(tokenize, runs, budget(deadline))
            .map_err(|refusal| self.refused(refusal))
    }

    fn refused(&self, refusal: Refusal) -> EngineError {
        let model = self.info.id.clone();
        match refusal {
            Refusal::NeverFits { own, limit } => EngineError::NeverFits { model, own, limit },
            Refusal::Shed(shed) => EngineError::Shed { model, shed },
        }
    }

    fn stopped(&self) -> EngineError {
        EngineError::Stopped {
            model: self.info.id.clone(),
        }
    }
}

/// Time left before `deadline` (unbounded without one).
fn budget(deadline: Option<Instant>) -> Duration {
    deadline.map_or(Duration::MAX, |deadline| {
        deadline.saturating_duration_since(Instant::now())
    })
}

/// An [`EmbeddingError::Inference`] for a provider task that panicked (or was cancelled),
/// with the panic's message logged.
fn provider_failure(model: &str, step: &str, failure: tokio::task::JoinError) -> EmbeddingError {
    let reason = if failure.is_panic() {
        let payload = failure.into_panic();
        payload
            .downcast_ref::<&str>()
            .map(|text| (*text).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string())
    } else {
        failure.to_string()
    };
    tracing::error!(model = %model, step, %reason, "the provider panicked");
    EmbeddingError::Inference(format!(
        "the provider's {step} panicked (see the service log)"
    ))
}

/// A job's place in the queue: its semaphore permit and its share of the work estimate,
/// both given back when the job leaves the queue (for a run, or dropped).
#[derive(Debug)]
struct Place {
    _permit: OwnedSemaphorePermit,
    reservation: Reservation,
}

/// One queued request.
#[derive(Debug)]
struct Job {
    tokenized: TokenizedRequest,
    /// Padded tokens of the request planned alone.
    padded: usize,
    /// `None` once the job has left the queue.
    place: Option<Place>,
    enqueued: Instant,
    reply: oneshot::Sender<Result<EmbedResponse>>,
    /// The caller's request timings (queue and inference time are filled in here).
    timings: Option<Timings>,
}

/// A request taken into a batch: its encodings, the vectors its texts got so far, and its
/// reply until it is answered.
struct Member {
    tokenized: TokenizedRequest,
    vectors: Vec<Option<Vec<f32>>>,
    missing: usize,
    reply: Option<oneshot::Sender<Result<EmbedResponse>>>,
    /// The caller's timings, and when the request queued until its first run starts.
    timings: Option<Timings>,
    waiting_since: Option<Instant>,
}

impl Member {
    fn new(job: Job) -> Self {
        let count = job.tokenized.len();
        Self {
            tokenized: job.tokenized,
            vectors: vec![None; count],
            missing: count,
            reply: Some(job.reply),
            timings: job.timings,
            waiting_since: Some(job.enqueued),
        }
    }

    /// A run holding texts of this request starts at `now`: the first one ends its queue time.
    fn run_starts(&mut self, now: Instant) {
        if let Some(enqueued) = self.waiting_since.take()
            && let Some(timings) = &self.timings
        {
            timings.record_queue(now.saturating_duration_since(enqueued));
        }
    }

    /// A run holding texts of this request took `elapsed` (its inference time adds up runs).
    fn run_took(&self, elapsed: Duration) {
        if let Some(timings) = &self.timings {
            timings.record_inference(elapsed);
        }
    }

    /// Still waiting for its vectors and its caller still there.
    fn wanted(&self) -> bool {
        self.reply.as_ref().is_some_and(|reply| !reply.is_closed())
    }

    fn answer(&mut self, result: Result<EmbedResponse>) {
        if let Some(reply) = self.reply.take() {
            // The caller may have gone (timeout, closed connection): nobody is left to tell.
            let _ = reply.send(result);
        }
    }

    /// Stores the vector of text `index`; answers once the last one is in.
    fn store(&mut self, index: usize, vector: Vec<f32>) {
        if let Some(slot) = self.vectors.get_mut(index)
            && slot.replace(vector).is_none()
        {
            self.missing -= 1;
        }
        if self.missing == 0 && self.reply.is_some() {
            let raw: Vec<Vec<f32>> = self.vectors.iter_mut().filter_map(Option::take).collect();
            let result =
                pipeline::finish(raw, self.tokenized.token_counts(), self.tokenized.output);
            self.answer(result);
        }
    }
}

/// The batcher task: owns the queue and calls the provider.
struct Worker {
    model: String,
    provider: Arc<dyn EmbeddingProvider>,
    config: BatcherConfig,
    observer: Arc<dyn BatchObserver>,
    admission: Admission,
    receiver: mpsc::UnboundedReceiver<Job>,
    /// Jobs taken off the channel but not yet run, oldest first.
    waiting: VecDeque<Job>,
    /// The channel is closed: run what is left, then stop.
    closed: bool,
}

impl Worker {
    async fn run(mut self) {
        loop {
            if self.waiting.is_empty() {
                if self.closed {
                    return;
                }
                match self.receiver.recv().await {
                    Some(job) => self.waiting.push_back(job),
                    None => return,
                }
            }
            let batch = self.next_batch().await;
            if !batch.is_empty() {
                self.execute(batch).await;
            }
        }
    }

    /// Waits until the oldest job's batch is full or its wait is over, then takes the batch
    /// off the queue. Empty when every waiting job was cancelled.
    async fn next_batch(&mut self) -> Vec<Job> {
        loop {
            self.receive_ready();
            // Work whose caller has gone is never started (its place is given back).
            self.waiting.retain(|job| !job.reply.is_closed());
            let Some(oldest) = self.waiting.front() else {
                return Vec::new();
            };
            let deadline = oldest.enqueued + self.config.max_wait;
            let (members, full) = self.plan();
            if full || self.closed || Instant::now() >= deadline {
                return self.take(&members);
            }
            match tokio::time::timeout_at(deadline, self.receiver.recv()).await {
                Ok(Some(job)) => self.waiting.push_back(job),
                Ok(None) => self.closed = true,
                Err(_elapsed) => {}
            }
        }
    }

    /// Moves every job already sent into `waiting`.
    fn receive_ready(&mut self) {
        loop {
            match self.receiver.try_recv() {
                Ok(job) => self.waiting.push_back(job),
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }

    /// Positions in `waiting` of the oldest job and the later jobs that join its batch, in
    /// arrival order, and whether that batch is full (waiting longer cannot add to it). A
    /// batch holds at most `max_batch_size` texts and `max_batch_tokens` padded tokens (its
    /// requests planned alone), except that the oldest job is always taken.
    fn plan(&self) -> (Vec<usize>, bool) {
        let Some(oldest) = self.waiting.front() else {
            return (Vec::new(), false);
        };
        let mut members = vec![0];
        if !self.config.dynamic {
            return (members, true);
        }
        let mut texts = oldest.tokenized.len();
        let mut tokens = oldest.padded;
        let limits_reached = |texts: usize, tokens: usize| {
            texts >= self.config.max_batch_size || tokens >= self.config.max_batch_tokens
        };
        let mut full = limits_reached(texts, tokens);
        for (position, job) in self.waiting.iter().enumerate().skip(1) {
            if full {
                break;
            }
            let more_texts = texts + job.tokenized.len();
            let more_tokens = tokens + job.padded;
            if more_texts > self.config.max_batch_size || more_tokens > self.config.max_batch_tokens
            {
                // Keep arrival order: this one opens the next batch.
                full = true;
                break;
            }
            members.push(position);
            texts = more_texts;
            tokens = more_tokens;
            full = limits_reached(texts, tokens);
        }
        (members, full)
    }

    /// Removes the jobs at `members` (ascending positions) from `waiting`.
    fn take(&mut self, members: &[usize]) -> Vec<Job> {
        let mut batch = Vec::with_capacity(members.len());
        let mut rest = VecDeque::with_capacity(self.waiting.len() - members.len());
        let mut members = members.iter().peekable();
        for (position, job) in self.waiting.drain(..).enumerate() {
            if members.next_if_eq(&&position).is_some() {
                batch.push(job);
            } else {
                rest.push_back(job);
            }
        }
        self.waiting = rest;
        batch
    }

    /// Plans the batch's texts into model runs (least padding), runs them one after another
    /// and answers each request as soon as its last text has run.
    async fn execute(&self, jobs: Vec<Job>) {
        let mut reservations = Vec::with_capacity(jobs.len());
        let mut members: Vec<Member> = jobs
            .into_iter()
            .map(|mut job| {
                // The job leaves the queue: its place goes back, its estimate moves to the
                // batch in flight.
                if let Some(place) = job.place.take() {
                    reservations.push(place.reservation);
                }
                Member::new(job)
            })
            .collect();
        // Every text of the batch, as (member, index in its request), and its length.
        let texts: Vec<(usize, usize)> = members
            .iter()
            .enumerate()
            .flat_map(|(member, m)| (0..m.tokenized.len()).map(move |index| (member, index)))
            .collect();
        let lengths: Vec<usize> = texts
            .iter()
            .map(|&(member, index)| members[member].tokenized.encodings[index].len())
            .collect();
        let runs = plan_runs(
            &lengths,
            self.config.max_batch_size,
            self.config.max_batch_tokens,
        );
        let shapes: Vec<Vec<usize>> = runs
            .iter()
            .map(|run| run.iter().map(|&text| lengths[text]).collect())
            .collect();
        let mut in_flight = self
            .admission
            .start_batch(self.admission.run_cost(&shapes), reservations);
        // Oldest request first (the planner orders by length): a request finishes no later
        // than admission estimated, behind the work that was ahead of it, whatever joined
        // its batch after it.
        let mut runs = runs;
        runs.sort_by_key(|run| run.iter().map(|&text| texts[text].0).min());
        let mut runs: VecDeque<Vec<usize>> = runs.into();
        while let Some(run) = runs.pop_front() {
            let planned = shape(&lengths, &run);
            // Texts of requests already answered (failed) or whose caller has gone are
            // dropped before the run starts.
            let live: Vec<usize> = run
                .into_iter()
                .filter(|&text| members[texts[text].0].wanted())
                .collect();
            if live.is_empty() {
                in_flight.ran(planned.0, planned.1, Duration::ZERO, false);
                continue;
            }
            let outcome = self
                .run_once(&mut members, &texts, &live, planned, &mut in_flight)
                .await;
            match outcome {
                Ok(vectors) => {
                    for (&text, vector) in live.iter().zip(vectors) {
                        let (member, index) = texts[text];
                        members[member].store(index, vector);
                    }
                }
                Err(error) => {
                    for retry in self.after_failure(&mut members, &texts, live, error) {
                        runs.push_front(retry);
                    }
                }
            }
        }
        // Every text has run or its request was answered; a member still unanswered lost
        // its caller.
        drop(in_flight);
    }

    /// One provider run over the texts `live` of the batch.
    async fn run_once(
        &self,
        members: &mut [Member],
        texts: &[(usize, usize)],
        live: &[usize],
        planned: (usize, usize),
        in_flight: &mut InFlight,
    ) -> Result<Vec<Vec<f32>>> {
        let batch: Vec<Encoding> = live
            .iter()
            .map(|&text| {
                let (member, index) = texts[text];
                members[member].tokenized.encodings[index].clone()
            })
            .collect();
        let tokens: usize = batch.iter().map(Encoding::len).sum();
        let count = batch.len();
        let owners = distinct_members(texts, live);
        let requests = owners.len();
        let started = Instant::now();
        for &owner in &owners {
            members[owner].run_starts(started);
        }
        let provider = Arc::clone(&self.provider);
        let outcome = tokio::spawn(async move { provider.run(batch).await })
            .await
            .unwrap_or_else(|failure| Err(provider_failure(&self.model, "model run", failure)))
            .and_then(|vectors| {
                if vectors.len() == count {
                    Ok(vectors)
                } else {
                    Err(EmbeddingError::Inference(format!(
                        "the provider returned {} vectors for {count} texts",
                        vectors.len()
                    )))
                }
            });
        let elapsed = started.elapsed();
        for &owner in &owners {
            members[owner].run_took(elapsed);
        }
        let longest = live
            .iter()
            .map(|&text| {
                let (member, index) = texts[text];
                members[member].tokenized.encodings[index].len()
            })
            .max()
            .unwrap_or(planned.1);
        in_flight.ran(count, longest, elapsed, outcome.is_ok());
        self.observer.batch_ran(&BatchReport {
            model: &self.model,
            requests,
            texts: count,
            tokens: if outcome.is_ok() { tokens } else { 0 },
            elapsed,
            succeeded: outcome.is_ok(),
        });
        tracing::debug!(
            model = %self.model,
            requests,
            batch_size = count,
            tokens,
            padded_tokens = planned.0 * planned.1,
            elapsed_ms = elapsed.as_secs_f64() * 1e3,
            succeeded = outcome.is_ok(),
            "model run"
        );
        outcome
    }

    /// After a failed run over `live`: fails the request at fault and returns the runs to
    /// try again. A run the provider says failed on one text (an over-long one) fails that
    /// text's request, naming the text's index in its own request, and the others run again
    /// together; otherwise a run of one request fails that request, and a shared run runs
    /// each of its requests again alone.
    fn after_failure(
        &self,
        members: &mut [Member],
        texts: &[(usize, usize)],
        live: Vec<usize>,
        error: EmbeddingError,
    ) -> Vec<Vec<usize>> {
        if let EmbeddingError::TextTooLong {
            index,
            tokens,
            max_tokens,
        } = error
            && let Some(&text) = live.get(index)
        {
            let (culprit, local) = texts[text];
            members[culprit].answer(Err(EmbeddingError::TextTooLong {
                index: local,
                tokens,
                max_tokens,
            }));
            let rest: Vec<usize> = live
                .into_iter()
                .filter(|&text| texts[text].0 != culprit)
                .collect();
            return if rest.is_empty() {
                Vec::new()
            } else {
                vec![rest]
            };
        }
        let owners = distinct_members(texts, &live);
        if let [only] = owners.as_slice() {
            members[*only].answer(Err(error));
            return Vec::new();
        }
        tracing::warn!(
            model = %self.model,
            requests = owners.len(),
            %error,
            "shared run failed; running its requests one by one"
        );
        owners
            .iter()
            .rev()
            .map(|&owner| {
                live.iter()
                    .copied()
                    .filter(|&text| texts[text].0 == owner)
                    .collect()
            })
            .collect()
    }
}

/// The members (requests) with texts among `live`, in order of first appearance.
fn distinct_members(texts: &[(usize, usize)], live: &[usize]) -> Vec<usize> {
    let mut owners: Vec<usize> = Vec::new();
    for &text in live {
        let owner = texts[text].0;
        if !owners.contains(&owner) {
            owners.push(owner);
        }
    }
    owners
}

/// The shape of one run: its texts and its longest text (the padded length).
fn shape(lengths: &[usize], run: &[usize]) -> (usize, usize) {
    let longest = run.iter().map(|&text| lengths[text]).max().unwrap_or(0);
    (run.len(), longest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use akidb_embedding_core::Truncation;
    use akidb_embedding_mock::{FailureMode, MockEmbeddingProvider};

    fn config(dynamic: bool) -> BatcherConfig {
        BatcherConfig {
            max_batch_size: 32,
            max_batch_tokens: 16_384,
            max_request_tokens: 65_536,
            max_wait: Duration::from_millis(20),
            queue_capacity: 64,
            tokenization_workers: 2,
            request_timeout: Duration::from_secs(30),
            dynamic,
        }
    }

    fn spawn(mock: &Arc<MockEmbeddingProvider>, config: BatcherConfig) -> Arc<Batcher> {
        let provider: Arc<dyn EmbeddingProvider> = mock.clone();
        Arc::new(Batcher::spawn(provider, config, Arc::new(())))
    }

    /// On tokio's paused clock the mock's latency and the batcher's wait take exactly their
    /// configured time, so the figures are exact whatever the machine's load.
    #[tokio::test(start_paused = true)]
    async fn the_callers_timings_are_the_batchers_own_measurements() {
        let mock = Arc::new(MockEmbeddingProvider::new(8).with_latency(Duration::from_millis(40)));
        // A lone request waits its max_wait (20 ms) for company, then runs for 40 ms.
        let batcher = spawn(&mock, config(true));
        let timings = Timings::default();
        let started = Instant::now();
        let response = crate::engine::timings::with_timings(
            timings.clone(),
            batcher.embed(EmbedRequest::new(["one two three", "four"])),
        )
        .await
        .unwrap();
        let total = started.elapsed();
        assert!(timings.embedded());
        assert_eq!(timings.tokens(), response.total_tokens() as u64);
        assert_eq!(
            timings.inference(),
            Duration::from_millis(40),
            "{timings:?}"
        );
        assert_eq!(timings.queue(), Duration::from_millis(20), "{timings:?}");
        assert_eq!(timings.tokenization(), Duration::ZERO, "{timings:?}");
        assert_eq!(
            timings.queue() + timings.tokenization() + timings.inference(),
            total,
            "{timings:?}: the stages are the whole request"
        );
        // Outside a request (a library caller) nothing is recorded and nothing fails.
        assert!(batcher.embed(EmbedRequest::new(["five"])).await.is_ok());
    }

    async fn all<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap());
        }
        out
    }

    /// Yields to the batcher task until `condition` holds (panics after 10 s).
    async fn settle(condition: impl Fn() -> bool) {
        let started = std::time::Instant::now();
        while !condition() {
            assert!(started.elapsed() < Duration::from_secs(10), "never settled");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn requests() -> Vec<EmbedRequest> {
        vec![
            EmbedRequest::new(["alpha", "beta"]),
            EmbedRequest::new(["gamma"]).with_normalize(false),
            EmbedRequest::new(["delta"]).with_dimensions(16),
            EmbedRequest::new(["epsilon", "zeta", "eta"]).with_dimensions(8),
        ]
    }

    #[tokio::test]
    async fn merges_requests_with_different_options_tokenising_each_text_once() {
        let mock = Arc::new(MockEmbeddingProvider::new(32));
        let batcher = spawn(&mock, config(true));
        let tasks = requests()
            .into_iter()
            .map(|request| {
                let batcher = Arc::clone(&batcher);
                tokio::spawn(async move { batcher.embed(request).await })
            })
            .collect();
        let merged = all(tasks).await;
        assert_eq!(mock.batch_sizes(), vec![7], "one run for all four requests");
        assert_eq!(
            mock.tokenizer_calls(),
            7,
            "one tokenisation per text: the token limit, admission and the run share it"
        );
        for (request, result) in requests().into_iter().zip(merged) {
            let alone = mock.embed(request).await.unwrap();
            assert_eq!(result.unwrap(), alone);
        }
    }

    #[tokio::test]
    async fn requests_with_different_prompts_and_truncation_share_a_run() {
        let mock = Arc::new(MockEmbeddingProvider::new(8));
        let batcher = spawn(&mock, config(true));
        let requests = || {
            [
                EmbedRequest::new(["a"]).with_prompt("query"),
                EmbedRequest::new(["b"]).with_prompt("document"),
                EmbedRequest::new(["c"]),
                EmbedRequest::new(["d"])
                    .with_prompt("query")
                    .with_truncation(Truncation::Error),
            ]
        };
        let tasks = requests()
            .into_iter()
            .map(|request| {
                let batcher = Arc::clone(&batcher);
                tokio::spawn(async move { batcher.embed(request).await.unwrap() })
            })
            .collect();
        let merged = all(tasks).await;
        assert_eq!(
            mock.batch_sizes(),
            vec![4],
            "the encodings carry their prompts: one run"
        );
        for (request, response) in requests().into_iter().zip(merged) {
            assert_eq!(response, mock.embed(request).await.unwrap());
        }
    }

    /// The one test of a failure inside a merged run (the service's fault tests check the
    /// status it maps to): the run fails, each member re-runs alone, the failing one gets its
    /// error and the others exactly the vectors they get alone. The paused clock makes the
    /// merge certain: the three requests are queued before the batcher's wait ends.
    #[tokio::test(start_paused = true)]
    async fn a_failing_member_gets_its_error_and_the_others_their_vectors() {
        let mock = Arc::new(
            MockEmbeddingProvider::new(8)
                .with_failures(FailureMode::WhenTextContains("boom".into())),
        );
        let batcher = spawn(&mock, config(true));
        let texts = ["one", "boom", "three"];
        let tasks = texts
            .into_iter()
            .map(|text| {
                let batcher = Arc::clone(&batcher);
                tokio::spawn(async move { batcher.embed(EmbedRequest::new([text])).await })
            })
            .collect();
        let results = all(tasks).await;
        assert_eq!(
            mock.batch_sizes(),
            vec![3, 1, 1, 1],
            "one merged run, then each member alone"
        );
        assert!(
            matches!(
                &results[1],
                Err(EngineError::Embedding(EmbeddingError::Inference(message)))
                    if message.contains("injected failure")
            ),
            "{:?}",
            results[1]
        );
        for index in [0, 2] {
            let alone = mock.embed(EmbedRequest::new([texts[index]])).await.unwrap();
            assert_eq!(results[index].as_ref().unwrap(), &alone, "{}", texts[index]);
        }
    }

    #[tokio::test]
    async fn batches_respect_the_size_limit_and_static_mode_runs_requests_alone() {
        let mock = Arc::new(MockEmbeddingProvider::new(8));
        let small = BatcherConfig {
            max_batch_size: 4,
            ..config(true)
        };
        let batcher = spawn(&mock, small);
        let tasks = (0..6)
            .map(|i| {
                let batcher = Arc::clone(&batcher);
                tokio::spawn(async move {
                    batcher
                        .embed(EmbedRequest::new([format!("t{i}"), format!("u{i}")]))
                        .await
                })
            })
            .collect();
        assert!(all(tasks).await.iter().all(Result::is_ok));
        assert!(mock.batch_sizes().iter().all(|&size| size <= 4));
        assert!(mock.batch_sizes().len() >= 3);

        let mock = Arc::new(MockEmbeddingProvider::new(8));
        let batcher = spawn(&mock, config(false));
        let tasks = (0..5)
            .map(|i| {
                let batcher = Arc::clone(&batcher);
                tokio::spawn(
                    async move { batcher.embed(EmbedRequest::new([format!("t{i}")])).await },
                )
            })
            .collect();
        assert!(all(tasks).await.iter().all(Result::is_ok));
        assert_eq!(mock.batch_sizes(), vec![1; 5]);
    }

    /// Three strict requests, the middle one with an over-long second text, sent together.
    async fn strict_requests_with_one_over_long(
        provider: Arc<dyn EmbeddingProvider>,
    ) -> Vec<std::result::Result<EmbedResponse, EngineError>> {
        let wait = BatcherConfig {
            max_wait: Duration::from_millis(200),
            ..config(true)
        };
        let batcher = Arc::new(Batcher::spawn(provider, wait, Arc::new(())));
        // 6, 3 + 8 and 6 tokens: planned as one run of four texts.
        let texts: [&[&str]; 3] = [
            &["one two three four"],
            &["ok", "a b c d e f"],
            &["five six seven eight"],
        ];
        let tasks = texts
            .iter()
            .map(|texts| {
                let batcher = Arc::clone(&batcher);
                let request =
                    EmbedRequest::new(texts.iter().copied()).with_truncation(Truncation::Error);
                tokio::spawn(async move { batcher.embed(request).await })
            })
            .collect();
        let results = all(tasks).await;
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        assert!(
            matches!(
                results[1],
                Err(EngineError::Embedding(EmbeddingError::TextTooLong {
                    index: 1,
                    ..
                }))
            ),
            "the index is the request's own: {:?}",
            results[1]
        );
        results
    }

    #[tokio::test]
    async fn an_over_long_strict_text_is_refused_before_it_queues() {
        let mock = Arc::new(MockEmbeddingProvider::new(8).with_max_tokens(6));
        strict_requests_with_one_over_long(mock.clone()).await;
        assert_eq!(
            mock.batch_sizes(),
            vec![2],
            "the over-long request never reached the provider; the other two ran together"
        );
    }

    #[tokio::test]
    async fn an_over_long_text_found_only_by_a_merged_run_fails_its_request_only() {
        let mock = Arc::new(
            MockEmbeddingProvider::new(8)
                .with_max_tokens(6)
                .with_failures(FailureMode::UnderCountTokens),
        );
        strict_requests_with_one_over_long(mock.clone()).await;
        assert_eq!(mock.batch_sizes(), vec![4, 2], "the other two ran together");
    }

    #[tokio::test]
    async fn a_panicking_provider_fails_its_run_but_not_the_batcher() {
        let mock = Arc::new(
            MockEmbeddingProvider::new(8)
                .with_failures(FailureMode::PanicWhenTextContains("panic".into())),
        );
        let batcher = spawn(&mock, config(true));
        let failed = batcher.embed(EmbedRequest::new(["panic"])).await;
        assert!(
            matches!(failed, Err(EngineError::Embedding(EmbeddingError::Inference(ref message))) if message.contains("panicked")),
            "{failed:?}"
        );
        assert!(batcher.is_running());
        assert!(batcher.embed(EmbedRequest::new(["calm"])).await.is_ok());
    }

    #[tokio::test]
    async fn requests_over_the_token_limit_are_refused_before_the_model_runs() {
        let mock = Arc::new(MockEmbeddingProvider::new(8));
        let limited = BatcherConfig {
            max_request_tokens: 10,
            ..config(true)
        };
        let batcher = spawn(&mock, limited);
        // Words plus two special tokens per text: 3 + 3 + 4 = 10, exactly the limit.
        let at_limit = EmbedRequest::new(["a", "b", "c d"]);
        assert_eq!(batcher.embed(at_limit).await.unwrap().total_tokens(), 10);
        let over = EmbedRequest::new(["a", "b", "c d e"]);
        assert_eq!(
            batcher.embed(over).await,
            Err(EngineError::Embedding(EmbeddingError::TooManyTokens {
                tokens: 11,
                limit: 10
            }))
        );
        assert_eq!(
            mock.batch_sizes(),
            vec![3],
            "the provider never ran the refused request"
        );
        assert_eq!(batcher.queue_depth(), 0);
    }

    #[tokio::test]
    async fn invalid_requests_are_refused_before_the_queue() {
        let mock = Arc::new(MockEmbeddingProvider::new(8));
        let batcher = spawn(&mock, config(true));
        let empty = batcher.embed(EmbedRequest::new(Vec::<String>::new())).await;
        assert_eq!(
            empty,
            Err(EngineError::Embedding(EmbeddingError::EmptyBatch))
        );
        let prompt = batcher
            .embed(EmbedRequest::new(["a"]).with_prompt("nope"))
            .await;
        assert!(matches!(
            prompt,
            Err(EngineError::Embedding(EmbeddingError::UnknownPrompt { .. }))
        ));
        let dimension = batcher
            .embed(EmbedRequest::new(["a"]).with_dimensions(3))
            .await;
        assert!(matches!(
            dimension,
            Err(EngineError::Embedding(
                EmbeddingError::UnsupportedDimension { .. }
            ))
        ));
        assert_eq!(mock.calls(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_cancelled_requests_free_their_place() {
        let mock = Arc::new(MockEmbeddingProvider::new(8).with_latency(Duration::from_millis(200)));
        let tight = BatcherConfig {
            queue_capacity: 1,
            max_wait: Duration::ZERO,
            ..config(true)
        };
        let batcher = spawn(&mock, tight);
        let running = {
            let batcher = Arc::clone(&batcher);
            tokio::spawn(async move { batcher.embed(EmbedRequest::new(["first"])).await })
        };
        // Let the first request leave the queue and start its run.
        settle(|| mock.calls() == 1).await;
        let waiting = {
            let batcher = Arc::clone(&batcher);
            tokio::spawn(async move { batcher.embed(EmbedRequest::new(["second"])).await })
        };
        settle(|| batcher.queue_depth() == 1).await;
        let refused = batcher.embed(EmbedRequest::new(["third"])).await;
        assert!(matches!(
            refused,
            Err(EngineError::QueueFull { capacity: 1, .. })
        ));
        waiting.abort();
        assert!(running.await.unwrap().is_ok());
        settle(|| batcher.queue_depth() == 0).await;
        assert_eq!(
            mock.batch_sizes(),
            vec![1],
            "the cancelled request never ran"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn admission_refuses_at_once_what_cannot_finish_and_serves_what_can() {
        // 1 ms per padded token: calibration learns exactly that (the clock is tokio's, paused).
        let mock = Arc::new(
            MockEmbeddingProvider::new(8).with_latency_per_token(Duration::from_millis(1)),
        );
        let batcher = spawn(
            &mock,
            BatcherConfig {
                request_timeout: Duration::from_secs(2),
                ..config(true)
            },
        );
        batcher.calibrate().await.unwrap();
        let model = batcher.admission().cost_model().unwrap();
        assert!((model.per_token - 0.001).abs() < 1e-6, "{model:?}");
        assert!(model.per_token_per_position.abs() < 1e-9, "{model:?}");
        let calibration_runs = mock.calls();
        assert_eq!(calibration_runs, CALIBRATION_RUNS as u64);
        let words = |count: usize| vec!["word"; count].join(" ");
        // Its own 52 ms cannot fit 90 % of a 40 ms deadline, even with nothing ahead.
        let alone = batcher
            .embed_before(
                EmbedRequest::new([words(50)]),
                Some(Instant::now() + Duration::from_millis(40)),
            )
            .await;
        assert!(
            matches!(alone, Err(EngineError::Shed { ref shed, .. }) if shed.ahead.is_zero()),
            "{alone:?}"
        );
        // Four texts at the cap (4 × 512 ms) never fit the service's 2 s deadline.
        let never = batcher.embed(EmbedRequest::new(vec![words(600); 4])).await;
        assert!(
            matches!(never, Err(EngineError::NeverFits { .. })),
            "{never:?}"
        );
        // Behind a 302 ms run, a 52 ms request cannot fit 300 ms, fits 1 s.
        let running = {
            let batcher = Arc::clone(&batcher);
            tokio::spawn(async move { batcher.embed(EmbedRequest::new([words(300)])).await })
        };
        settle(|| mock.calls() == calibration_runs + 1).await;
        let behind = batcher
            .embed_before(
                EmbedRequest::new([words(50)]),
                Some(Instant::now() + Duration::from_millis(300)),
            )
            .await;
        assert!(
            matches!(behind, Err(EngineError::Shed { ref shed, .. }) if !shed.ahead.is_zero() && shed.retry_after_secs() == 1),
            "{behind:?}"
        );
        let patient = batcher
            .embed_before(
                EmbedRequest::new([words(50)]),
                Some(Instant::now() + Duration::from_secs(1)),
            )
            .await;
        assert!(patient.is_ok(), "{patient:?}");
        assert!(running.await.unwrap().is_ok());
        assert_eq!(
            mock.calls(),
            calibration_runs + 2,
            "the refused requests never ran"
        );
        assert!(batcher.admission().is_idle());
    }

    #[tokio::test(start_paused = true)]
    async fn behind_a_busy_model_a_request_is_refused_on_its_bytes_before_it_is_tokenised() {
        let mock = Arc::new(
            MockEmbeddingProvider::new(8).with_latency_per_token(Duration::from_millis(1)),
        );
        let batcher = spawn(&mock, config(true));
        batcher.calibrate().await.unwrap();
        let calibration_runs = mock.calls();
        let words = |count: usize| vec!["word"; count].join(" ");
        let running = {
            let batcher = Arc::clone(&batcher);
            tokio::spawn(async move { batcher.embed(EmbedRequest::new([words(300)])).await })
        };
        settle(|| mock.calls() == calibration_runs + 1).await;
        let tokenised = mock.tokenizer_calls();
        // Eight texts of 3,000 bytes: even at half the tokens such bytes hold, far more than
        // 300 ms of work behind the run in progress.
        let refused = batcher
            .embed_before(
                EmbedRequest::new(vec![words(600); 8]),
                Some(Instant::now() + Duration::from_millis(300)),
            )
            .await;
        assert!(
            matches!(refused, Err(EngineError::Shed { ref shed, .. }) if !shed.own.is_zero()),
            "{refused:?}"
        );
        assert_eq!(
            mock.tokenizer_calls(),
            tokenised,
            "refused before tokenising"
        );
        assert!(running.await.unwrap().is_ok());
        assert!(batcher.admission().is_idle());
    }
}
