//! Real clients, unchanged, against a real server over a socket: the official `openai`
//! package (`models.list`, float and base64), `huggingface_hub.InferenceClient` on TEI's root
//! route and on `/embed`, LangChain's `HuggingFaceEndpointEmbeddings`; every vector checked
//! against the provider's own. Also: the request id and timing headers, and `/metrics`
//! parsed by `prometheus_client`'s parser.
//!
//! The tests that drive Python need `python3` with `scripts/requirements-test.txt` installed:
//! they are `#[ignore = "needs the Python test packages"]`, and `scripts/test.sh`, which installs the packages,
//! runs them with `--ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use crate::common;

use std::io::Write;
use std::process::{Command, Stdio};

use akidb_embedding_core::EmbedRequest;
use akidb_rest::Config;
use serde_json::{Value, json};

use common::{Fixture, TestServer, config};

crate::for_each_fixture!(
    #[ignore = "needs the Python test packages"]
    real_clients_get_the_providers_vectors
);

/// The Python packages these tests drive the service with.
const CLIENT_MODULES: &str =
    "openai, huggingface_hub, langchain_huggingface, prometheus_client, numpy";

fn script(name: &str) -> String {
    format!("{}/tests/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn vectors_of(value: &Value) -> Vec<Vec<f32>> {
    serde_json::from_value(value.clone()).expect("an array of vectors")
}

async fn real_clients_get_the_providers_vectors(fixture: Fixture) {
    common::require_python_modules(CLIENT_MODULES);
    let loaded = fixture.load().await;
    let config = Config {
        served_model_names: Some("text-embedding-3-small".to_string()),
        ..config()
    };
    let server = TestServer::start(config, vec![loaded.provider.clone()]).await;
    let texts = ["What is AkiDB?", "Vektordatenbank für Einbettungen"];
    let id = loaded.info().id.clone();
    let args = vec![
        server.url(""),
        "text-embedding-3-small".to_string(),
        serde_json::to_string(&texts).unwrap(),
    ];
    let report = common::run_client_script("clients.py", args).await;

    let listed: Vec<String> = serde_json::from_value(report["models"].clone()).unwrap();
    assert!(listed.contains(&id), "{listed:?}");
    assert!(listed.contains(&"text-embedding-3-small".to_string()));
    assert_eq!(report["openai_model"], "text-embedding-3-small");

    let direct = loaded
        .provider
        .embed(EmbedRequest::new(texts))
        .await
        .unwrap();
    for client in [
        "openai_float",
        "openai_base64",
        "hub_root",
        "hub_embed",
        "langchain_documents",
    ] {
        eprintln!("checking {client}");
        loaded.assert_same_vectors(&vectors_of(&report[client]), &direct.embeddings);
    }
    loaded.assert_same_vectors(
        &vectors_of(&report["langchain_query"]),
        &direct.embeddings[..1],
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_and_timing_headers_come_back() {
    let loaded = Fixture::Mock.load().await;
    let server = TestServer::start(config(), vec![loaded.provider.clone()]).await;
    let timing_headers = [
        "x-queue-time",
        "x-tokenization-time",
        "x-inference-time",
        "x-total-time",
    ];
    for path in ["/api/v1/embed", "/embed", "/v1/embeddings"] {
        let body = if path == "/v1/embeddings" {
            json!({"input": ["a b c"]})
        } else {
            json!({"inputs": ["a b c"]})
        };
        let response = server
            .client
            .post(server.url(path))
            .header("x-request-id", "trace-1234")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["x-request-id"], "trace-1234", "{path}");
        for name in timing_headers {
            let value = response.headers()[name].to_str().unwrap();
            assert!(value.parse::<u64>().is_ok(), "{path} {name}: {value}");
        }
    }
    // Without an id (or with an unusable one) the service makes one, different each time.
    let mut made = Vec::new();
    for given in [None, Some("has space")] {
        let mut request = server
            .client
            .post(server.url("/api/v1/embed"))
            .json(&json!({"inputs": ["x"]}));
        if let Some(given) = given {
            request = request.header("x-request-id", given);
        }
        let response = request.send().await.unwrap();
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        // A UUID (tower-http's `MakeRequestUuid`).
        assert_eq!(id.len(), 36, "{id}");
        assert!(
            id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
            "{id}"
        );
        made.push(id);
    }
    assert_ne!(made[0], made[1]);
    // Routes that embed nothing still carry the id and the total time, but no stage times.
    let response = server.get("/health").await;
    assert!(response.headers().contains_key("x-request-id"));
    assert!(response.headers().contains_key("x-total-time"));
    assert!(!response.headers().contains_key("x-inference-time"));

    // A slow model shows in the inference time, not the queue time.
    let slow = Fixture::Mock
        .load_mock_with(|mock| mock.with_latency(std::time::Duration::from_millis(120)))
        .await;
    let slow_server = TestServer::start(config(), vec![slow.provider.clone()]).await;
    let response = slow_server
        .client
        .post(slow_server.url("/embed"))
        .json(&json!({"inputs": "slow"}))
        .send()
        .await
        .unwrap();
    let millis =
        |name: &str| -> u64 { response.headers()[name].to_str().unwrap().parse().unwrap() };
    assert!(
        millis("x-inference-time") >= 120,
        "{:?}",
        response.headers()
    );
    assert!(millis("x-total-time") >= millis("x-inference-time"));
    assert!(millis("x-queue-time") < 120);
    slow_server.stop().await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Python test packages"]
async fn metrics_parse_as_prometheus_text_and_carry_the_stage_histograms() {
    common::require_python_modules(CLIENT_MODULES);
    let loaded = Fixture::Mock.load().await;
    let server = TestServer::start(config(), vec![loaded.provider.clone()]).await;
    for _ in 0..3 {
        let (status, _) = server
            .post("/api/v1/embed", &json!({"inputs": ["one two", "three"]}))
            .await;
        assert_eq!(status, 200);
    }
    let text = server.get("/metrics").await.text().await.unwrap();
    let mut child = Command::new("python3")
        .arg(script("metrics_parse.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client refused /metrics:\n{}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: Value = serde_json::from_slice(&output.stdout).unwrap();
    for histogram in [
        "akidb_http_request_duration_seconds",
        "akidb_batch_size",
        "akidb_batch_duration_seconds",
        "akidb_request_queue_duration_seconds",
        "akidb_request_tokenization_duration_seconds",
        "akidb_request_inference_duration_seconds",
        "akidb_request_input_tokens",
    ] {
        assert_eq!(
            parsed["families"][histogram], "histogram",
            "{histogram}: {text}"
        );
        assert!(
            parsed["samples"][format!("{histogram}_bucket")].as_u64() > Some(0),
            "{histogram}"
        );
    }
    // prometheus_client names counter families without `_total`.
    for counter in [
        "akidb_http_requests",
        "akidb_tokens_embedded",
        "process_cpu_seconds",
    ] {
        assert_eq!(parsed["families"][counter], "counter", "{counter}: {text}");
    }
    for gauge in [
        "akidb_queue_depth",
        "akidb_models_ready",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert_eq!(parsed["families"][gauge], "gauge", "{gauge}: {text}");
    }
    // Three requests of two texts: the input-length histogram counted three requests of 3 tokens.
    assert!(
        text.contains("akidb_request_input_tokens_count{route=\"/api/v1/embed\"} 3"),
        "{text}"
    );
    server.stop().await.unwrap();
}
