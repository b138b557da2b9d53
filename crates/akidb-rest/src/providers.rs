//! Building the providers the configuration names.
//!
//! A model that cannot be loaded is an error for the whole service: the mock is used only
//! when `AKIDB_EMBEDDING_PROVIDER=mock` asks for it, never as a fallback.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use akidb_embedding_core::{EmbeddingError, EmbeddingProvider};
use akidb_embedding_mock::MockEmbeddingProvider;
use akidb_embedding_onnx::{LoadOptions, OnnxEmbeddingProvider, WeightsMapping};

use crate::config::{Config, ProviderKind};

/// Length of the mock's vectors.
pub const MOCK_DIMENSION: usize = 384;

/// What [`load`] needs to know, taken from the [`Config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadPlan {
    /// Which provider.
    pub kind: ProviderKind,
    /// Built-in ids or local folders, in order.
    pub models: Vec<String>,
    /// ONNX Runtime intra-op threads (`None`: the provider's default).
    pub threads: Option<usize>,
    /// Texts per ONNX Runtime run.
    pub max_batch_size: usize,
    /// Padded tokens per ONNX Runtime run.
    pub max_batch_tokens: usize,
    /// How split weights are mapped.
    pub weights_mapping: WeightsMapping,
    /// Folder for the private copy of split weights (`None`: the provider's default).
    pub weights_copy_dir: Option<PathBuf>,
}

impl From<&Config> for LoadPlan {
    fn from(config: &Config) -> Self {
        Self {
            kind: config.provider,
            models: config.model_names(),
            threads: config.threads,
            max_batch_size: config.max_batch_size,
            max_batch_tokens: config.max_batch_tokens,
            weights_mapping: config.weights_mapping,
            weights_copy_dir: config.weights_copy_dir.clone(),
        }
    }
}

/// Loads every model of the plan, in order; the first failure ends the load.
pub async fn load(plan: LoadPlan) -> Result<Vec<Arc<dyn EmbeddingProvider>>, EmbeddingError> {
    if plan.models.is_empty() {
        // The operator's mistake, not a caller's: a load error.
        return Err(EmbeddingError::model_load(
            "AKIDB_EMBEDDING_MODEL",
            "no model configured: set AKIDB_EMBEDDING_MODEL",
        ));
    }
    let mut providers = Vec::with_capacity(plan.models.len());
    for model in &plan.models {
        let started = Instant::now();
        let provider = match plan.kind {
            ProviderKind::Mock => mock(model),
            ProviderKind::Onnx => {
                let options = onnx_options(model, &plan);
                tokio::task::spawn_blocking(move || onnx(options))
                    .await
                    .map_err(|err| {
                        EmbeddingError::model_load(model, format!("the loading task failed: {err}"))
                    })??
            }
        };
        tracing::info!(
            model = %provider.model_info().id,
            source = %model,
            dimension = provider.model_info().dimension,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "model loaded"
        );
        providers.push(provider);
    }
    Ok(providers)
}

/// The deterministic mock, answering to `model` as its id.
fn mock(model: &str) -> Arc<dyn EmbeddingProvider> {
    Arc::new(MockEmbeddingProvider::new(MOCK_DIMENSION).with_id(model))
}

/// The provider's load options for `model` under `plan`.
fn onnx_options(model: &str, plan: &LoadPlan) -> LoadOptions {
    // The project's runtime and installed models (see `akidb_embeddings::install`).
    let mut options = akidb_embeddings::install::load_options(model)
        .with_max_batch_size(plan.max_batch_size)
        .with_max_batch_tokens(plan.max_batch_tokens)
        .with_weights_mapping(plan.weights_mapping);
    if let Some(threads) = plan.threads {
        options = options.with_intra_threads(threads);
    }
    if let Some(dir) = &plan.weights_copy_dir {
        options = options.with_weights_copy_dir(dir);
    }
    options
}

/// Loads one ONNX model and warms it up (blocking: call it off the async threads).
fn onnx(options: LoadOptions) -> Result<Arc<dyn EmbeddingProvider>, EmbeddingError> {
    Ok(Arc::new(OnnxEmbeddingProvider::load(options)?))
}
