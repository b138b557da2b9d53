//! The engine: the served models and everything between a parsed request and its vectors,
//! with no HTTP inside (no axum or hyper type in any signature; its own error enum,
//! [`EngineError`]).
//!
//! - [`Engine`]: the served models by name, each model's default prompt, and the request
//!   paths (`embed`, `token_spans`);
//! - [`names`]: the names clients address models by;
//! - [`admission`]: the cost model and the ledger of work ahead that refuses at once what
//!   cannot finish before its deadline;
//! - [`tokenize`]: the bounded, cancellable tokenisation pool;
//! - [`batcher`]: each model's queue and the shared model runs cut from it;
//! - [`timings`]: where a request's time went (queue, tokenisation, inference);
//! - [`providers`], [`loading`]: building the providers and each model's loading state.

pub mod admission;
pub mod batcher;
pub mod loading;
pub mod names;
pub mod providers;
pub mod timings;
pub mod tokenize;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use akidb_embedding_core::{
    EmbedRequest, EmbedResponse, EmbeddingError, EmbeddingProvider, ModelInfo, TokenSpan,
};
use tokio::time::Instant;

use admission::Shed;
use batcher::{BatchObserver, Batcher, BatcherConfig};
use names::ServedNames;

/// Longest client-given name an error repeats.
const SHOWN_CHARS: usize = 64;

/// Everything the engine can refuse or fail a request with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The request names no model and several are served.
    #[error("`model` is required: this service serves {}", .available.join(", "))]
    ModelRequired {
        /// The ids of the served models.
        available: Vec<String>,
    },
    /// The request names a model that is not served.
    #[error("model `{requested}` is not served here; available: {}", .available.join(", "))]
    ModelNotFound {
        /// The name asked for, cut to 64 characters.
        requested: String,
        /// The ids of the served models.
        available: Vec<String>,
    },
    /// The model's queue already holds `capacity` requests; the caller should retry shortly.
    #[error("the queue of model `{model}` is full ({capacity} requests waiting); retry shortly")]
    QueueFull {
        /// The model whose queue is full.
        model: String,
        /// The queue's capacity.
        capacity: usize,
    },
    /// The request would not finish before its deadline now: refused before any heavy work.
    #[error("model `{model}` cannot serve this request in time: {shed}; retry in {} s", .shed.retry_after_secs())]
    Shed {
        /// The model that is too busy.
        model: String,
        /// The estimate that refused the request.
        shed: Shed,
    },
    /// The request's own work alone exceeds the service's longest deadline: it can never be
    /// served as it is.
    #[error(
        "model `{model}` cannot serve this request within the service's deadline: its own work is estimated at \
         {:.1} s, more than {:.1} s; send fewer or shorter texts", .own.as_secs_f64(), .limit.as_secs_f64()
    )]
    NeverFits {
        /// The model asked for.
        model: String,
        /// Estimated time of the request's own work.
        own: Duration,
        /// The part of the service's deadline an estimate may fill.
        limit: Duration,
    },
    /// The request's deadline passed before its work was done.
    #[error("the request did not finish before its deadline")]
    Timeout,
    /// The model's batcher has stopped (the service is shutting down).
    #[error("the batcher of model `{model}` has stopped")]
    Stopped {
        /// The model whose batcher stopped.
        model: String,
    },
    /// The request is invalid or the provider failed on it.
    #[error(transparent)]
    Embedding(#[from] EmbeddingError),
}

/// How the engine serves its models (from the service's configuration).
#[derive(Debug, Clone, Default)]
pub struct EngineSettings {
    /// How each model's batcher forms its runs and admits work.
    pub batcher: BatcherConfig,
    /// Extra names of each model, in configuration order.
    pub served_names: Vec<Vec<String>>,
    /// The prompt each model applies to requests that name none, in configuration order.
    pub default_prompts: Vec<Option<String>>,
}

/// One served model.
struct Model {
    batcher: Batcher,
    default_prompt: Option<String>,
}

/// The served models, in configuration order, each behind its batcher.
pub struct Engine {
    models: Vec<Model>,
    names: ServedNames,
    /// Requests that have left the engine (answered, refused or dropped).
    finished: Arc<AtomicU64>,
}

/// Counts a request out of the engine however it ends (its future may be dropped).
struct Leaving(Arc<AtomicU64>);

impl Drop for Leaving {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("models", &self.ids())
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts a batcher for each provider and calibrates each model's costs (two runs, one
    /// short and one at the model's token cap, whose vectors are checked: the start-up's
    /// proof that the model serves). Must run inside a tokio runtime. Fails on an empty list,
    /// on two models with one id, on names or default prompts that do not fit the models, and
    /// when a calibration run fails; configuration mistakes are load errors, never the
    /// caller-fault kind.
    pub async fn start(
        providers: Vec<Arc<dyn EmbeddingProvider>>,
        settings: &EngineSettings,
        observer: Arc<dyn BatchObserver>,
    ) -> Result<Self, EmbeddingError> {
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
        let names = ServedNames::build(&infos, &settings.served_names)?;
        if settings.default_prompts.len() > providers.len() {
            return Err(EmbeddingError::model_load(
                "AKIDB_DEFAULT_PROMPT_NAME",
                format!(
                    "it lists prompts for {} models, but {} are served",
                    settings.default_prompts.len(),
                    providers.len()
                ),
            ));
        }
        for (info, prompt) in infos.iter().zip(&settings.default_prompts) {
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
        let mut models = Vec::with_capacity(providers.len());
        for (position, provider) in providers.into_iter().enumerate() {
            let batcher = Batcher::spawn(provider, settings.batcher.clone(), Arc::clone(&observer));
            batcher.calibrate().await?;
            models.push(Model {
                batcher,
                default_prompt: settings.default_prompts.get(position).cloned().flatten(),
            });
        }
        Ok(Self {
            models,
            names,
            finished: Arc::default(),
        })
    }

    /// The model `requested` names (its id, a built-in alias or a served name); with no name,
    /// the only model served.
    pub fn resolve(&self, requested: Option<&str>) -> Result<&Batcher, EngineError> {
        match (requested, self.models.as_slice()) {
            (None, [only]) => Ok(&only.batcher),
            (None, _) => Err(EngineError::ModelRequired {
                available: self.ids().into_iter().map(str::to_string).collect(),
            }),
            (Some(name), models) => self
                .names
                .resolve(name)
                .and_then(|position| models.get(position))
                .map(|model| &model.batcher)
                .ok_or_else(|| EngineError::ModelNotFound {
                    requested: shown(name),
                    available: self.ids().into_iter().map(str::to_string).collect(),
                }),
        }
    }

    /// Embeds `request` with the model `model` names, its default prompt applied when the
    /// request names none, before `deadline`: admitted, tokenised on the pool, queued, run.
    pub async fn embed(
        &self,
        model: Option<&str>,
        mut request: EmbedRequest,
        deadline: Instant,
    ) -> Result<(&ModelInfo, EmbedResponse), EngineError> {
        let _leaving = Leaving(Arc::clone(&self.finished));
        let batcher = self.resolve(model)?;
        self.apply_default_prompt(batcher, &mut request);
        let response = batcher.embed_before(request, Some(deadline)).await?;
        Ok((batcher.model_info(), response))
    }

    /// The tokens of each text of `request` with their spans (the ids embedding feeds the
    /// model), with the model's default prompt when the request names none: admitted and
    /// tokenised on the pool as embedding is.
    pub async fn token_spans(
        &self,
        model: Option<&str>,
        mut request: EmbedRequest,
        deadline: Instant,
    ) -> Result<Vec<Vec<TokenSpan>>, EngineError> {
        let _leaving = Leaving(Arc::clone(&self.finished));
        let batcher = self.resolve(model)?;
        self.apply_default_prompt(batcher, &mut request);
        batcher.token_spans_before(request, Some(deadline)).await
    }

    /// The token ids of each text of `request` (for models without spans), admitted and
    /// tokenised as [`Engine::token_spans`].
    pub async fn token_ids(
        &self,
        model: Option<&str>,
        mut request: EmbedRequest,
        deadline: Instant,
    ) -> Result<Vec<Vec<u32>>, EngineError> {
        let _leaving = Leaving(Arc::clone(&self.finished));
        let batcher = self.resolve(model)?;
        self.apply_default_prompt(batcher, &mut request);
        batcher.token_ids_before(request, Some(deadline)).await
    }

    fn apply_default_prompt(&self, batcher: &Batcher, request: &mut EmbedRequest) {
        if request.prompt_name.is_none() {
            request.prompt_name = self.default_prompt(batcher).map(str::to_string);
        }
    }

    /// Every name clients may address each model by.
    pub fn names(&self) -> &ServedNames {
        &self.names
    }

    /// The prompt applied to requests for `model` that name none (`AKIDB_DEFAULT_PROMPT_NAME`).
    pub fn default_prompt(&self, model: &Batcher) -> Option<&str> {
        self.models
            .iter()
            .find(|served| std::ptr::eq(&served.batcher, model))?
            .default_prompt
            .as_deref()
    }

    /// Every served model's batcher.
    pub fn batchers(&self) -> impl Iterator<Item = &Batcher> {
        self.models.iter().map(|model| &model.batcher)
    }

    /// Descriptions of the served models.
    pub fn infos(&self) -> impl Iterator<Item = &ModelInfo> {
        self.batchers().map(Batcher::model_info)
    }

    /// Ids of the served models.
    pub fn ids(&self) -> Vec<&str> {
        self.infos().map(|info| info.id.as_str()).collect()
    }

    /// The first model whose batcher has stopped, if any.
    pub fn stopped(&self) -> Option<&ModelInfo> {
        self.batchers()
            .find(|batcher| !batcher.is_running())
            .map(Batcher::model_info)
    }

    /// Requests that have left the engine so far, however they ended.
    pub fn finished(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }

    /// Whether no model has work queued or running.
    pub fn is_idle(&self) -> bool {
        self.batchers().all(|batcher| batcher.admission().is_idle())
    }
}

/// A client-given name as an error shows it: cut at [`SHOWN_CHARS`] characters, with its
/// length, so an answer never echoes a huge field back.
pub fn shown(name: &str) -> String {
    match name.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{}… ({} bytes)", &name[..cut], name.len()),
        None => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use akidb_embedding_mock::MockEmbeddingProvider;

    #[tokio::test]
    async fn models_resolve_by_name_and_configuration_mistakes_are_load_errors() {
        let settings = EngineSettings::default();
        let twins: Vec<Arc<dyn EmbeddingProvider>> = vec![
            Arc::new(MockEmbeddingProvider::new(4).with_id("a")),
            Arc::new(MockEmbeddingProvider::new(4).with_id("a")),
        ];
        let twice = Engine::start(twins, &settings, Arc::new(()))
            .await
            .unwrap_err();
        assert_eq!(
            twice.kind(),
            akidb_embedding_core::ErrorKind::Load,
            "{twice}"
        );
        assert!(
            Engine::start(Vec::new(), &settings, Arc::new(()))
                .await
                .is_err_and(|error| !error.is_invalid_input())
        );
        let pair: Vec<Arc<dyn EmbeddingProvider>> = vec![
            Arc::new(MockEmbeddingProvider::new(4).with_id("a")),
            Arc::new(MockEmbeddingProvider::new(8).with_id("b")),
        ];
        let engine = Engine::start(pair, &settings, Arc::new(())).await.unwrap();
        assert_eq!(engine.resolve(Some("b")).unwrap().model_info().dimension, 8);
        assert!(matches!(
            engine.resolve(Some("c")),
            Err(EngineError::ModelNotFound { .. })
        ));
        assert!(matches!(
            engine.resolve(None),
            Err(EngineError::ModelRequired { .. })
        ));
        let long = "../".repeat(1000);
        let err = engine.resolve(Some(&long)).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
        assert!(err.to_string().contains("(3000 bytes)"), "{err}");
        assert!(engine.is_idle());
    }

    #[tokio::test]
    async fn the_default_prompt_applies_when_the_request_names_none() {
        let settings = EngineSettings {
            default_prompts: vec![Some("query".into())],
            ..EngineSettings::default()
        };
        let mock = Arc::new(MockEmbeddingProvider::new(8));
        let provider: Arc<dyn EmbeddingProvider> = mock.clone();
        let engine = Engine::start(vec![provider], &settings, Arc::new(()))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let (_, ours) = engine
            .embed(None, EmbedRequest::new(["a"]), deadline)
            .await
            .unwrap();
        let expected = mock
            .embed(EmbedRequest::new(["a"]).with_prompt("query"))
            .await
            .unwrap();
        assert_eq!(ours, expected);
        let spans = engine
            .token_spans(None, EmbedRequest::new(["a"]), deadline)
            .await
            .unwrap();
        assert_eq!(
            spans,
            mock.token_spans(EmbedRequest::new(["a"]).with_prompt("query"))
                .await
                .unwrap()
        );
    }
}
