//! Building the providers the configuration names.
//!
//! A model that cannot be loaded is an error for the whole service: the mock is used only
//! when `AKIDB_EMBEDDING_PROVIDER=mock` asks for it, never as a fallback.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use akidb_embedding_core::{EmbeddingError, EmbeddingProvider};
use akidb_embedding_mock::MockEmbeddingProvider;
use akidb_embedding_onnx::{
    LoadOptions, OnnxEmbeddingProvider, OnnxVariant, OptimizationLevel, WeightsMapping,
};

use super::loading::{DownloadLogger, LoadStatus, ModelState, PROGRESS_LOG_INTERVAL};

/// Which provider turns texts into vectors (`python-bridge`, the Python service's name, is
/// read as `onnx`, with a warning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderKind {
    /// ONNX Runtime models (`akidb-embedding-onnx`).
    Onnx,
    /// The deterministic mock (`akidb-embedding-mock`); only ever used when asked for.
    Mock,
}

/// Length of the mock's vectors.
pub const MOCK_DIMENSION: usize = 384;

/// What [`load`] needs to know, taken from the service's configuration: every load option of the library.
#[derive(Debug, Clone)]
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
    /// The ONNX export.
    pub variant: OnnxVariant,
    /// Hub revision.
    pub revision: String,
    /// Hub cache only, no network (`false` leaves `HF_HUB_OFFLINE` in charge).
    pub offline: bool,
    /// Hub cache folder.
    pub cache_dir: Option<PathBuf>,
    /// Hub address.
    pub hub_endpoint: Option<String>,
    /// Hub token (`None`: `HF_TOKEN` or the cached login, as the library finds them).
    pub hf_token: Option<String>,
    /// Folder of installed models.
    pub models_dir: Option<PathBuf>,
    /// The ONNX Runtime library.
    pub ort_library: Option<PathBuf>,
    /// Folder of optimised graphs, one file per model.
    pub optimized_model_cache: Option<PathBuf>,
    /// Graph optimisation level.
    pub graph_optimization: OptimizationLevel,
    /// Run on CUDA.
    pub cuda: bool,
    /// ONNX Runtime's CPU memory arena on.
    pub cpu_arena: bool,
    /// The graph rewritten into fused operators at load.
    pub fused_graph: bool,
    /// Where each model's state is kept for `/health` (`None`: not reported).
    pub status: Option<Arc<LoadStatus>>,
}

impl LoadPlan {
    /// Reports each model's state and downloads to `status`.
    #[must_use]
    pub fn with_status(mut self, status: Arc<LoadStatus>) -> Self {
        self.status = Some(status);
        self
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
        if let Some(status) = &plan.status {
            status.set(model, ModelState::Loading);
        }
        tracing::info!(model = %model, provider = ?plan.kind, "loading model");
        let loaded = match plan.kind {
            ProviderKind::Mock => Ok(mock(model)),
            ProviderKind::Onnx => {
                let options = onnx_options(model, &plan);
                let status = plan.status.clone();
                let name = model.clone();
                tokio::task::spawn_blocking(move || onnx(&name, options, status.as_ref()))
                    .await
                    .map_err(|err| {
                        EmbeddingError::model_load(model, format!("the loading task failed: {err}"))
                    })
                    .and_then(|result| result)
            }
        };
        let provider = match loaded {
            Ok(provider) => provider,
            Err(error) => {
                if let Some(status) = &plan.status {
                    status.fail(model, &error.to_string());
                }
                return Err(error);
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
pub(crate) fn onnx_options(model: &str, plan: &LoadPlan) -> LoadOptions {
    // The project's runtime and installed models (see `akidb_embeddings::install`).
    let mut options = akidb_embeddings::install::load_options(model)
        .with_max_batch_size(plan.max_batch_size)
        .with_max_batch_tokens(plan.max_batch_tokens)
        .with_weights_mapping(plan.weights_mapping)
        .with_variant(plan.variant.clone())
        .with_revision(plan.revision.clone())
        .with_optimization(plan.graph_optimization)
        .with_cuda(plan.cuda)
        .with_cpu_arena(plan.cpu_arena)
        .with_fused_graph(plan.fused_graph);
    if plan.offline {
        options = options.with_offline(true);
    }
    if let Some(dir) = &plan.cache_dir {
        options = options.with_cache_dir(dir);
    }
    if let Some(endpoint) = &plan.hub_endpoint {
        options = options.with_endpoint(endpoint.clone());
    }
    if let Some(token) = &plan.hf_token {
        options = options.with_token(token.clone());
    }
    if let Some(dir) = &plan.models_dir {
        options = options.with_models_dir(dir);
    }
    if let Some(library) = &plan.ort_library {
        options = options.with_runtime_library(library);
    }
    if let Some(dir) = &plan.optimized_model_cache {
        options = options.with_optimized_model_cache(dir.join(optimized_graph_name(model, plan)));
    }
    if let Some(threads) = plan.threads {
        options = options.with_intra_threads(threads);
    }
    if let Some(dir) = &plan.weights_copy_dir {
        options = options.with_weights_copy_dir(dir);
    }
    options
}

/// The file, inside the optimised-graph folder, of `model` as `plan` loads it: one per model,
/// variant, revision and optimisation level.
fn optimized_graph_name(model: &str, plan: &LoadPlan) -> String {
    let safe: String = format!(
        "{model}-{}-{}-{:?}",
        plan.variant.file_name().trim_end_matches(".onnx"),
        plan.revision,
        plan.graph_optimization
    )
    .chars()
    .map(|c| {
        if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
            c
        } else {
            '_'
        }
    })
    .collect();
    format!("{}.optimized.onnx", safe.trim_start_matches('.'))
}

/// Loads one ONNX model and warms it up (blocking: call it off the async threads), reporting
/// its downloads to `status`.
fn onnx(
    model: &str,
    mut options: LoadOptions,
    status: Option<&Arc<LoadStatus>>,
) -> Result<Arc<dyn EmbeddingProvider>, EmbeddingError> {
    if let Some(status) = status {
        options = options.with_download_progress(Arc::new(DownloadLogger::new(
            model,
            Arc::clone(status),
            progress_interval(),
        )));
    }
    Ok(Arc::new(OnnxEmbeddingProvider::load(options)?))
}

/// [`PROGRESS_LOG_INTERVAL`], or `AKIDB_PROGRESS_INTERVAL_MS` when set (tests log faster).
fn progress_interval() -> std::time::Duration {
    std::env::var("AKIDB_PROGRESS_INTERVAL_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(PROGRESS_LOG_INTERVAL, std::time::Duration::from_millis)
}
