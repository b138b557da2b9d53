//! What the HTTP handlers share: limits, metrics, and the served models once they are loaded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use akidb_embedding_core::{EmbeddingError, EmbeddingProvider, ModelInfo};

use crate::batcher::{BatchObserver, Batcher, BatcherConfig};
use crate::config::{ApiKey, Config};
use crate::error::ApiError;
use crate::loading::LoadStatus;
use crate::metrics::Metrics;
use crate::names::ServedNames;

/// Per-request limits checked at the edge, before the request is tokenised.
///
/// There is no limit on characters: with truncation on, any text inside the body limit is
/// embedded from its first tokens (the tokenizer only ever reads a prefix of it that covers
/// the model's cap), and with truncation off an over-long text is refused by its token count.
/// Tokens per request are limited by the batcher, counted from the request's encodings.
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
    batcher: BatcherConfig,
    metrics: Arc<Metrics>,
    models: OnceLock<Models>,
    /// Set once a shutdown signal arrived: `/health` answers 503 from then on.
    draining: AtomicBool,
    served_names: Vec<Vec<String>>,
    default_prompts: Vec<Option<String>>,
    load_status: Arc<LoadStatus>,
    config: Config,
}

/// The served models, in configuration order, each behind its batcher.
pub struct Models {
    batchers: Vec<Batcher>,
    providers: Vec<Arc<dyn EmbeddingProvider>>,
    names: ServedNames,
    default_prompts: Vec<Option<String>>,
}

impl std::fmt::Debug for Models {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Models")
            .field("batchers", &self.batchers)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Models {
    /// The batcher of the model `requested` names (its id, a built-in alias or a served
    /// name); with no name, the only model served.
    pub fn resolve(&self, requested: Option<&str>) -> Result<&Batcher, ApiError> {
        match (requested, self.batchers.as_slice()) {
            (None, [only]) => Ok(only),
            (None, _) => Err(ApiError::InvalidRequest(format!(
                "`model` is required: this service serves {}",
                self.ids().join(", ")
            ))),
            (Some(id), batchers) => self
                .names
                .resolve(id)
                .and_then(|position| batchers.get(position))
                .ok_or_else(|| {
                    ApiError::ModelNotFound(format!(
                        "model `{}` is not served here; available: {}",
                        shown(id),
                        self.ids().join(", ")
                    ))
                }),
        }
    }

    /// Every name clients may address each model by.
    pub fn names(&self) -> &ServedNames {
        &self.names
    }

    /// The prompt applied to requests for `model` that name none (`AKIDB_DEFAULT_PROMPT_NAME`).
    pub fn default_prompt(&self, model: &Batcher) -> Option<&str> {
        let position = self
            .batchers
            .iter()
            .position(|batcher| std::ptr::eq(batcher, model))?;
        self.default_prompts.get(position)?.as_deref()
    }

    /// The provider behind `model` (to count tokens or show them without queueing).
    pub fn provider(&self, model: &Batcher) -> Option<&Arc<dyn EmbeddingProvider>> {
        let position = self
            .batchers
            .iter()
            .position(|batcher| std::ptr::eq(batcher, model))?;
        self.providers.get(position)
    }

    /// Every served model's batcher.
    pub fn batchers(&self) -> &[Batcher] {
        &self.batchers
    }

    /// Descriptions of the served models.
    pub fn infos(&self) -> impl Iterator<Item = &ModelInfo> {
        self.batchers.iter().map(Batcher::model_info)
    }

    /// Ids of the served models.
    pub fn ids(&self) -> Vec<&str> {
        self.infos().map(|info| info.id.as_str()).collect()
    }
}

fn already_installed() -> EmbeddingError {
    EmbeddingError::model_load("(configuration)", "models are already installed")
}

/// Longest client-given name an error message repeats.
const SHOWN_CHARS: usize = 64;

/// A client-given name as an error message shows it: cut at [`SHOWN_CHARS`] characters, so
/// an answer never echoes a huge field back.
fn shown(name: &str) -> String {
    if name.chars().nth(SHOWN_CHARS).is_some() {
        format!("{}…", name.chars().take(SHOWN_CHARS).collect::<String>())
    } else {
        name.to_string()
    }
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
                batcher: config.batcher(),
                metrics: Arc::new(Metrics::default()),
                models: OnceLock::new(),
                draining: AtomicBool::new(false),
                served_names: config.served_names(),
                default_prompts: config.default_prompts(),
                load_status: Arc::new(LoadStatus::new(&config.model_names())),
                config: config.clone(),
            }),
        }
    }

    /// Starts a batcher for each provider, calibrates each model's cost per token (one short
    /// run, [`Batcher::calibrate`]) and then makes the models available to requests. Must run
    /// inside a tokio runtime; fails on an empty list, on two models with one id, and when
    /// models were installed already.
    pub async fn install(
        &self,
        providers: Vec<Arc<dyn EmbeddingProvider>>,
    ) -> Result<(), EmbeddingError> {
        // Configuration mistakes are the operator's to fix: load errors, never the
        // caller-fault kind (`InvalidInput`).
        if providers.is_empty() {
            return Err(EmbeddingError::model_load(
                "(configuration)",
                "no model to serve",
            ));
        }
        for (position, provider) in providers.iter().enumerate() {
            let id = &provider.model_info().id;
            if providers[..position]
                .iter()
                .any(|earlier| &earlier.model_info().id == id)
            {
                return Err(EmbeddingError::model_load(
                    id,
                    "two configured models report this id; requests could not tell them apart",
                ));
            }
        }
        let infos: Vec<&ModelInfo> = providers.iter().map(|p| p.model_info()).collect();
        let names = ServedNames::build(&infos, &self.shared.served_names)?;
        if self.shared.default_prompts.len() > providers.len() {
            return Err(EmbeddingError::model_load(
                "AKIDB_DEFAULT_PROMPT_NAME",
                format!(
                    "it lists prompts for {} models, but {} are served",
                    self.shared.default_prompts.len(),
                    providers.len()
                ),
            ));
        }
        for (info, prompt) in infos.iter().zip(&self.shared.default_prompts) {
            if let Some(prompt) = prompt
                && !info.prompts.iter().any(|known| known == prompt)
            {
                return Err(EmbeddingError::model_load(
                    "AKIDB_DEFAULT_PROMPT_NAME",
                    format!(
                        "default prompt `{prompt}` of model `{}` is not one of its prompts ({})",
                        info.id,
                        if info.prompts.is_empty() {
                            "it has none".to_string()
                        } else {
                            info.prompts.join(", ")
                        }
                    ),
                ));
            }
        }
        let default_prompts = self.shared.default_prompts.clone();
        let kept = providers.clone();
        let observer: Arc<dyn BatchObserver> = self.shared.metrics.clone();
        if self.shared.models.get().is_some() {
            return Err(already_installed());
        }
        let batchers: Vec<Batcher> = providers
            .into_iter()
            .map(|provider| {
                Batcher::spawn(provider, self.shared.batcher.clone(), Arc::clone(&observer))
            })
            .collect();
        for batcher in &batchers {
            batcher.calibrate().await;
        }
        self.shared
            .models
            .set(Models {
                batchers,
                providers: kept,
                names,
                default_prompts,
            })
            .map_err(|_| already_installed())?;
        self.shared.load_status.all_ready();
        Ok(())
    }

    /// The served models if every one can take requests: 503 while they are loading, when
    /// a model's batcher has stopped, and once the service is draining.
    pub fn healthy_models(&self) -> Result<&Models, ApiError> {
        if self.is_draining() {
            return Err(ApiError::NotReady(
                "the service is shutting down; send requests elsewhere".to_string(),
            ));
        }
        let models = self.models()?;
        if let Some(stopped) = models.batchers.iter().find(|batcher| !batcher.is_running()) {
            return Err(ApiError::NotReady(format!(
                "the batcher of model `{}` has stopped",
                stopped.model_info().id
            )));
        }
        Ok(models)
    }

    /// The served models, or 503 while they are loading.
    pub fn models(&self) -> Result<&Models, ApiError> {
        self.shared.models.get().ok_or_else(|| {
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

    /// Whether every model is loaded and warmed up.
    pub fn is_ready(&self) -> bool {
        self.shared.models.get().is_some()
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
    pub fn metrics(&self) -> &Metrics {
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
    async fn models_resolve_by_id_and_refuse_duplicates() {
        use akidb_embedding_mock::MockEmbeddingProvider;
        let state = AppState::new(&Config::default());
        assert!(state.models().is_err());
        let twins: Vec<Arc<dyn EmbeddingProvider>> = vec![
            Arc::new(MockEmbeddingProvider::new(4).with_id("a")),
            Arc::new(MockEmbeddingProvider::new(4).with_id("a")),
        ];
        let twice = state.install(twins).await.unwrap_err();
        assert_eq!(
            twice.kind(),
            akidb_embedding_core::ErrorKind::Load,
            "{twice}"
        );
        assert!(
            state
                .install(Vec::new())
                .await
                .is_err_and(|error| !error.is_invalid_input()),
            "a configuration mistake is not the caller's fault"
        );
        let pair: Vec<Arc<dyn EmbeddingProvider>> = vec![
            Arc::new(MockEmbeddingProvider::new(4).with_id("a")),
            Arc::new(MockEmbeddingProvider::new(8).with_id("b")),
        ];
        state.install(pair).await.unwrap();
        let models = state.models().unwrap();
        assert_eq!(models.resolve(Some("b")).unwrap().model_info().dimension, 8);
        assert!(matches!(
            models.resolve(Some("c")),
            Err(ApiError::ModelNotFound(_))
        ));
        assert!(matches!(
            models.resolve(None),
            Err(ApiError::InvalidRequest(_))
        ));
        let long = "../".repeat(1000);
        let err = models.resolve(Some(&long)).unwrap_err();
        assert!(matches!(err, ApiError::ModelNotFound(_)));
        assert!(err.to_string().len() < 200, "{err}");
    }
}
