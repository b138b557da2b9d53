//! The ONNX Runtime provider: a loaded model (tokenizer, prompts, session) behind the
//! [`EmbeddingProvider`] contract.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use akidb_embedding_core::{
    EmbedRequest, EmbedResponse, EmbeddingError, EmbeddingProvider, Encoding, ModelInfo, Result,
    TextEncoder, TokenSpan, TokenizedRequest, Truncation, pipeline,
};
use async_trait::async_trait;

use crate::runtime::{self, RuntimeSearch};
use crate::session::{self, OnnxSession};
use crate::st_config::FolderConfig;
use crate::tokenize::TextTokenizer;
use crate::{LoadOptions, Pooling, model_spec, source};

/// Up to this many bytes of text, [`EmbeddingProvider::tokenize`] tokenises on the calling
/// task (about a millisecond at most) instead of the blocking pool.
const INLINE_TOKENIZE_BYTES: usize = 16 * 1024;

struct Model {
    info: ModelInfo,
    prompts: BTreeMap<String, String>,
    tokenizer: TextTokenizer,
    session: OnnxSession,
    /// Texts tokenised since load (see [`OnnxEmbeddingProvider::tokenizer_calls`]).
    tokenizer_calls: AtomicU64,
}

/// An [`EmbeddingProvider`] running an ONNX model on ONNX Runtime.
///
/// Cheap to clone (the model is shared); safe to use from many threads and tasks at once.
/// The async [`EmbeddingProvider::run`] hands each model run to one thread of the model's own
/// (as text-embeddings-inference's backend thread does): runs of one model go one at a time,
/// each spread over ONNX Runtime's intra-op threads, always from the same calling thread, so
/// its caches and allocator arena stay warm (handed to tokio's blocking pool instead, a run
/// now and then waits for a thread and takes three times its median: `benches/README.md`,
/// "Against text-embeddings-inference"). The blocking methods run on the caller's thread.
#[derive(Clone)]
pub struct OnnxEmbeddingProvider {
    model: Arc<Model>,
    runner: Arc<Runner>,
}

/// One model run for the [`Runner`]'s thread, and where its result goes.
type RunJob = (
    Vec<Encoding>,
    tokio::sync::oneshot::Sender<Result<Vec<Vec<f32>>>>,
);

/// The thread that runs a model's async runs. It ends when the last provider sharing it is
/// dropped (its channel closes).
struct Runner {
    jobs: std::sync::mpsc::Sender<RunJob>,
}

impl Runner {
    fn start(model: &Arc<Model>) -> Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<RunJob>();
        let id = model.info.id.clone();
        // Thread names are cut to 15 bytes by Linux: the model's last path part, short.
        let name: String = id
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .chars()
            .take(10)
            .collect();
        let model = Arc::clone(model);
        std::thread::Builder::new()
            .name(format!("run-{name}"))
            .spawn(move || {
                for (batch, reply) in queue {
                    if reply.is_closed() {
                        continue;
                    }
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        model.session.run_all(&batch)
                    }))
                    .unwrap_or_else(|_| {
                        Err(EmbeddingError::Inference("the model run panicked".into()))
                    });
                    // The caller may have gone meanwhile: nothing to tell.
                    let _ = reply.send(result);
                }
            })
            .map_err(|error| {
                EmbeddingError::model_load(
                    id,
                    format!("cannot start the model's run thread: {error}"),
                )
            })?;
        Ok(Self { jobs })
    }
}

impl std::fmt::Debug for OnnxEmbeddingProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxEmbeddingProvider")
            .field("info", &self.model.info)
            .field("pooling", &self.model.session.pooling())
            .finish()
    }
}

impl OnnxEmbeddingProvider {
    /// Finds the model's files, loads tokenizer and graph, and warms the model up with one
    /// tiny run. Blocking: call it from `spawn_blocking` in async code.
    pub fn load(options: LoadOptions) -> Result<Self> {
        let started = Instant::now();
        let (files, builtin) = source::resolve(&options)?;
        let files = match &options.fuse {
            Some(fuse) => {
                crate::quantize::cache::fused_files(files, fuse, options.hub.cache_dir.as_deref())?
            }
            None => files,
        };
        let folder = FolderConfig::read(&files.dir)?;
        let spec = model_spec::merge(&options, builtin, &folder, &files.dir)?;

        // Three pieces of work: the tokenizer's parse (0.6 s for Gemma's 262k-token file),
        // the runtime library and the private weights copy (I/O: 1.2 GB for Gemma in fp32),
        // and the session (graph optimisation, weight pre-packing). The copy runs beside the
        // parse; the session is then built on this thread, after the parse, so ONNX Runtime's
        // allocations fill the heap the parse freed instead of growing another malloc arena
        // (30 MiB less resident for Gemma; `benches/README.md`, "Why these settings"). A
        // tokenizer error wins over a session error, as if the two ran one after the other.
        let tokenizer_path = files.dir.join("tokenizer.json");
        let (tokenizer, session) = std::thread::scope(|scope| -> Result<_> {
            let prepared = scope.spawn(|| {
                let search = RuntimeSearch {
                    library: options.runtime_library.as_deref(),
                    candidates: &options.runtime_search,
                };
                let env = runtime::environment(search)?;
                let files = session::prepare(&options, &files)?;
                Ok((env, files))
            });
            let tokenizer = load_tokenizer(&tokenizer_path, spec.max_tokens, folder.vocab_size);
            let prepared = prepared.join().unwrap_or_else(|_| {
                Err(EmbeddingError::model_load(
                    files.onnx.display(),
                    "preparing the model files panicked",
                ))
            });
            let tokenizer = tokenizer?;
            let (env, prepared) = prepared?;
            let session = session::build(&env, &options, &files, prepared)?;
            Ok((tokenizer, session))
        })?;
        let session =
            OnnxSession::new(session, &files, spec.pooling, tokenizer.pad_id(), &options)?;

        // Warm-up: the first run allocates ONNX Runtime's buffers; doing it here keeps it
        // out of the first request, and tells the real output dimension.
        let warm = tokenizer.encode("warm-up", Truncation::Truncate, 0)?;
        let dimension = session.run_all(&[warm])?.first().map_or(0, Vec::len);
        if dimension == 0 {
            return Err(EmbeddingError::model_load(
                files.onnx.display(),
                "the model produced an empty vector",
            ));
        }
        if let Some(expected) = spec.dimension.filter(|&d| d != dimension) {
            tracing::info!(model = %spec.id, expected, actual = dimension, "graph output dimension differs from the description; using the graph's");
        }
        let model = Model {
            info: ModelInfo {
                id: spec.id.clone(),
                dimension,
                max_tokens: spec.max_tokens,
                dimensions: supported_dimensions(dimension, &spec.matryoshka_dimensions),
                prompts: spec.prompts.keys().cloned().collect(),
            },
            prompts: spec.prompts,
            tokenizer,
            session,
            tokenizer_calls: AtomicU64::new(0),
        };
        tracing::info!(
            model = %model.info.id,
            onnx = %files.onnx.display(),
            dimension,
            max_tokens = model.info.max_tokens,
            pooling = ?model.session.pooling(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "model loaded and warmed up"
        );
        let model = Arc::new(model);
        let runner = Arc::new(Runner::start(&model)?);
        Ok(Self { model, runner })
    }

    /// Embeds a request on the calling thread (the synchronous twin of
    /// [`EmbeddingProvider::embed`], for programs without an async runtime).
    pub fn embed_blocking(&self, request: EmbedRequest) -> Result<EmbedResponse> {
        self.model.embed(request)
    }

    /// Token ids of `text` as the model sees it (prompt, special tokens, truncation applied).
    pub fn token_ids(&self, text: &str, prompt_name: Option<&str>) -> Result<Vec<u32>> {
        let mut request = EmbedRequest::new([text]);
        request.prompt_name = prompt_name.map(str::to_string);
        let tokenized = pipeline::tokenize(&*self.model, &request)?;
        Ok(tokenized
            .encodings
            .into_iter()
            .next()
            .map(|encoding| encoding.ids)
            .unwrap_or_default())
    }

    /// Ends the ONNX Runtime profile recorded since load and returns the file it wrote (see
    /// [`crate::LoadOptions::with_profiling`]); an [`EmbeddingError::InvalidInput`] when the
    /// provider was loaded without one. Runs after this are not recorded.
    pub fn end_profiling(&self) -> Result<std::path::PathBuf> {
        self.model.session.end_profiling()
    }

    /// How many texts this provider has tokenised since it was loaded (the warm-up aside):
    /// each text of each request counts once.
    pub fn tokenizer_calls(&self) -> u64 {
        self.model.tokenizer_calls.load(Ordering::Relaxed)
    }

    /// The pooling the model runs with.
    pub fn pooling(&self) -> Pooling {
        self.model.session.pooling()
    }
}

#[async_trait]
impl EmbeddingProvider for OnnxEmbeddingProvider {
    fn model_info(&self) -> &ModelInfo {
        &self.model.info
    }

    async fn tokenize(&self, request: EmbedRequest) -> Result<TokenizedRequest> {
        // Tokenising a few short texts takes microseconds: do it here. A large request (up to
        // megabytes of text) goes to the blocking pool, like a model run.
        let bytes: usize = request.texts.iter().map(String::len).sum();
        if bytes <= INLINE_TOKENIZE_BYTES {
            return pipeline::tokenize(&*self.model, &request);
        }
        let model = Arc::clone(&self.model);
        tokio::task::spawn_blocking(move || pipeline::tokenize(&*model, &request))
            .await
            .map_err(|e| EmbeddingError::Inference(format!("tokenising task failed: {e}")))?
    }

    async fn token_spans(&self, request: EmbedRequest) -> Result<Vec<Vec<TokenSpan>>> {
        // As `tokenize`: small requests here, large ones on the blocking pool.
        let bytes: usize = request.texts.iter().map(String::len).sum();
        if bytes <= INLINE_TOKENIZE_BYTES {
            return pipeline::token_spans(&*self.model, &request);
        }
        let model = Arc::clone(&self.model);
        tokio::task::spawn_blocking(move || pipeline::token_spans(&*model, &request))
            .await
            .map_err(|e| EmbeddingError::Inference(format!("tokenising task failed: {e}")))?
    }

    async fn run(&self, batch: Vec<Encoding>) -> Result<Vec<Vec<f32>>> {
        let (reply, result) = tokio::sync::oneshot::channel();
        let stopped =
            || EmbeddingError::Inference("the model's run thread has stopped".to_string());
        self.runner
            .jobs
            .send((batch, reply))
            .map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

impl TextEncoder for Model {
    fn model_info(&self) -> &ModelInfo {
        &self.info
    }

    fn prompt(&self, name: &str) -> Option<&str> {
        self.prompts.get(name).map(String::as_str)
    }

    fn encode(&self, text: &str, truncation: Truncation, index: usize) -> Result<Encoding> {
        self.tokenizer_calls.fetch_add(1, Ordering::Relaxed);
        self.tokenizer.encode(text, truncation, index)
    }

    fn encode_spans(
        &self,
        text: &str,
        truncation: Truncation,
        index: usize,
    ) -> Result<Vec<TokenSpan>> {
        self.tokenizer_calls.fetch_add(1, Ordering::Relaxed);
        self.tokenizer.encode_spans(text, truncation, index)
    }
}

impl Model {
    /// The whole pipeline on the calling thread.
    fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse> {
        let started = Instant::now();
        let tokenized = pipeline::tokenize(self, &request)?;
        let token_counts = tokenized.token_counts();
        let raw = self.session.run_all(&tokenized.encodings)?;
        let response = pipeline::finish(raw, token_counts, tokenized.output)?;
        tracing::debug!(
            model = %self.info.id,
            batch_size = response.count(),
            tokens = response.total_tokens(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "embedded"
        );
        Ok(response)
    }
}

/// Every output dimension a request may ask for, largest first: the graph's own and the
/// description's Matryoshka cuts below it.
fn supported_dimensions(dimension: usize, matryoshka: &[usize]) -> Vec<usize> {
    let mut dimensions = vec![dimension];
    dimensions.extend(
        matryoshka
            .iter()
            .copied()
            .filter(|&d| d < dimension && d > 0),
    );
    dimensions.sort_unstable_by(|a, b| b.cmp(a));
    dimensions.dedup();
    dimensions
}

/// Reads the tokenizer and checks it against the embedding table's rows when the folder's
/// `config.json` tells them.
fn load_tokenizer(
    path: &std::path::Path,
    max_tokens: usize,
    embedding_rows: Option<usize>,
) -> Result<TextTokenizer> {
    let mut tokenizer = TextTokenizer::from_file(path, max_tokens)?;
    if let Some(rows) = embedding_rows {
        tokenizer.check_embedding_rows(rows).map_err(|e| match e {
            EmbeddingError::ModelLoad { reason, .. } => {
                EmbeddingError::model_load(path.display(), reason)
            }
            other => other,
        })?;
    }
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matryoshka_cuts_above_the_graphs_dimension_are_dropped() {
        assert_eq!(
            supported_dimensions(768, &[128, 512, 256, 768, 1024, 0]),
            vec![768, 512, 256, 128]
        );
        assert_eq!(supported_dimensions(384, &[]), vec![384]);
    }
}
