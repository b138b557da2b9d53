//! Test harness: a real server on a free loopback port, over the mock or a real ONNX model.
//!
//! The same test bodies run with every [`Fixture`]: the mock (vectors compared bit for bit),
//! all-MiniLM-L6-v2 and the tiny EmbeddingGemma double (vectors compared by cosine). The two
//! models are required fixtures: a missing folder fails the test with the step that installs
//! it (see `akidb_test_support::require`).

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

pub mod process;
pub mod raw;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use akidb_embedding_core::{EmbedRequest, EmbeddingError, EmbeddingProvider, ModelInfo};
use akidb_embedding_mock::MockEmbeddingProvider;
use akidb_embedding_onnx::OnnxEmbeddingProvider;
use akidb_rest::{AppState, Config, ServeError, Server};
use serde_json::Value;
use tokio::sync::{OnceCell, oneshot};
use tokio::task::JoinHandle;

/// The providers the generic tests run over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fixture {
    /// The deterministic mock (384 dimensions, 512 tokens, `query`/`document` prompts).
    Mock,
    /// all-MiniLM-L6-v2 from `.akidb/models/` (installed by `scripts/setup.sh`).
    MiniLm,
    /// The tiny EmbeddingGemma double from `../shared/models/`.
    TinyGemma,
}

/// A provider ready for a test, with the mock's handle when it is the mock.
#[derive(Clone)]
pub struct Loaded {
    pub provider: Arc<dyn EmbeddingProvider>,
    pub mock: Option<Arc<MockEmbeddingProvider>>,
    pub fixture: Fixture,
}

static MINILM: OnceCell<OnnxEmbeddingProvider> = OnceCell::const_new();
static TINY_GEMMA: OnceCell<OnnxEmbeddingProvider> = OnceCell::const_new();

impl Fixture {
    /// Builds the provider (ONNX models load once per test binary); panics, naming the step
    /// that installs it, when the model's files are missing.
    pub async fn load(self) -> Loaded {
        self.load_mock_with(|mock| mock).await
    }

    /// Like [`Fixture::load`], letting the caller tune the mock (latency, failures).
    pub async fn load_mock_with(
        self,
        tune: impl FnOnce(MockEmbeddingProvider) -> MockEmbeddingProvider,
    ) -> Loaded {
        let provider: Arc<dyn EmbeddingProvider> = match self {
            Fixture::Mock => {
                let mock = Arc::new(tune(MockEmbeddingProvider::new(384).with_id("mock")));
                return Loaded {
                    provider: mock.clone(),
                    mock: Some(mock),
                    fixture: self,
                };
            }
            Fixture::MiniLm => Arc::new(onnx(&MINILM, akidb_test_support::minilm_dir()).await),
            Fixture::TinyGemma => {
                Arc::new(onnx(&TINY_GEMMA, akidb_test_support::tiny_gemma_dir()).await)
            }
        };
        Loaded {
            provider,
            mock: None,
            fixture: self,
        }
    }

    /// Whether vectors served over HTTP must equal the provider's bit for bit (the mock) or
    /// only to cosine ≥ 0.9999 (real models, whose padding differs between batches).
    pub fn exact(self) -> bool {
        self == Fixture::Mock
    }
}

async fn onnx(
    cell: &'static OnceCell<OnnxEmbeddingProvider>,
    dir: std::path::PathBuf,
) -> OnnxEmbeddingProvider {
    cell.get_or_init(|| async move {
        tokio::task::spawn_blocking(move || {
            // One thread per model: tests run in parallel on small machines.
            OnnxEmbeddingProvider::load(
                akidb_embeddings::install::load_options(dir.to_string_lossy())
                    .with_intra_threads(1),
            )
            .expect("load the ONNX test model")
        })
        .await
        .expect("loading task")
    })
    .await
    .clone()
}

impl Loaded {
    pub fn info(&self) -> &ModelInfo {
        self.provider.model_info()
    }

    /// The provider's own vectors for `request`, asked directly (no HTTP, no batcher).
    pub async fn direct(&self, request: EmbedRequest) -> Vec<Vec<f32>> {
        self.provider.embed(request).await.unwrap().embeddings
    }

    /// Asserts that `got` are the provider's vectors `want`, as tightly as the fixture allows.
    pub fn assert_same_vectors(&self, got: &[Vec<f32>], want: &[Vec<f32>]) {
        assert_eq!(got.len(), want.len(), "vector count");
        for (index, (got, want)) in got.iter().zip(want).enumerate() {
            assert_eq!(got.len(), want.len(), "length of vector {index}");
            if self.fixture.exact() {
                assert_eq!(got, want, "vector {index}");
            } else {
                let cosine = akidb_test_support::cosine(got, want);
                assert!(cosine >= 0.9999, "vector {index}: cosine {cosine}");
            }
        }
    }
}

/// A configuration for tests: a free loopback port, the documented defaults otherwise.
pub fn config() -> Config {
    Config {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Config::default()
    }
}

/// A running server and an HTTP client for it.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The metrics listener's address, when the configuration asked for one.
    pub metrics_addr: Option<SocketAddr>,
    pub client: reqwest::Client,
    /// The server's state (its metrics count open connections).
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl TestServer {
    /// Starts a server over `providers` and waits until `/health` says it is ready.
    pub async fn start(config: Config, providers: Vec<Arc<dyn EmbeddingProvider>>) -> Self {
        let server = Self::start_loading(config, async move { Ok(providers) }).await;
        server.wait_ready().await;
        server
    }

    /// Starts a server whose models come from `loader`; returns at once.
    pub async fn start_loading<L>(config: Config, loader: L) -> Self
    where
        L: Future<Output = Result<Vec<Arc<dyn EmbeddingProvider>>, EmbeddingError>>
            + Send
            + 'static,
    {
        let server = Server::bind(&config).await.expect("bind");
        let addr = server.local_addr().expect("local address");
        let metrics_addr = server
            .metrics_addr()
            .map(|addr| addr.expect("metrics address"));
        let state = server.state().clone();
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(loader, async move {
            let _ = stop.await;
        }));
        Self {
            addr,
            metrics_addr,
            client: reqwest::Client::new(),
            state,
            shutdown: Some(shutdown),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Polls `/health` until it answers 200 (panics after 300 s: the real EmbeddingGemma loads
    /// and calibrates in about 30 s on two idle cores, several times that on busy ones). Each poll uses a connection
    /// of its own, closed after it, so no idle connection is left behind.
    pub async fn wait_ready(&self) {
        let started = Instant::now();
        let client = fresh_client();
        loop {
            let response = client.get(self.url("/health")).send().await;
            if response.is_ok_and(|response| response.status() == 200) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "server not ready after 300 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// POSTs `body` as JSON; returns the status and the JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("send");
        json_of(response).await
    }

    /// POSTs every body to `path` at once (concurrent requests, free to share a model run);
    /// the answers come back in the order of `bodies`.
    pub async fn post_all_at_once(
        self: &Arc<Self>,
        path: &str,
        bodies: Vec<Value>,
    ) -> Vec<(u16, Value)> {
        let tasks: Vec<_> = bodies
            .into_iter()
            .map(|body| {
                let server = Arc::clone(self);
                let path = path.to_string();
                tokio::spawn(async move { server.post(&path, &body).await })
            })
            .collect();
        let mut answers = Vec::with_capacity(tasks.len());
        for task in tasks {
            answers.push(task.await.expect("request task"));
        }
        answers
    }

    /// POSTs raw bytes with the given content type.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("send");
        json_of(response).await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("send")
    }

    /// Triggers the graceful shutdown and returns how the server ended.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        (&mut self.task).await.expect("server task")
    }

    /// Waits for the server to end on its own (e.g. after a failed load).
    pub async fn ended(self) -> Result<(), ServeError> {
        let Self { task, shutdown, .. } = self;
        let result = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("server did not stop")
            .expect("server task");
        drop(shutdown);
        result
    }
}

/// A client that opens a new connection for every request: safe to use after the server
/// may have closed idle connections (short client timeouts).
pub fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// all-MiniLM-L6-v2 (a required fixture): attacks are checked against a real model.
pub async fn real_model() -> Loaded {
    Fixture::MiniLm.load().await
}

/// Texts whose vectors the service must still get right after an attack.
pub const PROBE_TEXTS: [&str; 2] = [
    "The service still embeds after the attack.",
    "Der Dienst bettet danach noch korrekt ein.",
];

/// A known request and its vectors asked of the provider directly: after each attack the
/// service must answer it, correctly, over a new connection.
pub struct Probe {
    loaded: Loaded,
    want: Vec<Vec<f32>>,
    client: reqwest::Client,
}

impl Probe {
    pub async fn new(loaded: &Loaded) -> Self {
        let want = loaded.direct(EmbedRequest::new(PROBE_TEXTS)).await;
        Self {
            loaded: loaded.clone(),
            want,
            client: fresh_client(),
        }
    }

    /// Asserts the service answers the probe with the provider's vectors; `after` names the
    /// attack in the failure message.
    pub async fn check(&self, server: &TestServer, after: &str) {
        let response = self
            .client
            .post(server.url("/api/v1/embed"))
            .json(&serde_json::json!({ "inputs": PROBE_TEXTS }))
            .send()
            .await
            .unwrap_or_else(|error| panic!("probe after {after}: {error}"));
        let (status, body) = json_of(response).await;
        assert_eq!(status, 200, "probe after {after}: {body}");
        self.loaded.assert_same_vectors(&vectors(&body), &self.want);
    }
}

/// Polls `condition` every 5 ms; panics with `what` after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, value)
}

/// A `POST` of `body` as JSON to `path`, for the router in-process (`tower::ServiceExt::oneshot`).
pub fn post_request(path: &str, body: &Value) -> axum::http::Request<axum::body::Body> {
    axum::http::Request::post(path)
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap()
}

/// Asserts `body` is exactly `{"error": {"type": kind, "message": "..."}}` (plus OpenAI's
/// `param` and `code`, which the OpenAI routes add); returns the message.
pub fn assert_error(status: u16, body: &Value, expected_status: u16, kind: &str) -> String {
    assert_eq!(status, expected_status, "status of {body}");
    let object = body.as_object().expect("error body is an object");
    assert_eq!(object.len(), 1, "only `error` in {body}");
    let error = body["error"].as_object().expect("`error` is an object");
    let extra = ["param", "code"]
        .iter()
        .filter(|field| error.contains_key(**field))
        .count();
    assert!(
        extra == 0 || extra == 2,
        "`param` and `code` together in {body}"
    );
    assert_eq!(
        error.len(),
        2 + extra,
        "only `type` and `message` in {body}"
    );
    assert_eq!(body["error"]["type"], kind, "type of {body}");
    let message = body["error"]["message"]
        .as_str()
        .expect("message is a string");
    assert!(!message.is_empty());
    message.to_string()
}

/// The vectors of a `/api/v1/embed` answer.
pub fn vectors(body: &Value) -> Vec<Vec<f32>> {
    body["embeddings"]
        .as_array()
        .expect("embeddings")
        .iter()
        .map(|vector| {
            vector
                .as_array()
                .expect("vector")
                .iter()
                .map(|v| v.as_f64().expect("number") as f32)
                .collect()
        })
        .collect()
}

/// Decodes an OpenAI base64 embedding (little-endian f32 bytes).
pub fn decode_base64(encoded: &str) -> Vec<f32> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64");
    assert_eq!(bytes.len() % 4, 0);
    bytes
        .chunks_exact(4)
        .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect()
}

/// Defines one `#[tokio::test]` per fixture for each named generic test body
/// (`async fn name(fixture: Fixture)`), in modules `mock`, `minilm` and `tiny_gemma`. An
/// attribute before the names (`#[ignore = "why"]`) goes on every test defined.
#[macro_export]
macro_rules! for_each_fixture {
    ($($test:ident),* $(,)?) => {
        $crate::for_each_fixture!(#[doc = "Runs the generic test body on one fixture."] $($test),*);
    };
    (#[$attribute:meta] $($test:ident),* $(,)?) => {
        mod mock {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[$attribute]
            async fn $test() { super::$test($crate::common::Fixture::Mock).await }
            )*
        }
        mod minilm {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[$attribute]
            async fn $test() { super::$test($crate::common::Fixture::MiniLm).await }
            )*
        }
        mod tiny_gemma {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[$attribute]
            async fn $test() { super::$test($crate::common::Fixture::TinyGemma).await }
            )*
        }
    };
}

/// Runs one of this crate's Python client scripts (`tests/<script>`) with `args`, against a
/// server on loopback (no proxy, no inherited OpenAI endpoint or hub token), and returns the
/// JSON it prints; a failing script fails the test with its stderr.
pub async fn run_client_script(script: &str, args: Vec<String>) -> Value {
    let path = format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(path)
            .args(args)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("HF_TOKEN")
            .output()
    })
    .await
    .unwrap()
    .expect("run python3");
    assert!(
        output.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

/// Asserts that `python3` can import `modules` (a comma-separated list, as in an `import`
/// statement), naming the install step when it cannot. The tests that call it are
/// `#[ignore = "needs Python test packages"]`: `scripts/test.sh` installs the packages and runs
/// them with `--ignored`.
pub fn require_python_modules(modules: &str) {
    let probe = std::process::Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output();
    match probe {
        Ok(output) => assert!(
            output.status.success(),
            "the Python packages {modules} are not installed \
             (python3 -m pip install -r scripts/requirements-test.txt): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(error) => panic!("python3 cannot be run: {error}"),
    }
}
