//! Security checks: model names are ids among the loaded models, never paths; the API key
//! guards everything but `/health`, is compared whole, and never reaches the log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use akidb_rest::Config;
use serde_json::json;

use common::process::Service;
use common::{TestServer, assert_error, config, fresh_client, real_model};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_names_are_looked_up_among_loaded_models_never_as_paths() {
    let loaded = real_model().await;
    let server = TestServer::start(config(), vec![loaded.provider.clone()]).await;
    let minilm = akidb_test_support::minilm_dir()
        .to_string_lossy()
        .into_owned();
    let absolute = akidb_test_support::workspace_root()
        .join(".akidb/models/all-MiniLM-L6-v2")
        .to_string_lossy()
        .into_owned();
    let names = [
        "../../etc/passwd",
        "/etc/passwd",
        "..%2f..%2fetc%2fpasswd",
        "..\\..\\windows\\win.ini",
        "./",
        ".",
        "~/.ssh/id_rsa",
        "file:///etc/passwd",
        "sentence-transformers/../../../etc/passwd",
        "etc/passwd\u{0}.onnx",
        ".akidb/models/all-MiniLM-L6-v2",
        &absolute,
        &minilm,
        "sentence-transformers/all-MiniLM-L6-v2/../all-MiniLM-L6-v2",
        "onnx-community/embeddinggemma-300m-ONNX",
        "google/embeddinggemma-300m",
    ];
    for name in names {
        if name.is_empty() || name == loaded.info().id {
            continue;
        }
        for (path, body) in [
            ("/api/v1/embed", json!({"model": name, "inputs": ["x"]})),
            ("/v1/embeddings", json!({"model": name, "input": "x"})),
        ] {
            let (status, answer) = server.post(path, &body).await;
            let message = assert_error(status, &answer, 404, "model_not_found");
            assert!(
                !message.contains("root:") && !message.contains("[fonts]"),
                "{name}: {message}"
            );
        }
    }
    // A huge name is not echoed back whole.
    let long = "../".repeat(100_000);
    let (status, answer) = server
        .post("/api/v1/embed", &json!({"model": long, "inputs": ["x"]}))
        .await;
    let message = assert_error(status, &answer, 404, "model_not_found");
    assert!(message.len() < 1024, "{} bytes", message.len());
    server.stop().await.unwrap();
}

/// The one test of the API key over HTTP (`http::auth` tests the comparison itself): every
/// route of every dialect but `/health` refuses a missing, wrong or misplaced key with 401 in
/// the error shape, accepts the key in any case of `Bearer`, reads no refused body, never
/// echoes the key; without a configured key nothing asks for one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_guards_every_route_but_health() {
    let loaded = real_model().await;
    let key = "k3y-0123456789abcdef";
    let config = Config {
        api_key: Some(key.parse().unwrap()),
        ..config()
    };
    let server = TestServer::start(config, vec![loaded.provider.clone()]).await;
    let client = fresh_client();

    let health = client.get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "/health needs no key");

    // Every route of the router but /health: (path, body to POST, or a GET).
    let model_card = format!("/v1/models/{}", loaded.info().id);
    let routes = [
        ("/api/v1/embed", Some(json!({"inputs": ["hello"]}))),
        ("/v1/embeddings", Some(json!({"input": "hello"}))),
        ("/embed", Some(json!({"inputs": "hello"}))),
        ("/", Some(json!({"inputs": "hello"}))),
        ("/tokenize", Some(json!({"inputs": "hello"}))),
        ("/api/v1/models", None),
        ("/v1/models", None),
        (model_card.as_str(), None),
        ("/info", None),
        ("/metrics", None),
    ];
    let request = |path: &str, body: &Option<serde_json::Value>| match body {
        Some(body) => client.post(server.url(path)).json(body),
        None => client.get(server.url(path)),
    };

    let refused = [
        None,
        Some(format!("Bearer {}", &key[..key.len() - 1])),
        Some(format!("Bearer {key}x")),
        Some(format!("Bearer {}", key.to_uppercase())),
        Some(format!("Bearer {key}{key}")),
        Some(format!("Basic {key}")),
        Some(key.to_string()),
        Some("Bearer ".to_string()),
        Some(format!("Bearer\t{key}")),
    ];
    for (path, body) in &routes {
        for header in &refused {
            let mut refused = request(path, body);
            if let Some(header) = header {
                refused = refused.header("authorization", header);
            }
            let response = refused.send().await.unwrap();
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let (status, answer) = common::json_of(response).await;
            assert_error(status, &answer, 401, "unauthorized");
        }
        // The key in the query string or another header does not count.
        for misplaced in [
            request(&format!("{path}?api_key={key}"), body),
            request(path, body).header("x-api-key", key),
        ] {
            assert_eq!(misplaced.send().await.unwrap().status(), 401, "{path}");
        }
        for scheme in ["Bearer", "bearer", "BEARER"] {
            let response = request(path, body)
                .header("authorization", format!("{scheme} {key}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{path} with scheme {scheme}");
        }
    }
    // A refused request costs nothing: its body is not even read.
    let (status, body) = common::json_of(
        client
            .post(server.url("/api/v1/embed"))
            .json(&json!({"inputs": ["x".repeat(10_000)]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &body, 401, "unauthorized");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(!message.contains(key), "the key is never echoed: {message}");
    server.stop().await.unwrap();

    // Without a configured key nothing asks for one.
    let open = TestServer::start(common::config(), vec![loaded.provider.clone()]).await;
    for (path, body) in &routes {
        let response = match body {
            Some(body) => open.client.post(open.url(path)).json(body),
            None => open.client.get(open.url(path)),
        };
        assert_eq!(response.send().await.unwrap().status(), 200, "{path}");
    }
    open.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_never_reaches_the_log_even_at_trace_level() {
    let key = "never-log-me-7f3a9c";
    let mut service = Service::start(&[
        ("AKIDB_EMBEDDING_PROVIDER", "mock"),
        ("AKIDB_API_KEY", key),
        ("RUST_LOG", "trace"),
    ]);
    service.wait_ready().await;
    let client = fresh_client();
    for header in [
        format!("Bearer {key}"),
        format!("Bearer {key}-wrong"),
        key.to_string(),
    ] {
        for path in ["/metrics", "/api/v1/models"] {
            let _ = client
                .get(service.url(path))
                .header("authorization", &header)
                .send()
                .await
                .unwrap();
        }
        let _ = client
            .post(service.url("/api/v1/embed"))
            .header("authorization", &header)
            .json(&json!({"inputs": ["a"]}))
            .send()
            .await
            .unwrap();
    }
    service.terminate();
    assert!(
        service
            .wait_exit(std::time::Duration::from_secs(20))
            .await
            .is_some()
    );
    let log = service.whole_log().await;
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "trace log on: {log}"
    );
    assert!(!log.contains(key), "the key appears in the log:\n{log}");
}
