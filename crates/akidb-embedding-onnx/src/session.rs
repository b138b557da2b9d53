//! An ONNX Runtime session and the runs over it: building the session from a model's files,
//! turning encodings into input tensors, running, and pooling the output.
//!
//! Inputs are built as `ndarray` arrays and handed to ONNX Runtime as views; the output is
//! read as a view of ONNX Runtime's own buffer and pooled from there ([`crate::pooling`]), so
//! nothing is copied that the API does not require.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use akidb_embedding_core::batching::plan_runs;
use akidb_embedding_core::{EmbeddingError, Encoding, Result};
use ndarray::Array2;
use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;

use crate::pooling::pool;
use crate::source::ModelFiles;
use crate::weights::{PrivateWeights, WeightsMapping};
use crate::{LoadOptions, Pooling};

/// What a graph input is filled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InputKind {
    InputIds,
    AttentionMask,
    TokenTypeIds,
}

impl InputKind {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "input_ids" => Some(Self::InputIds),
            "attention_mask" => Some(Self::AttentionMask),
            "token_type_ids" => Some(Self::TokenTypeIds),
            _ => None,
        }
    }
}

/// A loaded graph, ready to run batches of encodings.
pub(crate) struct OnnxSession {
    /// ONNX Runtime's `Session::run` takes `&mut self`: runs are serialised, which is why
    /// requests are merged into batches upstream.
    session: Mutex<Session>,
    inputs: Vec<(String, InputKind)>,
    output: String,
    pooling: Pooling,
    pad_id: i64,
    max_batch_size: usize,
    max_batch_tokens: usize,
}

impl OnnxSession {
    /// Checks the graph's inputs and outputs against what the pipeline feeds and reads, and
    /// decides the pooling: `declared` if any, else the graph's own `sentence_embedding`.
    pub(crate) fn new(
        session: Session,
        files: &ModelFiles,
        declared: Option<Pooling>,
        pad_id: u32,
        options: &LoadOptions,
    ) -> Result<Self> {
        let inputs = session
            .inputs()
            .iter()
            .map(|input| {
                InputKind::from_name(input.name())
                    .map(|kind| (input.name().to_string(), kind))
                    .ok_or_else(|| {
                        EmbeddingError::model_load(
                            files.onnx.display(),
                            format!(
                                "unsupported graph input `{}` (supported: input_ids, attention_mask, token_type_ids)",
                                input.name()
                            ),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let outputs: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let pooling = choose_pooling(declared, &outputs)
            .map_err(|reason| EmbeddingError::model_load(files.dir.display(), reason))?;
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
        Ok(Self {
            session: Mutex::new(session),
            inputs,
            output,
            pooling,
            pad_id: i64::from(pad_id),
            max_batch_size: options.max_batch_size,
            max_batch_tokens: options.max_batch_tokens,
        })
    }

    /// The pooling the session runs with.
    pub(crate) fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// The session, for one caller at a time.
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Session>> {
        self.session.lock().map_err(|_| {
            EmbeddingError::Inference(
                "a previous run panicked while holding the session".to_string(),
            )
        })
    }

    /// Ends ONNX Runtime's profile (see [`LoadOptions::with_profiling`]) and returns the
    /// file it wrote.
    pub(crate) fn end_profiling(&self) -> Result<PathBuf> {
        let mut session = self.lock()?;
        let file = session.end_profiling().map_err(|e| {
            EmbeddingError::Inference(format!("ONNX Runtime cannot end its profile: {e}"))
        })?;
        if file.is_empty() {
            return Err(EmbeddingError::InvalidInput(
                "the session was not loaded with a profile (LoadOptions::with_profiling)"
                    .to_string(),
            ));
        }
        Ok(PathBuf::from(file))
    }

    /// Runs and pools `encodings` in as many model runs as the batch bounds need (formed by
    /// [`plan_runs`]); returns one raw vector per encoding, in order.
    pub(crate) fn run_all(&self, encodings: &[Encoding]) -> Result<Vec<Vec<f32>>> {
        let lengths: Vec<usize> = encodings.iter().map(Encoding::len).collect();
        let mut results: Vec<Option<Vec<f32>>> = vec![None; encodings.len()];
        for run in plan_runs(&lengths, self.max_batch_size, self.max_batch_tokens) {
            let members: Vec<&Encoding> = run.iter().filter_map(|&i| encodings.get(i)).collect();
            let vectors = self.run(&members)?;
            for (index, vector) in run.into_iter().zip(vectors) {
                if let Some(slot) = results.get_mut(index) {
                    *slot = Some(vector);
                }
            }
        }
        results
            .into_iter()
            .enumerate()
            .map(|(index, vector)| {
                vector.ok_or_else(|| {
                    EmbeddingError::Inference(format!("no vector was produced for text {index}"))
                })
            })
            .collect()
    }

    /// One model run over `batch`, padded to its longest encoding.
    fn run(&self, batch: &[&Encoding]) -> Result<Vec<Vec<f32>>> {
        let tensors = InputTensors::new(batch, self.pad_id);
        let (rows, seq) = tensors.ids.dim();
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(self.inputs.len());
        for (name, kind) in &self.inputs {
            let array = tensors.get(*kind);
            let tensor = TensorRef::from_array_view(array.view()).map_err(|e| {
                EmbeddingError::Inference(format!("cannot build input `{name}`: {e}"))
            })?;
            inputs.push((Cow::Borrowed(name.as_str()), tensor.into()));
        }
        let mut session = self.lock()?;
        let outputs = session.run(inputs).map_err(|e| {
            EmbeddingError::Inference(format!(
                "ONNX Runtime run failed (batch {rows} × {seq} tokens): {e}"
            ))
        })?;
        let value = outputs.get(&self.output).ok_or_else(|| {
            EmbeddingError::Inference(format!("the run returned no `{}` output", self.output))
        })?;
        let output = value.try_extract_array::<f32>().map_err(|e| {
            EmbeddingError::Inference(format!(
                "output `{}` is not a float tensor: {e}",
                self.output
            ))
        })?;
        pool(self.pooling, output, tensors.mask.view())
    }
}

/// The pooling to run with: the declared one, else the graph's own `sentence_embedding`.
fn choose_pooling(declared: Option<Pooling>, outputs: &[String]) -> Result<Pooling, String> {
    match declared {
        Some(pooling) => Ok(pooling),
        None if outputs.iter().any(|o| o == "sentence_embedding") => {
            Ok(Pooling::SentenceEmbedding)
        }
        None => Err(
            "cannot tell how to pool: the graph has no `sentence_embedding` output and the \
             folder has no sentence-transformers pooling config; describe it with ModelSpec::with_pooling"
                .to_string(),
        ),
    }
}

/// The input tensors of one run, `[batch, longest]`, padded on the right.
struct InputTensors {
    ids: Array2<i64>,
    mask: Array2<i64>,
    type_ids: Array2<i64>,
}

impl InputTensors {
    fn new(batch: &[&Encoding], pad_id: i64) -> Self {
        let seq = batch.iter().map(|e| e.len()).max().unwrap_or(0);
        let shape = (batch.len(), seq);
        let mut ids = Array2::from_elem(shape, pad_id);
        let mut mask = Array2::zeros(shape);
        let mut type_ids = Array2::zeros(shape);
        for (row, encoding) in batch.iter().enumerate() {
            let widen = |(slot, &value): (&mut i64, &u32)| *slot = i64::from(value);
            ids.row_mut(row)
                .iter_mut()
                .zip(&encoding.ids)
                .for_each(widen);
            type_ids
                .row_mut(row)
                .iter_mut()
                .zip(&encoding.type_ids)
                .for_each(widen);
            mask.row_mut(row)
                .iter_mut()
                .take(encoding.len())
                .for_each(|slot| *slot = 1);
        }
        Self {
            ids,
            mask,
            type_ids,
        }
    }

    fn get(&self, kind: InputKind) -> &Array2<i64> {
        match kind {
            InputKind::InputIds => &self.ids,
            InputKind::AttentionMask => &self.mask,
            InputKind::TokenTypeIds => &self.type_ids,
        }
    }
}

/// The file work that comes before a session: whether a saved optimised graph is used, and
/// the private copy of the weights (see [`crate::weights`]). It is only I/O, so the provider
/// does it beside the tokenizer's parse; [`build`] then makes the session from it.
#[derive(Debug)]
pub(crate) struct SessionFiles {
    cache: CacheUse,
    /// The private copy, unlinked when this drops, right after the session holds its mapping.
    private: Option<PrivateWeights>,
}

/// What [`build`] does with [`LoadOptions::optimized_model_cache`].
#[derive(Debug)]
enum CacheUse {
    /// No cache asked for: the source graph is optimised.
    None,
    /// The saved optimised graph at this path matches the source files and settings.
    Fresh(std::path::PathBuf),
    /// Optimise the source graph and save the result here, then record `identity` in
    /// `sidecar`.
    Save {
        cache: std::path::PathBuf,
        sidecar: std::path::PathBuf,
        identity: String,
    },
}

/// Decides on the optimised-graph cache and makes the private weights copy `options` ask
/// for; see [`SessionFiles`].
pub(crate) fn prepare(options: &LoadOptions, files: &ModelFiles) -> Result<SessionFiles> {
    // The optimised-graph cache is used only when its sidecar names exactly these source files
    // (size and modification time) and settings; anything else is rebuilt, never used.
    let cache = match &options.optimized_model_cache {
        Some(cache) => {
            let identity = optimized_cache_identity(files, options);
            let sidecar = optimized_cache_sidecar(cache);
            let fresh = cache.is_file()
                && std::fs::read_to_string(&sidecar).is_ok_and(|saved| saved == identity);
            if fresh {
                CacheUse::Fresh(cache.clone())
            } else {
                if cache.exists() {
                    tracing::info!(
                        cache = %cache.display(),
                        "the optimised graph was made from other files or settings; rebuilding it"
                    );
                }
                // A stale sidecar must not vouch for the files about to be rewritten.
                let _ = std::fs::remove_file(&sidecar);
                CacheUse::Save {
                    cache: cache.clone(),
                    sidecar,
                    identity,
                }
            }
        }
        None => CacheUse::None,
    };
    // Split weights are mapped, not read: map a private copy unless asked not to (see
    // `crate::weights`). A fresh cache has weights of its own, written by this process.
    let private = match (&files.onnx_data, options.weights_mapping, &cache) {
        (_, _, CacheUse::Fresh(_)) => None,
        (Some(data), WeightsMapping::PrivateCopy, _) => Some(PrivateWeights::create(
            &files.onnx,
            data,
            options.weights_copy_dir.as_deref(),
        )?),
        _ => None,
    };
    Ok(SessionFiles { cache, private })
}

/// Builds the ONNX Runtime session for `files` as `options` ask: optimisation level, threads,
/// execution provider, optimised-graph cache, and how split weights are mapped (`prepared`,
/// from [`prepare`]).
pub(crate) fn build(
    env: &Environment,
    options: &LoadOptions,
    files: &ModelFiles,
    prepared: SessionFiles,
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
    // Graphs the fusion wrote may hold `ai.akidb::MatMulQ8`.
    builder = builder
        .with_operators(crate::q8_matmul::operator_domain().map_err(|e| load_error(&e))?)
        .map_err(|e| load_error(&e))?;
    if options.cuda {
        builder = with_cuda(builder).map_err(|e| load_error(&e))?;
    }
    if !options.cpu_arena {
        builder = without_cpu_arena(builder).map_err(|e| load_error(&e))?;
    }
    if let Some(prefix) = &options.profiling {
        builder = builder.with_profiling(prefix).map_err(|e| load_error(&e))?;
    }
    let SessionFiles { cache, private } = prepared;
    // The source graph: the private copy when one was made.
    let original = private
        .as_ref()
        .map_or(onnx.as_path(), PrivateWeights::onnx);
    let mut record_cache = None;
    let source: &Path = match &cache {
        CacheUse::Fresh(cache) => {
            tracing::info!(cache = %cache.display(), "loading the optimised graph saved earlier");
            builder = builder
                .with_optimization_level(GraphOptimizationLevel::Disable)
                .map_err(|e| load_error(&e))?;
            cache
        }
        CacheUse::Save {
            cache,
            sidecar,
            identity,
        } => {
            // Weights go to a file of their own beside the graph, as in the source: a
            // 1.2 GB graph cannot be one protobuf, and the file is mapped, not read.
            builder = builder
                .with_optimized_model_path(cache)
                .map_err(|e| load_error(&e))?;
            builder = builder
                .with_config_entry(
                    "session.optimized_model_external_initializers_file_name",
                    optimized_cache_weights_name(cache),
                )
                .map_err(|e| load_error(&e))?;
            builder = builder
                .with_config_entry(
                    "session.optimized_model_external_initializers_min_size_in_bytes",
                    "1024",
                )
                .map_err(|e| load_error(&e))?;
            record_cache = Some((sidecar, identity));
            original
        }
        CacheUse::None => original,
    };
    let session = crate::q8_matmul::create_session(|| builder.commit_from_file(source))
        .map_err(|e| load_error(&e))?;
    // The session holds its mapping: the private copy can leave the file system.
    drop(private);
    if let Some((sidecar, identity)) = record_cache {
        // Written last, after ONNX Runtime has written the graph and its weights: a cache
        // without its sidecar (an interrupted save) is never used.
        if let Err(error) = std::fs::write(sidecar, identity) {
            tracing::warn!(sidecar = %sidecar.display(), %error, "cannot record the optimised graph's source; it will be rebuilt at the next load");
        }
    }
    Ok(session)
}

/// What an optimised graph depends on: each source file's size and modification time, and
/// the settings that shape the optimised graph (level, threads, execution provider).
fn optimized_cache_identity(files: &ModelFiles, options: &LoadOptions) -> String {
    let mut identity = format!(
        "akidb optimised graph v1\noptimization {:?}\nintra_threads {:?}\ncuda {}\n",
        options.optimization, options.intra_threads, options.cuda
    );
    for path in std::iter::once(&files.onnx).chain(files.onnx_data.as_ref()) {
        let stamp = std::fs::metadata(path).ok().map(|m| {
            let modified = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos());
            (m.len(), modified)
        });
        identity.push_str(&format!("{} {stamp:?}\n", path.display()));
    }
    identity
}

/// The sidecar recording what the optimised graph at `cache` was made from.
fn optimized_cache_sidecar(cache: &Path) -> std::path::PathBuf {
    let mut name = cache.as_os_str().to_owned();
    name.push(".source");
    std::path::PathBuf::from(name)
}

/// The file name (beside `cache`) of the optimised graph's weights.
fn optimized_cache_weights_name(cache: &Path) -> String {
    let name = cache
        .file_name()
        .map_or_else(|| "optimized.onnx".into(), |n| n.to_string_lossy());
    format!("{name}_data")
}

/// Turns ONNX Runtime's CPU memory arena off (`DisableCpuMemArena` on the session options:
/// ort rc.15 reaches it only through its CPU execution provider, which appends no provider,
/// so CUDA, when asked for, keeps its place). Left alone when the arena is wanted: ONNX
/// Runtime's default is on.
fn without_cpu_arena(
    builder: ort::session::builder::SessionBuilder,
) -> ort::Result<ort::session::builder::SessionBuilder> {
    builder
        .with_execution_providers([ort::ep::CPU::default()
            .with_arena_allocator(false)
            .build()
            .error_on_failure()])
        .map_err(|e| ort::Error::new(e.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_padded_on_the_right_with_a_mask() {
        let short = Encoding::new(vec![2, 7, 1]);
        let long = Encoding {
            ids: vec![2, 8, 9, 10, 1],
            type_ids: vec![0, 0, 1, 1, 1],
        };
        let tensors = InputTensors::new(&[&short, &long], 5);
        assert_eq!(
            tensors.get(InputKind::InputIds),
            &ndarray::arr2(&[[2, 7, 1, 5, 5], [2, 8, 9, 10, 1]])
        );
        assert_eq!(
            tensors.get(InputKind::AttentionMask),
            &ndarray::arr2(&[[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
        );
        assert_eq!(
            tensors.get(InputKind::TokenTypeIds),
            &ndarray::arr2(&[[0, 0, 0, 0, 0], [0, 0, 1, 1, 1]])
        );
        assert!(
            tensors.ids.is_standard_layout(),
            "ONNX Runtime needs contiguous rows"
        );
    }

    #[test]
    fn graph_names_map_to_inputs_and_pooling_is_declared_or_the_graphs() {
        assert_eq!(
            InputKind::from_name("attention_mask"),
            Some(InputKind::AttentionMask)
        );
        assert_eq!(InputKind::from_name("pixel_values"), None);
        let gemma = [
            "last_hidden_state".to_string(),
            "sentence_embedding".to_string(),
        ];
        assert_eq!(choose_pooling(None, &gemma), Ok(Pooling::SentenceEmbedding));
        assert_eq!(
            choose_pooling(Some(Pooling::Mean), &gemma),
            Ok(Pooling::Mean)
        );
        let err = choose_pooling(None, &gemma[..1]).unwrap_err();
        assert!(err.contains("ModelSpec::with_pooling"), "{err}");
    }
}
