//! What to load and how to run it: [`LoadOptions`].

use std::path::PathBuf;
use std::sync::Arc;

use ort::session::builder::GraphOptimizationLevel;

use crate::quantize::fuse::FuseRecipe;
use crate::source::{self, HubOptions};
use crate::weights::WeightsMapping;
use crate::{ModelSpec, OnnxVariant};

/// ONNX Runtime graph optimisation level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OptimizationLevel {
    /// No graph rewrites.
    Disable,
    /// Constant folding and redundant-node removal.
    Basic,
    /// Basic plus operator fusions (attention, GELU, layer norm).
    Extended,
    /// Everything, including layout changes (the default).
    #[default]
    All,
}

impl OptimizationLevel {
    pub(crate) fn to_ort(self) -> GraphOptimizationLevel {
        match self {
            Self::Disable => GraphOptimizationLevel::Disable,
            Self::Basic => GraphOptimizationLevel::Level1,
            Self::Extended => GraphOptimizationLevel::Level2,
            Self::All => GraphOptimizationLevel::All,
        }
    }
}

/// What to load and how to run it.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub(crate) model: String,
    pub(crate) id: Option<String>,
    pub(crate) spec: Option<ModelSpec>,
    pub(crate) variant: OnnxVariant,
    pub(crate) intra_threads: Option<usize>,
    pub(crate) optimization: OptimizationLevel,
    pub(crate) max_batch_size: usize,
    pub(crate) max_batch_tokens: usize,
    pub(crate) hub: HubOptions,
    pub(crate) models_dir: Option<PathBuf>,
    pub(crate) runtime_library: Option<PathBuf>,
    pub(crate) runtime_search: Vec<PathBuf>,
    pub(crate) optimized_model_cache: Option<PathBuf>,
    pub(crate) weights_mapping: WeightsMapping,
    pub(crate) weights_copy_dir: Option<PathBuf>,
    pub(crate) cuda: bool,
    pub(crate) cpu_arena: bool,
    pub(crate) fuse: Option<FuseRecipe>,
    pub(crate) profiling: Option<PathBuf>,
}

impl LoadOptions {
    /// Loads `model`: a local folder, or a Hugging Face repository id (a built-in one such as
    /// `onnx-community/embeddinggemma-300m-ONNX` or `sentence-transformers/all-MiniLM-L6-v2`, or
    /// any other that ships ONNX files). A built-in id is first looked up in the folder given
    /// with [`LoadOptions::with_models_dir`], if any.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            id: None,
            spec: None,
            variant: OnnxVariant::default(),
            intra_threads: None,
            optimization: OptimizationLevel::default(),
            max_batch_size: 32,
            max_batch_tokens: 16_384,
            hub: HubOptions::default(),
            models_dir: None,
            runtime_library: None,
            runtime_search: Vec::new(),
            optimized_model_cache: None,
            weights_mapping: WeightsMapping::default(),
            weights_copy_dir: None,
            cuda: false,
            cpu_arena: true,
            fuse: Some(FuseRecipe::default()),
            profiling: None,
        }
    }

    /// The id the provider reports and requests address (default: the built-in id, else the
    /// repository id, else the folder's name).
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Describes the model explicitly instead of using the catalogue and the folder's files.
    #[must_use]
    pub fn with_spec(mut self, spec: ModelSpec) -> Self {
        self.spec = Some(spec);
        self
    }

    /// Chooses the ONNX export (fp32 by default).
    #[must_use]
    pub fn with_variant(mut self, variant: OnnxVariant) -> Self {
        self.variant = variant;
        self
    }

    /// Threads ONNX Runtime uses inside one run (default: ONNX Runtime's choice, one per core).
    #[must_use]
    pub fn with_intra_threads(mut self, threads: usize) -> Self {
        self.intra_threads = Some(threads.max(1));
        self
    }

    /// Graph optimisation level (default [`OptimizationLevel::All`]).
    #[must_use]
    pub fn with_optimization(mut self, level: OptimizationLevel) -> Self {
        self.optimization = level;
        self
    }

    /// Most texts per model run (default 32); larger requests are split.
    #[must_use]
    pub fn with_max_batch_size(mut self, size: usize) -> Self {
        self.max_batch_size = size.max(1);
        self
    }

    /// Most padded tokens (texts × longest text) per model run (default 16384); bounds memory.
    #[must_use]
    pub fn with_max_batch_tokens(mut self, tokens: usize) -> Self {
        self.max_batch_tokens = tokens.max(1);
        self
    }

    /// Uses only the hub cache, never the network (default: `HF_HUB_OFFLINE`).
    #[must_use]
    pub fn with_offline(mut self, offline: bool) -> Self {
        self.hub.offline = offline;
        self
    }

    /// Hub cache folder (default: `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    #[must_use]
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.hub.cache_dir = Some(dir.into());
        self
    }

    /// Hub address (default: `HF_ENDPOINT`, else the public hub).
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.hub.endpoint = Some(endpoint.into());
        self
    }

    /// Hub revision: branch, tag or commit (default `main`).
    #[must_use]
    pub fn with_revision(mut self, revision: impl Into<String>) -> Self {
        self.hub.revision = revision.into();
        self
    }

    /// Hub access token for gated or private repositories (default: `HF_TOKEN`, else the
    /// token file `huggingface-cli login` writes).
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.hub.token = Some(source::HubToken(token.into()));
        self
    }

    /// Reports every file downloaded from the hub to `progress` (bytes as they arrive).
    #[must_use]
    pub fn with_download_progress(mut self, progress: Arc<dyn source::DownloadProgress>) -> Self {
        self.hub.progress = Some(source::ProgressHook(progress));
        self
    }

    /// Folder holding installed models by name: a built-in id is loaded from
    /// `<dir>/<its install folder>` (see [`ModelSpec::install_dir`]) when that folder holds a
    /// `tokenizer.json`, before the hub is asked (default: none).
    #[must_use]
    pub fn with_models_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.models_dir = Some(dir.into());
        self
    }

    /// The ONNX Runtime library to load, which must exist (default: `ORT_DYLIB_PATH`, then
    /// [`LoadOptions::with_runtime_search`]); only the first model loaded in a process decides.
    #[must_use]
    pub fn with_runtime_library(mut self, path: impl Into<PathBuf>) -> Self {
        self.runtime_library = Some(path.into());
        self
    }

    /// Places to look for the ONNX Runtime library when neither
    /// [`LoadOptions::with_runtime_library`] nor `ORT_DYLIB_PATH` names it: library files, or
    /// folders holding `libonnxruntime.so` or a versioned `libonnxruntime.so.*`, tried in order
    /// (see [`crate::runtime`]). Default: none.
    #[must_use]
    pub fn with_runtime_search<I, P>(mut self, places: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        self.runtime_search = places.into_iter().map(Into::into).collect();
        self
    }

    /// Saves the optimised graph to this file (its weights beside it, in `<file>_data`) on first
    /// load and loads it from there later, so later starts skip graph optimisation (0.9 s →
    /// 0.5 s for the real EmbeddingGemma here). A sidecar `<file>.source` records the source
    /// files' sizes and modification times and the settings; when they differ, the cache is
    /// rebuilt, never used. It is not keyed by the ONNX Runtime library: delete the files when
    /// you change ONNX Runtime (the optimised graph may hold kernels specific to this CPU, too).
    /// The cached weights are mapped in place: keep the folder private to the service.
    #[must_use]
    pub fn with_optimized_model_cache(mut self, path: impl Into<PathBuf>) -> Self {
        self.optimized_model_cache = Some(path.into());
        self
    }

    /// How ONNX Runtime reaches split weights (`model.onnx_data`); default
    /// [`WeightsMapping::PrivateCopy`], which keeps the running model safe from later changes
    /// to the model folder (see [`crate::weights`]).
    #[must_use]
    pub fn with_weights_mapping(mut self, mapping: WeightsMapping) -> Self {
        self.weights_mapping = mapping;
        self
    }

    /// Folder for the private copy of split weights (default: beside the model, else the
    /// system's temporary folder when the model folder is read-only). The copy is unlinked
    /// once the model is loaded, but needs the weights' size in free space while loading.
    #[must_use]
    pub fn with_weights_copy_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.weights_copy_dir = Some(dir.into());
        self
    }

    /// Runs on the CUDA execution provider; loading fails (no silent CPU fallback) when CUDA
    /// is unavailable or the crate was built without the `cuda` feature.
    #[must_use]
    pub fn with_cuda(mut self, cuda: bool) -> Self {
        self.cuda = cuda;
        self
    }

    /// Whether ONNX Runtime's CPU memory arena is on (default `true`, ONNX Runtime's own
    /// default). The arena keeps the memory of the largest run for later runs: fast, but the
    /// process holds the peak of its biggest batch for good. `false` allocates each run's
    /// buffers from the system allocator and returns them afterwards: the resident memory
    /// after a large batch falls back, at some cost per run (measured in `benches/README.md`).
    /// Vectors are the same either way. The setting shapes memory at run time, not the graph,
    /// so the optimised-graph cache does not depend on it.
    #[must_use]
    pub fn with_cpu_arena(mut self, enabled: bool) -> Self {
        self.cpu_arena = enabled;
        self
    }

    /// Whether the graph is fused at load (default `true`): the export's shape arithmetic
    /// folded and spelled-out operators replaced by ONNX Runtime's fused ones, with the steps
    /// of [`FuseRecipe::default`] (see [`crate::quantize::fuse`]). The fused graph is made at
    /// first load and kept in the same checked cache as the `q8` variant's
    /// ([`crate::quantize::cache`]); for `q8` one entry holds the quantised and fused graph.
    /// `false` runs the graph as the folder has it.
    #[must_use]
    pub fn with_fused_graph(mut self, enabled: bool) -> Self {
        self.fuse = enabled.then(FuseRecipe::default);
        self
    }

    /// Fuses the graph at load with exactly these steps (see [`LoadOptions::with_fused_graph`]).
    #[must_use]
    pub fn with_fuse_recipe(mut self, recipe: FuseRecipe) -> Self {
        self.fuse = Some(recipe);
        self
    }

    /// Records ONNX Runtime's profile of every run, the load's warm-up run included: one
    /// event per graph node and run, with its operator and time, in Chrome's trace format.
    /// ONNX Runtime names the file `prefix` followed by the session's start time and `.json`;
    /// [`crate::OnnxEmbeddingProvider::end_profiling`] ends the recording and returns the
    /// file's path (dropping the provider writes it too). For measurement, not service: the
    /// profiler adds time per node, and the file grows with every run.
    #[must_use]
    pub fn with_profiling(mut self, prefix: impl Into<PathBuf>) -> Self {
        self.profiling = Some(prefix.into());
        self
    }

    /// The fusion applied at load, if any (see [`LoadOptions::with_fused_graph`]).
    pub fn fuse_recipe(&self) -> Option<&FuseRecipe> {
        self.fuse.as_ref()
    }

    /// The model string this was created with.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Whether ONNX Runtime's CPU memory arena is on (see [`LoadOptions::with_cpu_arena`]).
    pub fn cpu_arena(&self) -> bool {
        self.cpu_arena
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_bound_runs_and_know_no_deployment() {
        let options = LoadOptions::new("some/model");
        assert_eq!(options.model(), "some/model");
        assert_eq!(
            (options.max_batch_size, options.max_batch_tokens),
            (32, 16_384)
        );
        assert!(options.models_dir.is_none() && options.runtime_library.is_none());
        assert!(options.runtime_search.is_empty());
        assert_eq!(options.optimization, OptimizationLevel::All);
        assert!(options.cpu_arena, "ONNX Runtime's default: the arena is on");
    }

    #[test]
    fn builders_set_what_they_name_and_clamp_zeros() {
        let options = LoadOptions::new("m")
            .with_max_batch_size(0)
            .with_max_batch_tokens(0)
            .with_intra_threads(0)
            .with_runtime_search(["/a", "/b"])
            .with_models_dir("/models")
            .with_optimization(OptimizationLevel::Basic)
            .with_cpu_arena(false);
        assert_eq!((options.max_batch_size, options.max_batch_tokens), (1, 1));
        assert_eq!(options.intra_threads, Some(1));
        assert!(!options.cpu_arena);
        assert_eq!(
            options.runtime_search,
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert_eq!(options.models_dir, Some(PathBuf::from("/models")));
        assert_eq!(
            options.optimization.to_ort(),
            GraphOptimizationLevel::Level1
        );
    }
}
