//! The dynamic batcher: merges concurrent requests for one model into shared provider runs.
//!
//! Knows nothing of HTTP. Each served model gets one [`Batcher`]; callers `embed` through it,
//! and a background task owns the queue:
//!
//! 1. a request is validated against the model (`validate::check_request`, the prompt name)
//!    before it enters the queue, so a bad request never reaches a shared run;
//! 2. the task takes the oldest waiting request and every later one with the same prompt and
//!    truncation policy, up to `max_batch_size` texts and `max_batch_chars` characters, waiting
//!    at most `max_wait` (counted from the oldest request's arrival) for the batch to fill;
//! 3. it asks the provider for raw vectors (no normalisation, full dimension) of all texts at
//!    once, then gives each request its own slice, finished with its own `dimensions` and
//!    `normalize` by [`vector::finish`], so requests with different options still share a run;
//! 4. when a merged run fails, each member request runs again alone: one bad request never
//!    decides the fate of the others. When the provider names the text at fault (an
//!    over-long text with `Truncation::Error`), only its request gets the error and the
//!    others run again together, so such requests cannot multiply the work of the rest. A provider that panics fails only its run (the call
//!    runs in its own task), never the batcher.
//!
//! The queue is bounded: past `queue_capacity` waiting requests, [`Batcher::embed`] fails at
//! once with [`BatchError::QueueFull`]. Requests whose caller went away (a timeout, a closed
//! connection) are dropped before they run.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use akidb_embedding_core::EmbedRequest;
//! use akidb_embedding_mock::MockEmbeddingProvider;
//! use akidb_rest::batcher::{Batcher, BatcherConfig};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let config = BatcherConfig {
//!     max_batch_size: 32,
//!     max_batch_chars: 65_536,
//!     max_request_tokens: 65_536,
//!     max_wait: Duration::from_millis(5),
//!     queue_capacity: 1024,
//!     dynamic: true,
//! };
//! let batcher = Batcher::spawn(Arc::new(MockEmbeddingProvider::new(8)), config, Arc::new(()));
//! let response = batcher.embed(EmbedRequest::new(["hello"])).await.unwrap();
//! assert_eq!(response.dimension, 8);
//! # });
//! ```

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use akidb_embedding_core::{
    EmbedRequest, EmbedResponse, EmbeddingError, EmbeddingProvider, ModelInfo, Result, validate,
    vector,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How a [`Batcher`] forms its batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatcherConfig {
    /// Most texts in one merged provider run (a single larger request still runs, alone).
    pub max_batch_size: usize,
    /// Most characters in one merged provider run (a single larger request still runs, alone).
    pub max_batch_chars: usize,
    /// Most tokens in one request, all its texts together, prompts and special tokens
    /// included: counted with [`EmbeddingProvider::token_counts`] before the request queues,
    /// and refused with [`EmbeddingError::TooManyTokens`] past it.
    pub max_request_tokens: usize,
    /// Longest the oldest waiting request waits for others to join its run.
    pub max_wait: Duration,
    /// Most requests waiting for a run; more are refused with [`BatchError::QueueFull`].
    pub queue_capacity: usize,
    /// `false`: every request runs alone (a baseline for benchmarks).
    pub dynamic: bool,
}

/// Why [`Batcher::embed`] gave no vectors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    /// The queue already holds `capacity` requests; the caller should retry shortly.
    #[error("the queue of model `{model}` is full ({capacity} requests waiting); retry shortly")]
    QueueFull {
        /// The model whose queue is full.
        model: String,
        /// The queue's capacity.
        capacity: usize,
    },
    /// The batcher's task has stopped (the service is shutting down).
    #[error("the batcher of model `{model}` has stopped")]
    Stopped {
        /// The model whose batcher stopped.
        model: String,
    },
    /// The request is invalid or the provider failed on it.
    #[error(transparent)]
    Embedding(#[from] EmbeddingError),
}

/// What a batcher tells its observer after every provider run.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchReport<'a> {
    /// The model that ran.
    pub model: &'a str,
    /// Requests merged into the run.
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

/// The handle callers embed through; the queue and the provider calls live in its task.
pub struct Batcher {
    info: ModelInfo,
    /// Also here, to count a request's tokens before it queues.
    provider: Arc<dyn EmbeddingProvider>,
    max_request_tokens: usize,
    sender: mpsc::UnboundedSender<Job>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("model", &self.info.id)
            .field("max_request_tokens", &self.max_request_tokens)
            .field("queued", &self.queue_depth())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// Starts the batcher task for `provider` on the current tokio runtime. The task ends
    /// once the handle is dropped and the requests already queued are answered.
    pub fn spawn(
        provider: Arc<dyn EmbeddingProvider>,
        config: BatcherConfig,
        observer: Arc<dyn BatchObserver>,
    ) -> Self {
        let info = provider.model_info().clone();
        let (sender, receiver) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let capacity = config.queue_capacity;
        let max_request_tokens = config.max_request_tokens;
        let worker = Worker {
            model: info.id.clone(),
            provider: Arc::clone(&provider),
            config,
            observer,
            queued: Arc::clone(&queued),
            receiver,
            waiting: VecDeque::new(),
            closed: false,
        };
        tokio::spawn(worker.run());
        Self {
            info,
            provider,
            max_request_tokens,
            sender,
            queued,
            capacity,
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

    /// Requests waiting for a provider run now.
    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Validates `request`, queues it and waits for its vectors.
    ///
    /// The vectors are those `provider.embed(request)` would give (the provider may pad a
    /// merged batch differently, so a real model can differ in the last float bits).
    pub async fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse, BatchError> {
        let dimension = validate::check_request(&request, &self.info)?;
        validate::resolve_prompt(
            request.prompt_name.as_deref(),
            |name| self.info.prompts.iter().any(|p| p == name).then_some(""),
            &self.info.prompts,
        )?;
        let timings = crate::observability::Timings::current();
        let tokenizing = Instant::now();
        let counts = self.provider.token_counts(&request).await?;
        if let Some(timings) = &timings {
            timings.record_tokenization(tokenizing.elapsed(), counts.iter().sum());
        }
        validate::check_total_tokens(&counts, self.max_request_tokens)?;
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued < self.capacity).then_some(queued + 1)
            })
            .map_err(|_| BatchError::QueueFull {
                model: self.info.id.clone(),
                capacity: self.capacity,
            })?;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            chars: request.texts.iter().map(|text| text.chars().count()).sum(),
            request,
            dimension,
            enqueued: Instant::now(),
            reply,
            timings,
        };
        let stopped = || BatchError::Stopped {
            model: self.info.id.clone(),
        };
        if self.sender.send(job).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(stopped());
        }
        Ok(answer.await.map_err(|_| stopped())??)
    }
}

/// One queued request.
#[derive(Debug)]
struct Job {
    request: EmbedRequest,
    /// The output dimension `check_request` resolved.
    dimension: usize,
    chars: usize,
    enqueued: Instant,
    reply: oneshot::Sender<Result<EmbedResponse>>,
    /// The caller's request timings (queue and inference time are filled in here).
    timings: Option<crate::observability::Timings>,
}

impl Job {
    /// Jobs may share a provider run when the provider would treat their texts alike.
    fn can_merge_with(&self, other: &Job) -> bool {
        self.request.prompt_name == other.request.prompt_name
            && self.request.truncation == other.request.truncation
    }

    fn answer(self, result: Result<EmbedResponse>) {
        // The caller may have gone (timeout, closed connection): nobody is left to tell.
        let _ = self.reply.send(result);
    }
}

/// The job holding text `index` of a merged run, and that text's index within the job.
fn locate_text(jobs: &[Job], index: usize) -> Option<(usize, usize)> {
    let mut first = 0;
    for (position, job) in jobs.iter().enumerate() {
        let count = job.request.texts.len();
        if index < first + count {
            return Some((position, index - first));
        }
        first += count;
    }
    None
}

/// The batcher task: owns the queue and calls the provider.
struct Worker {
    model: String,
    provider: Arc<dyn EmbeddingProvider>,
    config: BatcherConfig,
    observer: Arc<dyn BatchObserver>,
    queued: Arc<AtomicUsize>,
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
            self.drop_cancelled();
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

    fn drop_cancelled(&mut self) {
        let before = self.waiting.len();
        self.waiting.retain(|job| !job.reply.is_closed());
        let dropped = before - self.waiting.len();
        if dropped > 0 {
            self.queued.fetch_sub(dropped, Ordering::AcqRel);
        }
    }

    /// Positions in `waiting` of the oldest job and the later jobs that can join its run,
    /// oldest first, and whether that run is full (waiting longer cannot add to it).
    fn plan(&self) -> (Vec<usize>, bool) {
        let Some(oldest) = self.waiting.front() else {
            return (Vec::new(), false);
        };
        let mut members = vec![0];
        if !self.config.dynamic {
            return (members, true);
        }
        let mut texts = oldest.request.texts.len();
        let mut chars = oldest.chars;
        let limits_reached = |texts: usize, chars: usize| {
            texts >= self.config.max_batch_size || chars >= self.config.max_batch_chars
        };
        let mut full = limits_reached(texts, chars);
        for (position, job) in self.waiting.iter().enumerate().skip(1) {
            if full {
                break;
            }
            if !job.can_merge_with(oldest) {
                continue;
            }
            let more_texts = texts + job.request.texts.len();
            let more_chars = chars + job.chars;
            if more_texts > self.config.max_batch_size || more_chars > self.config.max_batch_chars {
                // Keep arrival order among compatible jobs: this one opens the next run.
                full = true;
                break;
            }
            members.push(position);
            texts = more_texts;
            chars = more_chars;
            full = limits_reached(texts, chars);
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
        self.queued.fetch_sub(batch.len(), Ordering::AcqRel);
        batch
    }

    /// Runs `jobs` as one provider call and answers each; on failure of a merged run, fails
    /// the job the error names, if it names one, and runs the rest together again; else runs
    /// each job alone.
    async fn execute(&self, mut jobs: Vec<Job>) {
        match self.run_together(&jobs).await {
            Ok(results) => {
                for (job, result) in jobs.into_iter().zip(results) {
                    job.answer(result);
                }
            }
            Err(EmbeddingError::TextTooLong {
                index,
                tokens,
                max_tokens,
            }) if jobs.len() > 1
                && let Some((position, local)) = locate_text(&jobs, index) =>
            {
                let culprit = jobs.remove(position);
                culprit.answer(Err(EmbeddingError::TextTooLong {
                    index: local,
                    tokens,
                    max_tokens,
                }));
                Box::pin(self.execute(jobs)).await;
            }
            Err(error) if jobs.len() > 1 => {
                tracing::warn!(
                    model = %self.model,
                    requests = jobs.len(),
                    %error,
                    "merged run failed; running its requests one by one"
                );
                for job in jobs {
                    Box::pin(self.execute(vec![job])).await;
                }
            }
            Err(error) => {
                for job in jobs {
                    job.answer(Err(error.clone()));
                }
            }
        }
    }

    /// Calls the provider in a task of its own, so that a panic in it fails this run only
    /// (as an [`EmbeddingError::Inference`]) instead of ending the batcher.
    async fn call_provider(&self, request: EmbedRequest) -> Result<EmbedResponse> {
        let provider = Arc::clone(&self.provider);
        match tokio::spawn(async move { provider.embed(request).await }).await {
            Ok(outcome) => outcome,
            Err(failure) => {
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
                tracing::error!(model = %self.model, %reason, "the provider panicked");
                Err(EmbeddingError::Inference(
                    "the provider panicked (see the service log)".to_string(),
                ))
            }
        }
    }

    /// One provider call for all texts of `jobs`; gives back each job's own response, or the
    /// error of the call as a whole.
    async fn run_together(&self, jobs: &[Job]) -> Result<Vec<Result<EmbedResponse>>> {
        let Some(first) = jobs.first() else {
            return Ok(Vec::new());
        };
        let texts: Vec<String> = jobs
            .iter()
            .flat_map(|job| job.request.texts.iter().cloned())
            .collect();
        let total = texts.len();
        let request = EmbedRequest {
            texts,
            normalize: false,
            prompt_name: first.request.prompt_name.clone(),
            dimensions: None,
            truncation: first.request.truncation,
        };
        let started = Instant::now();
        let outcome = self.call_provider(request).await.and_then(|response| {
            if response.embeddings.len() == total && response.token_counts.len() == total {
                Ok(response)
            } else {
                Err(EmbeddingError::Inference(format!(
                    "the provider returned {} vectors and {} token counts for {total} texts",
                    response.embeddings.len(),
                    response.token_counts.len()
                )))
            }
        });
        let elapsed = started.elapsed();
        for job in jobs {
            if let Some(timings) = &job.timings {
                timings.record_queue(started.duration_since(job.enqueued));
                timings.record_inference(elapsed);
            }
        }
        let tokens = outcome.as_ref().map_or(0, |response| response.total_tokens);
        self.observer.batch_ran(&BatchReport {
            model: &self.model,
            requests: jobs.len(),
            texts: total,
            tokens,
            elapsed,
            succeeded: outcome.is_ok(),
        });
        tracing::debug!(
            model = %self.model,
            requests = jobs.len(),
            batch_size = total,
            tokens,
            elapsed_ms = elapsed.as_secs_f64() * 1e3,
            "provider run"
        );
        let response = outcome?;
        let mut vectors = response.embeddings.into_iter();
        let mut token_counts = response.token_counts.into_iter();
        Ok(jobs
            .iter()
            .map(|job| {
                let count = job.request.texts.len();
                let raw: Vec<Vec<f32>> = vectors.by_ref().take(count).collect();
                let tokens: Vec<usize> = token_counts.by_ref().take(count).collect();
                let embeddings = raw
                    .into_iter()
                    .enumerate()
                    .map(|(index, values)| {
                        vector::finish(values, job.dimension, job.request.normalize, index)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(EmbedResponse::new(embeddings, job.dimension, tokens))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use akidb_embedding_core::Truncation;
    use akidb_embedding_mock::{FailureMode, MockEmbeddingProvider};

    fn config(dynamic: bool) -> BatcherConfig {
        BatcherConfig {
            max_batch_size: 32,
            max_batch_chars: 65_536,
            max_request_tokens: 65_536,
            max_wait: Duration::from_millis(20),
            queue_capacity: 64,
            dynamic,
        }
    }

    fn spawn(mock: &Arc<MockEmbeddingProvider>, config: BatcherConfig) -> Arc<Batcher> {
        let provider: Arc<dyn EmbeddingProvider> = mock.clone();
        Arc::new(Batcher::spawn(provider, config, Arc::new(())))
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
    async fn merges_requests_with_different_options_and_splits_them_back_exactly() {
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
        for (request, result) in requests().into_iter().zip(merged) {
            let alone = mock.embed(request).await.unwrap();
            assert_eq!(result.unwrap(), alone);
        }
    }

    #[tokio::test]
    async fn different_prompts_or_truncation_never_share_a_run() {
        let mock = Arc::new(MockEmbeddingProvider::new(8));
        let batcher = spawn(&mock, config(true));
        let tasks = [
            EmbedRequest::new(["a"]).with_prompt("query"),
            EmbedRequest::new(["b"]).with_prompt("document"),
            EmbedRequest::new(["c"]).with_prompt("query"),
            EmbedRequest::new(["d"])
                .with_prompt("query")
                .with_truncation(Truncation::Error),
        ]
        .into_iter()
        .map(|request| {
            let batcher = Arc::clone(&batcher);
            tokio::spawn(async move { batcher.embed(request).await.unwrap() })
        })
        .collect();
        all(tasks).await;
        let mut sizes = mock.batch_sizes();
        sizes.sort_unstable();
        assert_eq!(sizes, vec![1, 1, 2]);
    }

    #[tokio::test]
    async fn a_failing_member_gets_its_error_and_the_others_their_vectors() {
        let mock = Arc::new(
            MockEmbeddingProvider::new(8)
                .with_failures(FailureMode::WhenTextContains("boom".into())),
        );
        let batcher = spawn(&mock, config(true));
        let tasks = ["one", "boom", "three"]
            .into_iter()
            .map(|text| {
                let batcher = Arc::clone(&batcher);
                tokio::spawn(async move { batcher.embed(EmbedRequest::new([text])).await })
            })
            .collect();
        let results = all(tasks).await;
        assert!(results[0].is_ok() && results[2].is_ok());
        assert!(matches!(
            results[1],
            Err(BatchError::Embedding(EmbeddingError::Inference(_)))
        ));
        assert_eq!(mock.batch_sizes(), vec![3, 1, 1, 1]);
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
    ) -> Vec<std::result::Result<EmbedResponse, BatchError>> {
        let wait = BatcherConfig {
            max_wait: Duration::from_millis(200),
            ..config(true)
        };
        let batcher = Arc::new(Batcher::spawn(provider, wait, Arc::new(())));
        let texts: [&[&str]; 3] = [
            &["one two"],
            &["ok", "a b c d e f g h i j"],
            &["three four"],
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
                Err(BatchError::Embedding(EmbeddingError::TextTooLong {
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

    /// A provider whose `token_counts` misses what `embed` refuses.
    struct UnderCounting(Arc<MockEmbeddingProvider>);

    #[async_trait::async_trait]
    impl EmbeddingProvider for UnderCounting {
        async fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse> {
            self.0.embed(request).await
        }

        async fn token_counts(&self, request: &EmbedRequest) -> Result<Vec<usize>> {
            Ok(vec![1; request.texts.len()])
        }

        fn model_info(&self) -> &ModelInfo {
            self.0.model_info()
        }

        async fn health_check(&self) -> Result<()> {
            self.0.health_check().await
        }
    }

    #[tokio::test]
    async fn an_over_long_text_found_only_by_a_merged_run_fails_its_request_only() {
        let mock = Arc::new(MockEmbeddingProvider::new(8).with_max_tokens(6));
        strict_requests_with_one_over_long(Arc::new(UnderCounting(mock.clone()))).await;
        assert_eq!(mock.batch_sizes(), vec![4, 2], "the other two ran together");
    }

    /// A provider with a bug: panics on texts containing `panic`.
    struct Panicking(MockEmbeddingProvider);

    #[async_trait::async_trait]
    impl EmbeddingProvider for Panicking {
        async fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse> {
            assert!(
                !request.texts.iter().any(|text| text.contains("panic")),
                "a provider bug"
            );
            self.0.embed(request).await
        }

        async fn token_counts(&self, request: &EmbedRequest) -> Result<Vec<usize>> {
            self.0.token_counts(request).await
        }

        fn model_info(&self) -> &ModelInfo {
            self.0.model_info()
        }

        async fn health_check(&self) -> Result<()> {
            self.0.health_check().await
        }
    }

    #[tokio::test]
    async fn a_panicking_provider_fails_its_run_but_not_the_batcher() {
        let provider: Arc<dyn EmbeddingProvider> =
            Arc::new(Panicking(MockEmbeddingProvider::new(8)));
        let batcher = Batcher::spawn(provider, config(true), Arc::new(()));
        let failed = batcher.embed(EmbedRequest::new(["panic"])).await;
        assert!(
            matches!(failed, Err(BatchError::Embedding(EmbeddingError::Inference(ref message))) if message.contains("panicked")),
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
        assert_eq!(batcher.embed(at_limit).await.unwrap().total_tokens, 10);
        let over = EmbedRequest::new(["a", "b", "c d e"]);
        assert_eq!(
            batcher.embed(over).await,
            Err(BatchError::Embedding(EmbeddingError::TooManyTokens {
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
            Err(BatchError::Embedding(EmbeddingError::EmptyBatch))
        );
        let prompt = batcher
            .embed(EmbedRequest::new(["a"]).with_prompt("nope"))
            .await;
        assert!(matches!(
            prompt,
            Err(BatchError::Embedding(EmbeddingError::UnknownPrompt { .. }))
        ));
        let dimension = batcher
            .embed(EmbedRequest::new(["a"]).with_dimensions(3))
            .await;
        assert!(matches!(
            dimension,
            Err(BatchError::Embedding(
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
            Err(BatchError::QueueFull { capacity: 1, .. })
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
}
