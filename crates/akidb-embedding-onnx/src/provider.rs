//! The ONNX Runtime provider: loading a model and running the embedding pipeline.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use akidb_embedding_core::{
    EmbedRequest, EmbedResponse, EmbeddingError, EmbeddingProvider, ModelInfo, Result, validate,
    vector,
};
use async_trait::async_trait;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;

use crate::batching::plan_runs;
use crate::pooling::pool;
use crate::source::{self, HubOptions, ModelFiles};
use crate::st_config::FolderConfig;
use crate::tokenize::{TextTokenizer, TokenizedText};
use crate::weights::{PrivateWeights, WeightsMapping};
use crate::{ModelSpec, OnnxVariant, Pooling, runtime};

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
    fn to_ort(self) -> GraphOptimizationLevel {
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
    model: String,
    id: Option<String>,
    spec: Option<ModelSpec>,
    variant: OnnxVariant,
    intra_threads: Option<usize>,
    optimization: OptimizationLevel,
    max_batch_size: usize,
    max_batch_tokens: usize,
    hub: HubOptions,
    models_dir: Option<PathBuf>,
    runtime_library: Option<PathBuf>,
    optimized_model_cache: Option<PathBuf>,
    weights_mapping: WeightsMapping,
    weights_copy_dir: Option<PathBuf>,
    cuda: bool,
}

impl LoadOptions {
    /// Loads `model`: a local folder, or a Hugging Face repository id (a built-in one such as
    /// `onnx-community/embeddinggemma-300m-ONNX` or `sentence-transformers/all-MiniLM-L6-v2`, or
    /// any other that ships ONNX files). A built-in id is first looked up in the folder that
    /// `scripts/setup.sh` installs models into (`$AKIDB_HOME/models/<name>`, default `.akidb/models`).
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
            optimized_model_cache: None,
            weights_mapping: WeightsMapping::default(),
            weights_copy_dir: None,
            cuda: false,
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

    /// Folder holding installed models by name (default: `$AKIDB_HOME/models`, `.akidb/models`).
    #[must_use]
    pub fn with_models_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.models_dir = Some(dir.into());
        self
    }

    /// The ONNX Runtime library to load (default: see [`crate::runtime`]); only the first
    /// model loaded in a process decides.
    #[must_use]
    pub fn with_runtime_library(mut self, path: impl Into<PathBuf>) -> Self {
        self.runtime_library = Some(path.into());
        self
    }

    /// Saves the optimised graph to this file on first load and loads it from there later,
    /// so later starts skip graph optimisation. The file must be thrown away when the model
    /// or ONNX Runtime changes.
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

    /// The model string this was created with.
    pub fn model(&self) -> &str {
        &self.model
    }
}

/// Up to this many bytes of text, [`EmbeddingProvider::token_counts`] tokenises on the calling
/// task (about a millisecond at most) instead of the blocking pool.
const INLINE_TOKENIZE_BYTES: usize = 16 * 1024;

/// How one graph input is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputKind {
    InputIds,
    AttentionMask,
    TokenTypeIds,
}

struct Model {
    info: ModelInfo,
    pooling: Pooling,
    prompts: std::collections::BTreeMap<String, String>,
    tokenizer: TextTokenizer,
    inputs: Vec<(String, InputKind)>,
    output: String,
    /// ONNX Runtime's `Session::run` takes `&mut self`: runs are serialised, which is why
    /// requests are merged into batches upstream.
    session: Mutex<Session>,
    max_batch_size: usize,
    max_batch_tokens: usize,
}

/// An [`EmbeddingProvider`] running an ONNX model on ONNX Runtime.
///
/// Cheap to clone (the model is shared); safe to use from many threads and tasks at once.
#[derive(Clone)]
pub struct OnnxEmbeddingProvider {
    model: Arc<Model>,
}

impl std::fmt::Debug for OnnxEmbeddingProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxEmbeddingProvider")
            .field("info", &self.model.info)
            .field("pooling", &self.model.pooling)
            .finish()
    }
}

impl OnnxEmbeddingProvider {
    /// Finds the model's files, loads tokenizer and graph, and warms the model up with one
    /// tiny run. Blocking: call it from `spawn_blocking` in async code.
    pub fn load(options: LoadOptions) -> Result<Self> {
        let started = Instant::now();
        let (files, builtin) = resolve_files(&options)?;
        let folder = FolderConfig::read(&files.dir)?;
        let spec = merge_spec(&options, builtin, &folder, &files)?;

        // The tokenizer (a second for Gemma's 262k-token file) and the session (graph
        // optimisation, weights) are independent: build them side by side. A tokenizer error
        // still wins over a session error, as when they ran one after the other.
        let tokenizer_path = files.dir.join("tokenizer.json");
        let (tokenizer, session) = std::thread::scope(|scope| {
            let tokenizer = scope.spawn(|| {
                let mut tokenizer = TextTokenizer::from_file(&tokenizer_path, spec.max_tokens)?;
                if let Some(rows) = folder.vocab_size {
                    tokenizer
                        .check_embedding_rows(rows)
                        .map_err(|e| EmbeddingError::model_load(tokenizer_path.display(), e))?;
                }
                Ok(tokenizer)
            });
            let session = runtime::environment(options.runtime_library.as_deref())
                .and_then(|env| build_session(&env, &options, &files));
            let tokenizer = tokenizer.join().unwrap_or_else(|_| {
                Err(EmbeddingError::model_load(
                    tokenizer_path.display(),
                    "loading the tokenizer panicked",
                ))
            });
            (tokenizer, session)
        });
        let tokenizer = tokenizer?;
        let session = session?;
        let inputs = graph_inputs(&session, &files.onnx)?;
        let outputs: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let pooling = match spec.pooling {
            Some(pooling) => pooling,
            None if outputs.iter().any(|o| o == "sentence_embedding") => Pooling::SentenceEmbedding,
            None => {
                return Err(EmbeddingError::model_load(
                    files.dir.display(),
                    "cannot tell how to pool: the graph has no `sentence_embedding` output and the \
                     folder has no sentence-transformers pooling config; describe it with ModelSpec::with_pooling",
                ));
            }
        };
        let output = pooling.output_name().to_string();
        if !outputs.contains(&output) {
            return Err(EmbeddingError::model_load(
                files.onnx.display(),
                format!(
                    "the graph has no `{output}` output (it has: {})",
                    outputs.join(", ")
                ),
            ));
        }

        let mut model = Model {
            info: ModelInfo {
                id: spec.id.clone(),
                dimension: spec.dimension.unwrap_or(0),
                max_tokens: spec.max_tokens,
                dimensions: Vec::new(),
                prompts: spec.prompts.keys().cloned().collect(),
            },
            pooling,
            prompts: spec.prompts.clone(),
            tokenizer,
            inputs,
            output,
            session: Mutex::new(session),
            max_batch_size: options.max_batch_size,
            max_batch_tokens: options.max_batch_tokens,
        };

        // Warm-up: the first run allocates ONNX Runtime's buffers; doing it here keeps it
        // out of the first request, and tells the real output dimension.
        let warm = model.run_texts(&["warm-up".to_string()], "", Default::default())?;
        let dimension = warm.first().map(|(v, _)| v.len()).unwrap_or(0);
        if dimension == 0 {
            return Err(EmbeddingError::model_load(
                files.onnx.display(),
                "the model produced an empty vector",
            ));
        }
        if let Some(expected) = spec.dimension.filter(|&d| d != dimension) {
            tracing::info!(model = %spec.id, expected, actual = dimension, "graph output dimension differs from the description; using the graph's");
        }
        let mut dimensions = vec![dimension];
        dimensions.extend(
            spec.matryoshka_dimensions
                .iter()
                .copied()
                .filter(|&d| d < dimension && d > 0),
        );
        dimensions.sort_unstable_by(|a, b| b.cmp(a));
        dimensions.dedup();
        model.info.dimension = dimension;
        model.info.dimensions = dimensions;

        tracing::info!(
            model = %model.info.id,
            onnx = %files.onnx.display(),
            dimension,
            max_tokens = model.info.max_tokens,
            pooling = ?model.pooling,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "model loaded and warmed up"
        );
        Ok(Self {
            model: Arc::new(model),
        })
    }

    /// Embeds a request on the calling thread (the synchronous twin of
    /// [`EmbeddingProvider::embed`], for programs without an async runtime).
    pub fn embed_blocking(&self, request: EmbedRequest) -> Result<EmbedResponse> {
        self.model.embed(request)
    }

    /// Token ids of `text` as the model sees it (prompt, special tokens, truncation applied).
    pub fn tokenize(&self, text: &str, prompt_name: Option<&str>) -> Result<Vec<u32>> {
        let prompt = self.model.prompt(prompt_name)?;
        Ok(self
            .model
            .tokenizer
            .encode(&format!("{prompt}{text}"), Default::default(), 0)?
            .ids)
    }

    /// The pooling the model runs with.
    pub fn pooling(&self) -> Pooling {
        self.model.pooling
    }
}

#[async_trait]
impl EmbeddingProvider for OnnxEmbeddingProvider {
    async fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse> {
        let model = Arc::clone(&self.model);
        tokio::task::spawn_blocking(move || model.embed(request))
            .await
            .map_err(|e| EmbeddingError::Inference(format!("embedding task failed: {e}")))?
    }

    async fn token_counts(&self, request: &EmbedRequest) -> Result<Vec<usize>> {
        // Tokenising a few short texts takes microseconds: do it here. A large request (up to
        // megabytes of text) goes to the blocking pool, like a model run.
        let bytes: usize = request.texts.iter().map(String::len).sum();
        if bytes <= INLINE_TOKENIZE_BYTES {
            return self.model.token_counts(request);
        }
        let model = Arc::clone(&self.model);
        let request = request.clone();
        tokio::task::spawn_blocking(move || model.token_counts(&request))
            .await
            .map_err(|e| EmbeddingError::Inference(format!("tokenising task failed: {e}")))?
    }

    fn model_info(&self) -> &ModelInfo {
        &self.model.info
    }

    async fn health_check(&self) -> Result<()> {
        let response = self.embed(EmbedRequest::new(["health check"])).await?;
        match response.embeddings.first() {
            Some(v) if v.len() == self.model.info.dimension => Ok(()),
            _ => Err(EmbeddingError::Inference(
                "health check: the model returned no vector of the expected dimension".to_string(),
            )),
        }
    }
}

impl Model {
    fn prompt(&self, name: Option<&str>) -> Result<&str> {
        validate::resolve_prompt(
            name,
            |n| self.prompts.get(n).map(String::as_str),
            &self.info.prompts,
        )
    }

    fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse> {
        let started = Instant::now();
        let dimension = validate::check_request(&request, &self.info)?;
        let prompt = self.prompt(request.prompt_name.as_deref())?;
        let raw = self.run_texts(&request.texts, prompt, request.truncation)?;
        let mut embeddings = Vec::with_capacity(raw.len());
        let mut token_counts = Vec::with_capacity(raw.len());
        for (index, (vector, tokens)) in raw.into_iter().enumerate() {
            embeddings.push(vector::finish(vector, dimension, request.normalize, index)?);
            token_counts.push(tokens);
        }
        let response = EmbedResponse::new(embeddings, dimension, token_counts);
        tracing::debug!(
            model = %self.info.id,
            batch_size = response.count,
            tokens = response.total_tokens,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "embedded"
        );
        Ok(response)
    }

    /// Tokenises `texts` with `prompt` prepended, in order.
    fn tokenize_all(
        &self,
        texts: &[String],
        prompt: &str,
        truncation: akidb_embedding_core::Truncation,
    ) -> Result<Vec<TokenizedText>> {
        let mut prompted = String::new();
        texts
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let text = if prompt.is_empty() {
                    text.as_str()
                } else {
                    prompted.clear();
                    prompted.push_str(prompt);
                    prompted.push_str(text);
                    prompted.as_str()
                };
                self.tokenizer.encode(text, truncation, index)
            })
            .collect()
    }

    /// What [`EmbeddingProvider::token_counts`] answers.
    fn token_counts(&self, request: &EmbedRequest) -> Result<Vec<usize>> {
        validate::check_request(request, &self.info)?;
        let prompt = self.prompt(request.prompt_name.as_deref())?;
        Ok(self
            .tokenize_all(&request.texts, prompt, request.truncation)?
            .iter()
            .map(TokenizedText::len)
            .collect())
    }

    /// Tokenises, runs and pools `texts`; returns (raw vector, token count) per text, in order.
    fn run_texts(
        &self,
        texts: &[String],
        prompt: &str,
        truncation: akidb_embedding_core::Truncation,
    ) -> Result<Vec<(Vec<f32>, usize)>> {
        let tokenized = self.tokenize_all(texts, prompt, truncation)?;
        let lengths: Vec<usize> = tokenized.iter().map(TokenizedText::len).collect();
        let mut results: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        let mut buffers = RunBuffers::default();
        for run in plan_runs(&lengths, self.max_batch_size, self.max_batch_tokens) {
            let vectors = self.run_batch(&run, &tokenized, &mut buffers)?;
            for (index, vector) in run.into_iter().zip(vectors) {
                results[index] = Some(vector);
            }
        }
        results
            .into_iter()
            .zip(lengths)
            .enumerate()
            .map(|(index, (vector, tokens))| {
                vector.map(|v| (v, tokens)).ok_or_else(|| {
                    EmbeddingError::Inference(format!("no vector was produced for text {index}"))
                })
            })
            .collect()
    }

    /// One model run over the texts at positions `run`, padded to the longest of them.
    fn run_batch(
        &self,
        run: &[usize],
        tokenized: &[TokenizedText],
        buffers: &mut RunBuffers,
    ) -> Result<Vec<Vec<f32>>> {
        let batch = run.len();
        let seq = run.iter().map(|&i| tokenized[i].len()).max().unwrap_or(0);
        buffers.fill(run, tokenized, seq, i64::from(self.tokenizer.pad_id()));
        let shape = [batch, seq];
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(self.inputs.len());
        for (name, kind) in &self.inputs {
            let data: &[i64] = match kind {
                InputKind::InputIds => &buffers.ids,
                InputKind::AttentionMask => &buffers.mask,
                InputKind::TokenTypeIds => &buffers.type_ids,
            };
            let tensor = TensorRef::from_array_view((shape, data)).map_err(|e| {
                EmbeddingError::Inference(format!("cannot build input `{name}`: {e}"))
            })?;
            inputs.push((Cow::Borrowed(name.as_str()), tensor.into()));
        }
        let mut session = self.session.lock().map_err(|_| {
            EmbeddingError::Inference(
                "a previous run panicked while holding the session".to_string(),
            )
        })?;
        let outputs = session.run(inputs).map_err(|e| {
            EmbeddingError::Inference(format!(
                "ONNX Runtime run failed (batch {batch} × {seq} tokens): {e}"
            ))
        })?;
        let value = outputs.get(&self.output).ok_or_else(|| {
            EmbeddingError::Inference(format!("the run returned no `{}` output", self.output))
        })?;
        let (out_shape, data) = value.try_extract_tensor::<f32>().map_err(|e| {
            EmbeddingError::Inference(format!(
                "output `{}` is not a float tensor: {e}",
                self.output
            ))
        })?;
        pool(self.pooling, data, out_shape, &buffers.mask, batch, seq)
    }
}

/// Input buffers reused across the runs of a request (no per-run allocation after the first).
#[derive(Default)]
struct RunBuffers {
    ids: Vec<i64>,
    mask: Vec<i64>,
    type_ids: Vec<i64>,
}

impl RunBuffers {
    fn fill(&mut self, run: &[usize], tokenized: &[TokenizedText], seq: usize, pad_id: i64) {
        let size = run.len() * seq;
        self.ids.clear();
        self.ids.resize(size, pad_id);
        self.mask.clear();
        self.mask.resize(size, 0);
        self.type_ids.clear();
        self.type_ids.resize(size, 0);
        for (row, &index) in run.iter().enumerate() {
            let text = &tokenized[index];
            let start = row * seq;
            for (offset, (&id, &type_id)) in text.ids.iter().zip(&text.type_ids).enumerate() {
                self.ids[start + offset] = i64::from(id);
                self.type_ids[start + offset] = i64::from(type_id);
                self.mask[start + offset] = 1;
            }
        }
    }
}

/// Finds the files for `options.model` and the built-in row it names, if any.
fn resolve_files(options: &LoadOptions) -> Result<(ModelFiles, Option<ModelSpec>)> {
    let model = options.model.as_str();
    let builtin = options.spec.clone().or_else(|| ModelSpec::builtin(model));
    let path = Path::new(model);
    if path.is_dir() {
        return Ok((
            source::local_files(path, &options.variant, builtin.as_ref())?,
            builtin,
        ));
    }
    if let Some(installed) = builtin
        .as_ref()
        .and_then(|spec| spec.install_dir.as_deref())
        .and_then(|name| installed_dir(options, name))
    {
        tracing::debug!(model, folder = %installed.display(), "using the installed copy");
        return Ok((
            source::local_files(&installed, &options.variant, builtin.as_ref())?,
            builtin,
        ));
    }
    let looks_like_repo =
        model.split('/').count() == 2 && !model.starts_with('.') && !model.starts_with('/');
    if !looks_like_repo {
        return Err(EmbeddingError::model_load(
            model,
            "no such folder, and not a Hugging Face repository id (owner/name)",
        ));
    }
    let repo = builtin.as_ref().map_or(model, |spec| spec.id.as_str());
    Ok((
        source::hub_files(repo, &options.variant, builtin.as_ref(), &options.hub)?,
        builtin,
    ))
}

fn installed_dir(options: &LoadOptions, name: &str) -> Option<PathBuf> {
    let mut roots = Vec::new();
    if let Some(dir) = &options.models_dir {
        roots.push(dir.clone());
    } else {
        if let Some(home) = std::env::var_os("AKIDB_HOME") {
            roots.push(PathBuf::from(home).join("models"));
        }
        roots.push(PathBuf::from(".akidb/models"));
        roots.push(runtime::workspace_akidb_home().join("models"));
    }
    roots
        .into_iter()
        .map(|root| root.join(name))
        .find(|dir| dir.join("tokenizer.json").is_file())
}

/// Combines, in increasing priority: the built-in row (matched by id or by `model_type`), the
/// folder's sentence-transformers files. An explicit [`LoadOptions::with_spec`] wins over both.
fn merge_spec(
    options: &LoadOptions,
    builtin: Option<ModelSpec>,
    folder: &FolderConfig,
    files: &ModelFiles,
) -> Result<ModelSpec> {
    if let Some(spec) = &options.spec {
        let mut spec = spec.clone();
        if let Some(id) = &options.id {
            spec.id = id.clone();
        }
        return Ok(spec);
    }
    let by_type = folder
        .model_type
        .as_deref()
        .and_then(ModelSpec::builtin_for_model_type);
    let named = builtin.is_some();
    let base = builtin.or(by_type);
    let default_id = if named {
        base.as_ref().map(|s| s.id.clone())
    } else if Path::new(&options.model).is_dir() {
        files
            .dir
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
    } else {
        Some(options.model.clone())
    };
    let id = options
        .id
        .clone()
        .or(default_id)
        .unwrap_or_else(|| options.model.clone());
    let max_tokens = folder
        .max_tokens
        .or(base.as_ref().map(|s| s.max_tokens))
        .ok_or_else(|| {
            EmbeddingError::model_load(
                files.dir.display(),
                "cannot tell the token limit: no sentence_bert_config.json and no built-in description; \
                 describe the model with LoadOptions::with_spec",
            )
        })?;
    let mut spec = match base {
        Some(base) => ModelSpec {
            id,
            max_tokens,
            ..base
        },
        None => ModelSpec::custom(id, max_tokens),
    };
    // A pooling the folder declares is honoured, except that a graph that pools itself
    // (EmbeddingGemma's `sentence_embedding`) is decided by the graph: see `load`.
    if spec.pooling != Some(Pooling::SentenceEmbedding)
        && let Some(pooling) = folder.pooling
    {
        spec.pooling = Some(pooling);
    }
    if let Some(prompts) = &folder.prompts {
        spec.prompts = prompts.clone();
    }
    Ok(spec)
}

fn build_session(
    env: &ort::environment::Environment,
    options: &LoadOptions,
    files: &ModelFiles,
) -> Result<Session> {
    let onnx = &files.onnx;
    let load_error = |e: &dyn std::fmt::Display| {
        let mut reason = e.to_string();
        if let Some(data) = &files.onnx_data {
            reason.push_str(&format!(" (weights file: {})", data.display()));
        }
        EmbeddingError::model_load(onnx.display(), reason)
    };
    let mut builder = Session::builder(env).map_err(|e| load_error(&e))?;
    builder = builder
        .with_optimization_level(options.optimization.to_ort())
        .map_err(|e| load_error(&e))?;
    if let Some(threads) = options.intra_threads {
        builder = builder
            .with_intra_threads(threads)
            .map_err(|e| load_error(&e))?;
    }
    if options.cuda {
        builder = with_cuda(builder).map_err(|e| load_error(&e))?;
    }
    let source: &Path = match &options.optimized_model_cache {
        Some(cache) if cache.is_file() => {
            tracing::info!(cache = %cache.display(), "loading the optimised graph saved earlier");
            builder = builder
                .with_optimization_level(GraphOptimizationLevel::Disable)
                .map_err(|e| load_error(&e))?;
            cache
        }
        Some(cache) => {
            builder = builder
                .with_optimized_model_path(cache)
                .map_err(|e| load_error(&e))?;
            onnx
        }
        None => onnx,
    };
    // Split weights are mapped, not read: map a private copy unless asked not to (see
    // `crate::weights`). The copy is unlinked when `private` drops, right after the session
    // holds its mapping.
    let private = match (&files.onnx_data, options.weights_mapping) {
        (Some(data), WeightsMapping::PrivateCopy) if source == onnx.as_path() => Some(
            PrivateWeights::create(onnx, data, options.weights_copy_dir.as_deref())?,
        ),
        _ => None,
    };
    let source = private.as_ref().map_or(source, PrivateWeights::onnx);
    builder.commit_from_file(source).map_err(|e| load_error(&e))
}

#[cfg(feature = "cuda")]
fn with_cuda(
    builder: ort::session::builder::SessionBuilder,
) -> ort::Result<ort::session::builder::SessionBuilder> {
    builder
        .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
        .map_err(|e| ort::Error::new(e.to_string()))
}

#[cfg(not(feature = "cuda"))]
fn with_cuda(
    _builder: ort::session::builder::SessionBuilder,
) -> ort::Result<ort::session::builder::SessionBuilder> {
    Err(ort::Error::new(
        "CUDA was requested but akidb-embedding-onnx was built without its `cuda` feature",
    ))
}

fn graph_inputs(session: &Session, onnx: &Path) -> Result<Vec<(String, InputKind)>> {
    session
        .inputs()
        .iter()
        .map(|input| {
            let kind = match input.name() {
                "input_ids" => InputKind::InputIds,
                "attention_mask" => InputKind::AttentionMask,
                "token_type_ids" => InputKind::TokenTypeIds,
                other => {
                    return Err(EmbeddingError::model_load(
                        onnx.display(),
                        format!("unsupported graph input `{other}` (supported: input_ids, attention_mask, token_type_ids)"),
                    ));
                }
            };
            Ok((input.name().to_string(), kind))
        })
        .collect()
}
