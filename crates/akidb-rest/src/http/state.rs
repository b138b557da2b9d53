//! What the HTTP handlers share: the edge's limits and timeouts, the API key, metrics, the
//! draining flag, and the engine once its models are loaded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use akidb_embedding_core::{EmbeddingError, EmbeddingProvider};

use super::error::ApiError;
use crate::config::{ApiKey, Config};
use crate::engine::batcher::BatchObserver;
use crate::engine::loading::LoadStatus;
use crate::engine::{Engine, EngineSettings};
use crate::metrics::Metrics;

/// Per-request limits checked at the edge, before the request reaches the engine.
///
/// There is no limit on characters: with truncation on, any text inside the body limit is
/// embedded from its first tokens (the tokenizer only ever reads a prefix of it that covers
/// the model's cap), and with truncation off an over-long text is refused from a bounded
/// prefix. Tokens per request are limited by the engine, counted from the request's encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Most texts per request.
    pub max_inputs: usize,
}

impl Limits {
    /// The limits `config` sets.
    pub fn from_config(config: &Config) -> Self {
        Self {
            max_body_bytes: config.max_body_bytes,
            max_inputs: config.max_inputs,
        }
    }

    /// Refuses (413) a request with too many texts.
    pub fn check(&self, texts: &[String]) -> Result<(), ApiError> {
        if texts.len() > self.max_inputs {
            return Err(ApiError::PayloadTooLarge(format!(
                "the request holds {} texts, more than the limit of {}",
                texts.len(),
                self.max_inputs
            )));
        }
        Ok(())
    }
}

/// Shared state of the HTTP handlers; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    shared: Arc<Shared>,
}

struct Shared {
    limits: Limits,
    request_timeout: Duration,
    client_timeout: Duration,
    api_key: Option<ApiKey>,
    settings: EngineSettings,
    metrics: Arc<Metrics>,
    engine: OnceLock<Engine>,
    /// Set once a shutdown signal arrived: `/health` answers 503 from then on.
    draining: Arc<AtomicBool>,
    load_status: Arc<LoadStatus>,
    config: Config,
}

impl AppState {
    /// State for a service configured by `config`, with no model loaded yet.
    pub fn new(config: &Config) -> Self {
        Self {
            shared: Arc::new(Shared {
                limits: Limits::from_config(config),
                request_timeout: config.request_timeout(),
                client_timeout: config.client_timeout(),
                api_key: config.api_key.clone(),
                settings: config.engine(),
                metrics: Arc::new(Metrics::default()),
                engine: OnceLock::new(),
                draining: Arc::new(AtomicBool::new(false)),
                load_status: Arc::new(LoadStatus::new(&config.model_names())),
                config: config.clone(),
            }),
        }
    }

    /// Starts the engine over `providers` ([`Engine::start`]: batchers, calibration) and then
    /// makes the models available to requests. Must run inside a tokio runtime; fails as
    /// [`Engine::start`] does, and when models were installed already.
    pub async fn install(
        &self,
        providers: Vec<Arc<dyn EmbeddingProvider>>,
    ) -> Result<(), EmbeddingError> {
        let already =
            || EmbeddingError::model_load("(configuration)", "models are already installed");
        if self.shared.engine.get().is_some() {
            return Err(already());
        }
        let observer: Arc<dyn BatchObserver> = self.shared.metrics.clone();
        let engine = Engine::start(providers, &self.shared.settings, observer).await?;
        self.shared.engine.set(engine).map_err(|_| already())?;
        self.shared.load_status.all_ready();
        Ok(())
    }

    /// The engine if every model can take requests: 503 while they are loading, when a
    /// model's batcher has stopped, and once the service is draining.
    pub fn healthy_engine(&self) -> Result<&Engine, ApiError> {
        if self.is_draining() {
            return Err(ApiError::NotReady(
                "the service is shutting down; send requests elsewhere".to_string(),
            ));
        }
        let engine = self.engine()?;
        if let Some(stopped) = engine.stopped() {
            return Err(ApiError::NotReady(format!(
                "the batcher of model `{}` has stopped",
                stopped.id
            )));
        }
        Ok(engine)
    }

    /// The engine, or 503 while the models are loading.
    pub fn engine(&self) -> Result<&Engine, ApiError> {
        self.shared.engine.get().ok_or_else(|| {
            ApiError::NotReady("the models are still loading; retry shortly".to_string())
        })
    }

    /// Marks the service as draining: `/health` answers 503 and every answer closes its
    /// connection, while requests are still served.
    pub fn start_draining(&self) {
        self.shared.draining.store(true, Ordering::Release);
    }

    /// Whether a shutdown has begun ([`AppState::start_draining`]).
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::Acquire)
    }

    /// The draining flag itself, for the connection layer.
    pub fn draining_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.shared.draining)
    }

    /// Whether every model is loaded and calibrated.
    pub fn is_ready(&self) -> bool {
        self.shared.engine.get().is_some()
    }

    /// Per-request limits.
    pub fn limits(&self) -> Limits {
        self.shared.limits
    }

    /// Deadline of an embedding request, queueing included.
    pub fn request_timeout(&self) -> Duration {
        self.shared.request_timeout
    }

    /// Longest the service waits for a request's body.
    pub fn client_timeout(&self) -> Duration {
        self.shared.client_timeout
    }

    /// The key clients must present, if any.
    pub fn api_key(&self) -> Option<&ApiKey> {
        self.shared.api_key.as_ref()
    }

    /// The service's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Each configured model's loading state.
    pub fn load_status(&self) -> &Arc<LoadStatus> {
        &self.shared.load_status
    }

    /// The configuration the service started with (for `GET /info`).
    pub fn config(&self) -> &Config {
        &self.shared.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_texts_not_characters() {
        let limits = Limits {
            max_body_bytes: 1024,
            max_inputs: 3,
        };
        assert!(limits.check(&["x".repeat(100_000), "äöü".into()]).is_ok());
        let err = limits
            .check(&["a".into(), "b".into(), "c".into(), "d".into()])
            .unwrap_err();
        assert!(err.to_string().contains("4 texts"), "{err}");
    }

    #[tokio::test]
    async fn models_are_installed_once() {
        use akidb_embedding_mock::MockEmbeddingProvider;
        let state = AppState::new(&Config::default());
        assert!(state.engine().is_err());
        let one = || -> Vec<Arc<dyn EmbeddingProvider>> {
            vec![Arc::new(MockEmbeddingProvider::new(4).with_id("a"))]
        };
        state.install(one()).await.unwrap();
        assert!(state.is_ready());
        assert!(state.install(one()).await.is_err());
        state.start_draining();
        assert!(matches!(state.healthy_engine(), Err(ApiError::NotReady(_))));
    }
}
