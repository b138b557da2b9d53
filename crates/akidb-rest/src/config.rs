//! Service configuration: every setting is a command-line flag and an `AKIDB_*` environment
//! variable, with the defaults below.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use akidb_embedding_onnx::{OnnxVariant, OptimizationLevel, WeightsMapping};
use clap::Parser;

use crate::engine::EngineSettings;
use crate::engine::batcher::BatcherConfig;
use crate::engine::providers::LoadPlan;
pub use crate::engine::providers::ProviderKind;

/// The model served when `AKIDB_EMBEDDING_MODEL` is not set.
pub const DEFAULT_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";
/// The address bound when `AKIDB_BIND` is not set.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
/// Texts per model run when `AKIDB_MAX_BATCH_SIZE` is not set.
pub const DEFAULT_MAX_BATCH_SIZE: usize = 32;
/// Padded tokens per model run when `AKIDB_MAX_BATCH_TOKENS` is not set (text-embeddings-
/// inference's default; 8 EmbeddingGemma texts at its 2,048 cap, 64 MiniLM texts at its 256).
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 16_384;
/// Request body limit when `AKIDB_MAX_BODY_BYTES` is not set (2 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Texts per request when `AKIDB_MAX_INPUTS` is not set.
pub const DEFAULT_MAX_INPUTS: usize = 256;
/// Tokens per request (all texts together) when `AKIDB_MAX_REQUEST_TOKENS` is not set: 256
/// MiniLM texts at its 256-token cap, or 32 EmbeddingGemma texts at its 2,048.
pub const DEFAULT_MAX_REQUEST_TOKENS: usize = 65_536;
/// Request deadline when `AKIDB_REQUEST_TIMEOUT_MS` is not set.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Client timeout when `AKIDB_CLIENT_TIMEOUT_MS` is not set.
pub const DEFAULT_CLIENT_TIMEOUT_MS: u64 = 10_000;
/// Open connections when `AKIDB_MAX_CONNECTIONS` is not set.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Shutdown bound when `AKIDB_SHUTDOWN_TIMEOUT_MS` is not set.
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 30_000;
/// Drain delay when `AKIDB_DRAIN_DELAY_MS` is not set: none, so Ctrl-C and a plain
/// `docker stop` end the process at once. Behind a load balancer set it longer than the
/// balancer takes to notice `/health` turning 503 and longer than its idle keep-alive
/// timeout (`deploy/` sets it; see `docs/deploy.md`).
pub const DEFAULT_DRAIN_DELAY_MS: u64 = 0;
/// Dynamic-batching wait when `AKIDB_BATCH_WAIT_MS` is not set: none. Requests that arrive
/// while the model is busy merge into its next run anyway, so waiting only adds latency to an
/// idle server (measured: 5 ms of wait cut one client's requests/s from 344 to 107).
pub const DEFAULT_BATCH_WAIT_MS: u64 = 0;
/// Waiting requests per model when `AKIDB_QUEUE_CAPACITY` is not set.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// Default texts tokenised at once per model (`AKIDB_TOKENIZATION_WORKERS`): the machine's
/// cores, as text-embeddings-inference's `--tokenization-workers`.
pub fn default_tokenization_workers() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// How the service writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the span fields (request id, route).
    Json,
}

/// The secret clients must present as `Authorization: Bearer …`.
///
/// Its `Debug` output is redacted, so logging a [`Config`] never leaks it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// The key's bytes, for the constant-time comparison of the HTTP layer.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl FromStr for ApiKey {
    type Err = String;

    fn from_str(key: &str) -> Result<Self, Self::Err> {
        if key.trim().is_empty() {
            return Err("the API key must not be empty".to_string());
        }
        Ok(Self(key.to_string()))
    }
}

/// Everything the service can be told at start-up.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "akidb-rest",
    version,
    about = "The AkiDB embedding HTTP service."
)]
pub struct Config {
    /// Provider that embeds texts: `onnx`, or `mock` for tests (never chosen silently).
    /// `python-bridge` (the Python service's name) is accepted as `onnx`, with a warning.
    #[arg(long, env = "AKIDB_EMBEDDING_PROVIDER", default_value = "onnx", value_parser = parse_provider)]
    pub provider: ProviderKind,

    /// The Python service's interpreter path: ignored (models run in-process), with a warning.
    #[arg(long, env = "AKIDB_EMBEDDING_PYTHON_PATH", hide = true)]
    pub python_path: Option<String>,

    /// Names clients may use for each model besides its id: aliases comma-separated, models
    /// separated by `;` in the order of `AKIDB_EMBEDDING_MODEL` (e.g.
    /// `text-embedding-3-small,minilm;gemma`). Each name resolves to exactly one model.
    #[arg(long = "served-model-name", env = "AKIDB_SERVED_MODEL_NAME")]
    pub served_model_names: Option<String>,

    /// Prompt applied when a request names none, per model, separated by `;` in model order
    /// (an empty entry: none). A request's `prompt_name` overrides it.
    #[arg(long = "default-prompt-name", env = "AKIDB_DEFAULT_PROMPT_NAME")]
    pub default_prompt_names: Option<String>,

    /// ONNX export to load: `fp32`, `fp16`, `q4`, `q8` (= `quantized`, `int8`) or a file name
    /// ending in `.onnx`.
    #[arg(long, env = "AKIDB_EMBEDDING_VARIANT", default_value = "fp32", value_parser = parse_variant)]
    pub variant: OnnxVariant,

    /// Hub revision to pin: branch, tag or commit.
    #[arg(long, env = "AKIDB_MODEL_REVISION", default_value = "main")]
    pub revision: String,

    /// Never touch the network: load hub models from the cache only (`HF_HUB_OFFLINE=1` also
    /// sets it).
    #[arg(
        long,
        env = "AKIDB_OFFLINE",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub offline: bool,

    /// Hub cache folder (default: `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    #[arg(long, env = "AKIDB_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Hub address (default: `HF_ENDPOINT`, else the public hub).
    #[arg(long, env = "AKIDB_HUB_ENDPOINT")]
    pub hub_endpoint: Option<String>,

    /// Hub access token for gated or private models.
    #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
    pub hf_token: Option<ApiKey>,

    /// Folder of installed models by name (default: `$AKIDB_HOME/models`, else `.akidb/models`).
    #[arg(long, env = "AKIDB_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,

    /// The ONNX Runtime library (default: `ORT_DYLIB_PATH`, `.akidb/onnxruntime`, then a
    /// pip-installed `onnxruntime`).
    #[arg(long, env = "AKIDB_ORT_LIBRARY")]
    pub ort_library: Option<PathBuf>,

    /// Folder where each model's optimised graph is saved on first load and read on later
    /// starts (skips graph optimisation); empty it when a model or ONNX Runtime changes.
    #[arg(long, env = "AKIDB_OPTIMIZED_MODEL_CACHE")]
    pub optimized_model_cache: Option<PathBuf>,

    /// ONNX Runtime graph optimisation: `disable`, `basic`, `extended` or `all`.
    #[arg(long, env = "AKIDB_GRAPH_OPTIMIZATION", default_value = "all", value_parser = parse_optimization)]
    pub graph_optimization: OptimizationLevel,

    /// Run on CUDA; loading fails (no silent CPU fallback) when CUDA is unavailable.
    #[arg(
        long,
        env = "AKIDB_CUDA",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub cuda: bool,

    /// ONNX Runtime's CPU memory arena: `false` (the default here) returns each run's buffers
    /// to the allocator, so the service's memory falls back once it goes quiet after a large
    /// batch; `true` keeps the memory of the largest run for later runs (ONNX Runtime's own
    /// default, faster on large batches but holding their peak for good).
    #[arg(
        long,
        env = "AKIDB_CPU_ARENA",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub cpu_arena: bool,

    /// Rewrite each ONNX graph at load into ONNX Runtime's fused operators (attention, layer
    /// norm, GELU; the rewrite is cached beside the model): `true` by default; `false` runs
    /// the exported graph as it is.
    #[arg(
        long,
        env = "AKIDB_FUSED_GRAPH",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub fused_graph: bool,

    /// Log format on stderr: `text` or `json` (one JSON object per line).
    #[arg(long, env = "AKIDB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Models to serve, comma-separated: built-in ids or local folders. Requests address each
    /// by the id it reports in `/api/v1/models`.
    #[arg(
        long = "model",
        env = "AKIDB_EMBEDDING_MODEL",
        value_delimiter = ',',
        default_value = DEFAULT_MODEL
    )]
    pub models: Vec<String>,

    /// Address to listen on.
    #[arg(long, env = "AKIDB_BIND", default_value = DEFAULT_BIND)]
    pub bind: SocketAddr,

    /// A second address serving only `GET /metrics`, without the API key, for Prometheus
    /// (e.g. `0.0.0.0:9000`); unset: none. The main address keeps its `/metrics`, behind the
    /// key when one is set.
    #[arg(long, env = "AKIDB_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,

    /// ONNX Runtime intra-op threads per model (default: the provider's own choice).
    #[arg(long, env = "AKIDB_THREADS", value_parser = positive)]
    pub threads: Option<usize>,

    /// How ONNX Runtime maps split weights (`model.onnx_data`): `private-copy` maps a copy
    /// made at load and unlinked at once, so changes to the model folder (a file truncated or
    /// overwritten in place) cannot harm the running service; `in-place` maps the folder's
    /// file with no copy, which is safe only if model files are replaced by rename.
    #[arg(long, env = "AKIDB_WEIGHTS_MAPPING", default_value = "private-copy")]
    pub weights_mapping: WeightsMapping,

    /// Folder for the private copy of split weights while a model loads (default: beside the
    /// model, else the system's temporary folder when the model folder is read-only).
    #[arg(long, env = "AKIDB_WEIGHTS_COPY_DIR")]
    pub weights_copy_dir: Option<PathBuf>,

    /// Most texts in one model run (dynamic batches and the provider's own sub-batches).
    #[arg(long, env = "AKIDB_MAX_BATCH_SIZE", default_value_t = DEFAULT_MAX_BATCH_SIZE, value_parser = positive)]
    pub max_batch_size: usize,

    /// Most padded tokens in one model run (texts × the run's longest text): runs are cut
    /// from the queued requests' encodings by least padding within this and
    /// `max_batch_size`; a single longer text still runs, alone.
    #[arg(long, env = "AKIDB_MAX_BATCH_TOKENS", default_value_t = DEFAULT_MAX_BATCH_TOKENS, value_parser = positive)]
    pub max_batch_tokens: usize,

    /// Largest request body accepted, in bytes (larger: 413).
    #[arg(long, env = "AKIDB_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES, value_parser = positive)]
    pub max_body_bytes: usize,

    /// Most texts in one request (more: 413).
    #[arg(long, env = "AKIDB_MAX_INPUTS", default_value_t = DEFAULT_MAX_INPUTS, value_parser = positive)]
    pub max_inputs: usize,

    /// Most tokens in one request, all texts together, prompts and special tokens included
    /// (more: 413). Counted with the model's tokenizer before the request queues, so the
    /// model never runs for a request over it.
    #[arg(long, env = "AKIDB_MAX_REQUEST_TOKENS", default_value_t = DEFAULT_MAX_REQUEST_TOKENS, value_parser = positive)]
    pub max_request_tokens: usize,

    /// Deadline for an embedding request, queueing included, in milliseconds (past it: 504).
    #[arg(long, env = "AKIDB_REQUEST_TIMEOUT_MS", default_value_t = DEFAULT_REQUEST_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,

    /// Longest the service waits on a client, in milliseconds: for a request's headers (an
    /// idle connection's next request included; past it the connection is closed), for its
    /// body (past it: 408), and for the client to take response bytes (past it the
    /// connection is closed).
    #[arg(long, env = "AKIDB_CLIENT_TIMEOUT_MS", default_value_t = DEFAULT_CLIENT_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..))]
    pub client_timeout_ms: u64,

    /// Most connections open at once; further clients wait in the listen backlog until one
    /// closes.
    #[arg(long, env = "AKIDB_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = positive)]
    pub max_connections: usize,

    /// Longest a graceful shutdown waits for in-flight requests, in milliseconds; then the
    /// connections still open are closed and the process exits.
    #[arg(long, env = "AKIDB_SHUTDOWN_TIMEOUT_MS", default_value_t = DEFAULT_SHUTDOWN_TIMEOUT_MS)]
    pub shutdown_timeout_ms: u64,

    /// On SIGTERM or SIGINT, how long the service keeps accepting and serving requests with
    /// `/health` answering 503 (and every answer saying `Connection: close`) before it closes
    /// its listener, in milliseconds: the time load balancers need to stop routing to it.
    /// `AKIDB_SHUTDOWN_TIMEOUT_MS` counts from the end of this delay.
    #[arg(long, env = "AKIDB_DRAIN_DELAY_MS", default_value_t = DEFAULT_DRAIN_DELAY_MS)]
    pub drain_delay_ms: u64,

    /// When set, every route but `/health` needs `Authorization: Bearer <key>`.
    #[arg(long, env = "AKIDB_API_KEY", hide_env_values = true)]
    pub api_key: Option<ApiKey>,

    /// Longest a request waits for others to share its model run, in milliseconds.
    #[arg(long, env = "AKIDB_BATCH_WAIT_MS", default_value_t = DEFAULT_BATCH_WAIT_MS)]
    pub batch_wait_ms: u64,

    /// Most requests waiting per model; when full, new requests get 503 with `Retry-After`.
    #[arg(long, env = "AKIDB_QUEUE_CAPACITY", default_value_t = DEFAULT_QUEUE_CAPACITY, value_parser = positive)]
    pub queue_capacity: usize,

    /// Texts tokenised at once per model, at most (a bounded pool; its work is admitted like
    /// inference). Default: the machine's cores.
    #[arg(long, env = "AKIDB_TOKENIZATION_WORKERS", default_value_t = default_tokenization_workers(), value_parser = positive)]
    pub tokenization_workers: usize,

    /// Merge concurrent requests into shared model runs; `false` runs each request alone
    /// (a baseline for benchmarks).
    #[arg(
        long,
        env = "AKIDB_DYNAMIC_BATCHING",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub dynamic_batching: bool,
}

impl Default for Config {
    /// The documented defaults, without reading the environment.
    fn default() -> Self {
        Self {
            provider: ProviderKind::Onnx,
            python_path: None,
            served_model_names: None,
            default_prompt_names: None,
            variant: OnnxVariant::Fp32,
            revision: "main".to_string(),
            offline: false,
            cache_dir: None,
            hub_endpoint: None,
            hf_token: None,
            models_dir: None,
            ort_library: None,
            optimized_model_cache: None,
            graph_optimization: OptimizationLevel::All,
            cuda: false,
            cpu_arena: false,
            fused_graph: true,
            log_format: LogFormat::Text,
            models: vec![DEFAULT_MODEL.to_string()],
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_bind: None,
            threads: None,
            weights_mapping: WeightsMapping::default(),
            weights_copy_dir: None,
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_inputs: DEFAULT_MAX_INPUTS,
            max_request_tokens: DEFAULT_MAX_REQUEST_TOKENS,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            client_timeout_ms: DEFAULT_CLIENT_TIMEOUT_MS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_timeout_ms: DEFAULT_SHUTDOWN_TIMEOUT_MS,
            drain_delay_ms: DEFAULT_DRAIN_DELAY_MS,
            api_key: None,
            batch_wait_ms: DEFAULT_BATCH_WAIT_MS,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            tokenization_workers: default_tokenization_workers(),
            dynamic_batching: true,
        }
    }
}

impl Config {
    /// The model list with blanks trimmed and empty entries (`a,,b`, a trailing comma) dropped.
    pub fn model_names(&self) -> Vec<String> {
        self.models
            .iter()
            .map(|model| model.trim())
            .filter(|model| !model.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The configured aliases of each model, in model order (see `AKIDB_SERVED_MODEL_NAME`).
    pub fn served_names(&self) -> Vec<Vec<String>> {
        per_model(self.served_model_names.as_deref())
            .into_iter()
            .map(|entry| {
                entry
                    .split(',')
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .collect()
    }

    /// The default prompt of each model, in model order (see `AKIDB_DEFAULT_PROMPT_NAME`).
    pub fn default_prompts(&self) -> Vec<Option<String>> {
        per_model(self.default_prompt_names.as_deref())
            .into_iter()
            .map(|entry| Some(entry.trim().to_string()).filter(|name| !name.is_empty()))
            .collect()
    }

    /// Logs a warning for each setting kept only so the Python service's commands still work.
    pub fn warn_about_legacy_settings(&self) {
        if self.python_path.is_some() {
            tracing::warn!(
                variable = "AKIDB_EMBEDDING_PYTHON_PATH",
                "ignored: models run inside akidb-rest, no Python interpreter is used"
            );
        }
    }

    /// The request deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// How long the service waits on a slow or idle client.
    pub fn client_timeout(&self) -> Duration {
        Duration::from_millis(self.client_timeout_ms)
    }

    /// How long a graceful shutdown waits for in-flight requests.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    /// How long a signalled service keeps serving, `/health` at 503, before it closes its
    /// listener.
    pub fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.drain_delay_ms)
    }

    /// The dynamic batcher's settings.
    pub fn batcher(&self) -> BatcherConfig {
        BatcherConfig {
            max_batch_size: self.max_batch_size,
            max_batch_tokens: self.max_batch_tokens,
            max_request_tokens: self.max_request_tokens,
            max_wait: Duration::from_millis(self.batch_wait_ms),
            queue_capacity: self.queue_capacity,
            tokenization_workers: self.tokenization_workers,
            request_timeout: self.request_timeout(),
            dynamic: self.dynamic_batching,
        }
    }

    /// The engine's settings: batching and admission, served names, default prompts.
    pub fn engine(&self) -> EngineSettings {
        EngineSettings {
            batcher: self.batcher(),
            served_names: self.served_names(),
            default_prompts: self.default_prompts(),
        }
    }
}

/// Entries of a per-model setting, separated by `;` (none when unset).
fn per_model(value: Option<&str>) -> Vec<&str> {
    value
        .map(|value| value.split(';').collect())
        .unwrap_or_default()
}

fn parse_provider(value: &str) -> Result<ProviderKind, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "onnx" => Ok(ProviderKind::Onnx),
        "mock" => Ok(ProviderKind::Mock),
        "python-bridge" => {
            tracing::warn!(
                provider = "python-bridge",
                "`python-bridge` is the old name of the `onnx` provider; set AKIDB_EMBEDDING_PROVIDER=onnx"
            );
            Ok(ProviderKind::Onnx)
        }
        other => Err(format!(
            "unknown provider `{other}`: use `onnx` or `mock` (`python-bridge` is read as `onnx`)"
        )),
    }
}

fn parse_variant(value: &str) -> Result<OnnxVariant, String> {
    OnnxVariant::parse(value.trim()).ok_or_else(|| {
        format!("unknown variant `{value}`: use fp32, fp16, q4, q8 or a file name ending in .onnx")
    })
}

fn parse_optimization(value: &str) -> Result<OptimizationLevel, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "disable" | "none" | "off" => Ok(OptimizationLevel::Disable),
        "basic" => Ok(OptimizationLevel::Basic),
        "extended" => Ok(OptimizationLevel::Extended),
        "all" => Ok(OptimizationLevel::All),
        other => Err(format!(
            "unknown graph optimisation `{other}`: use disable, basic, extended or all"
        )),
    }
}

fn positive(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(number) => Ok(number),
        Err(err) => Err(err.to_string()),
    }
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
            variant: config.variant.clone(),
            revision: config.revision.clone(),
            offline: config.offline,
            cache_dir: config.cache_dir.clone(),
            hub_endpoint: config.hub_endpoint.clone(),
            hf_token: config
                .hf_token
                .as_ref()
                .map(|token| String::from_utf8_lossy(token.as_bytes()).into_owned()),
            models_dir: config.models_dir.clone(),
            ort_library: config.ort_library.clone(),
            optimized_model_cache: config.optimized_model_cache.clone(),
            graph_optimization: config.graph_optimization,
            cuda: config.cuda,
            cpu_arena: config.cpu_arena,
            fused_graph: config.fused_graph,
            status: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses the command line `args` as if the only variables set were `env`: clap would read
    /// each argument's `AKIDB_*` variable from this process, so a developer's own settings
    /// would change what the tests see. Each variable is dropped from its argument, and a
    /// value given in `env` becomes the argument's default (below the flag, as a variable is).
    fn parse_with_env(
        args: &[&str],
        env: &[(&'static str, &'static str)],
    ) -> Result<Config, clap::Error> {
        use clap::{CommandFactory, FromArgMatches};
        let command = Config::command().mut_args(|arg| {
            let value = arg
                .get_env()
                .and_then(|name| env.iter().find(|(variable, _)| name == *variable))
                .map(|(_, value)| *value);
            let arg = arg.env(None::<&'static str>);
            match value {
                Some(value) => arg.default_value(value),
                None => arg,
            }
        });
        let matches = command
            .try_get_matches_from(std::iter::once("akidb-rest").chain(args.iter().copied()))?;
        Config::from_arg_matches(&matches)
    }

    /// Parses the command line `args` with no `AKIDB_*` variable set.
    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        parse_with_env(args, &[])
    }

    #[test]
    fn variables_are_read_and_flags_win_over_them() {
        let env = [
            ("AKIDB_DRAIN_DELAY_MS", "5000"),
            ("AKIDB_EMBEDDING_PROVIDER", "mock"),
            ("AKIDB_CPU_ARENA", "on"),
        ];
        let config = parse_with_env(&[], &env).unwrap();
        assert_eq!(config.drain_delay(), Duration::from_secs(5));
        assert_eq!(config.provider, ProviderKind::Mock);
        assert!(config.cpu_arena);
        let config = parse_with_env(&["--drain-delay-ms", "0"], &env).unwrap();
        assert_eq!(config.drain_delay(), Duration::ZERO);
        assert!(parse_with_env(&[], &[("AKIDB_MAX_BATCH_SIZE", "0")]).is_err());
    }

    #[test]
    fn flags_parse_and_defaults_match_the_documented_ones() {
        let config = parse(&[
            "--provider",
            "mock",
            "--model",
            "a, b,,",
            "--dynamic-batching",
            "off",
            "--api-key",
            "s3cret",
        ])
        .unwrap();
        assert_eq!(config.provider, ProviderKind::Mock);
        assert_eq!(config.model_names(), vec!["a", "b"]);
        assert!(!config.dynamic_batching);
        assert_eq!(config.api_key.as_ref().unwrap().as_bytes(), b"s3cret");
        assert!(!format!("{config:?}").contains("s3cret"));

        let defaults = Config::default();
        assert_eq!(defaults.bind.to_string(), DEFAULT_BIND);
        assert_eq!(defaults.model_names(), vec![DEFAULT_MODEL]);
        assert_eq!(defaults.max_batch_size, config.max_batch_size);
        assert_eq!(defaults.queue_capacity, config.queue_capacity);
        assert_eq!(defaults.max_batch_tokens, config.max_batch_tokens);
        assert_eq!(defaults.max_request_tokens, config.max_request_tokens);
        assert_eq!(defaults.client_timeout_ms, config.client_timeout_ms);
        assert_eq!(defaults.max_connections, config.max_connections);
        assert_eq!(defaults.shutdown_timeout_ms, config.shutdown_timeout_ms);
        assert_eq!(defaults.drain_delay_ms, config.drain_delay_ms);
        assert_eq!(
            parse(&["--drain-delay-ms", "5000"]).unwrap().drain_delay(),
            Duration::from_secs(5)
        );
        assert_eq!(defaults.weights_mapping, config.weights_mapping);
        assert_eq!(
            parse(&["--weights-mapping", "in-place"])
                .unwrap()
                .weights_mapping,
            WeightsMapping::InPlace
        );
        assert!(parse(&["--weights-mapping", "mmap"]).is_err());

        assert!(
            !defaults.cpu_arena && !config.cpu_arena,
            "off unless asked for: the service gives a batch's memory back"
        );
        for off in ["false", "off", "0", "no"] {
            assert!(!parse(&["--cpu-arena", off]).unwrap().cpu_arena, "{off}");
        }
        for on in ["true", "on", "1", "yes"] {
            assert!(parse(&["--cpu-arena", on]).unwrap().cpu_arena, "{on}");
        }
        assert_eq!(defaults.metrics_bind, None);
        assert_eq!(
            config.metrics_bind, None,
            "no metrics listener unless asked"
        );
        assert_eq!(
            parse(&["--metrics-bind", "0.0.0.0:9000"])
                .unwrap()
                .metrics_bind,
            Some(SocketAddr::from(([0, 0, 0, 0], 9000)))
        );
    }

    #[test]
    fn invalid_arena_and_metrics_settings_are_clear_errors() {
        let error = parse(&["--cpu-arena", "maybe"]).unwrap_err().to_string();
        assert!(
            error.contains("maybe") && error.contains("--cpu-arena"),
            "{error}"
        );
        let error = parse(&["--metrics-bind", "9000"]).unwrap_err().to_string();
        assert!(
            error.contains("9000") && error.contains("--metrics-bind"),
            "{error}"
        );
    }

    #[test]
    fn zero_limits_and_empty_keys_are_refused() {
        assert!(parse(&["--max-batch-size", "0"]).is_err());
        assert!(parse(&["--queue-capacity", "0"]).is_err());
        assert!(parse(&["--request-timeout-ms", "0"]).is_err());
        assert!(parse(&["--client-timeout-ms", "0"]).is_err());
        assert!(parse(&["--max-connections", "0"]).is_err());
        assert!(parse(&["--max-request-tokens", "0"]).is_err());
        assert!(parse(&["--max-batch-tokens", "0"]).is_err());
        assert!(parse(&["--api-key", " "]).is_err());
        assert!(parse(&["--provider", "magic"]).is_err());
        assert!(parse(&["--variant", "q3"]).is_err());
        assert!(parse(&["--graph-optimization", "max"]).is_err());
    }

    #[test]
    fn legacy_names_and_per_model_settings_parse() {
        let config = parse(&[
            "--provider",
            "python-bridge",
            "--python-path",
            "/usr/bin/python3",
            "--variant",
            "q8",
            "--served-model-name",
            "text-embedding-3-small, minilm;;gemma",
            "--default-prompt-name",
            ";query",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(config.provider, ProviderKind::Onnx);
        assert_eq!(config.variant, OnnxVariant::Q8);
        assert_eq!(
            config.served_names(),
            vec![
                vec!["text-embedding-3-small".to_string(), "minilm".to_string()],
                vec![],
                vec!["gemma".to_string()]
            ]
        );
        assert_eq!(
            config.default_prompts(),
            vec![None, Some("query".to_string())]
        );
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(Config::default().served_names().is_empty());
    }

    #[test]
    fn the_arena_setting_reaches_the_load_options() {
        let parse = |args: &[&str]| parse(args).unwrap();
        let plan = LoadPlan::from(&parse(&[]));
        assert!(
            !crate::engine::providers::onnx_options("m", &plan).cpu_arena(),
            "off by default"
        );
        let plan = LoadPlan::from(&parse(&["--cpu-arena", "true"]));
        assert!(crate::engine::providers::onnx_options("m", &plan).cpu_arena());
    }

    #[test]
    fn the_fused_graph_setting_reaches_the_load_options() {
        let parse = |args: &[&str]| {
            Config::try_parse_from(std::iter::once("akidb-rest").chain(args.iter().copied()))
                .unwrap()
        };
        let fused = |args: &[&str]| {
            let plan = LoadPlan::from(&parse(args));
            crate::engine::providers::onnx_options("m", &plan)
                .fuse_recipe()
                .is_some()
        };
        assert!(fused(&[]), "on by default");
        assert!(!fused(&["--fused-graph", "false"]));
        assert!(fused(&["--fused-graph", "on"]));
    }
}
