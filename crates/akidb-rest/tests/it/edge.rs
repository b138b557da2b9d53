//! The HTTP edge as an attacker and a new user meet it: one error table (status, body and
//! OpenAI's `param` from the error's kind, never its text), client values cut in every error,
//! credentials sent once, a `/health` that tells strangers only the state and the model ids,
//! compressed bodies refused, request ids that cannot forge a log field, and resident memory
//! counted in the system's pages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use akidb_embedding_core::EmbeddingProvider;
use akidb_embedding_mock::MockEmbeddingProvider;
use akidb_rest::{AppState, Config, metrics_router, router};
use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::common::process::Service;
use crate::common::{self, TestServer, post_request as post, raw};

/// A client-supplied value of 1 MiB: every error that names it must stay small.
const HUGE: usize = 1 << 20;

/// What a test may let an error body weigh, whatever the request held.
const SMALL: usize = 4096;

const KEY: &str = "edge-key-0123456789";

/// Where a configured model lives on the operator's disk: never shown to strangers.
const MODEL_PATH: &str = "/srv/private/models/minilm-folder";

fn mock() -> Arc<dyn EmbeddingProvider> {
    Arc::new(MockEmbeddingProvider::new(16).with_id("mock"))
}

fn roomy() -> Config {
    Config {
        max_body_bytes: 8 * HUGE,
        ..Config::default()
    }
}

async fn installed(config: &Config) -> AppState {
    let state = AppState::new(config);
    state.install(vec![mock()]).await.unwrap();
    state
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

/// Status, headers and the raw body of `request` answered by the main router.
async fn send(state: &AppState, request: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, headers, bytes.to_vec())
}

async fn answer(state: &AppState, request: Request<Body>) -> (StatusCode, Value) {
    let (status, _, bytes) = send(state, request).await;
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|error| panic!("{status}: not JSON ({error})"));
    (status, body)
}

#[tokio::test]
async fn openai_param_and_code_come_from_the_error_not_its_text() {
    let state = installed(&Config::default()).await;
    // The message of an unsupported dimension says "this model supports": the param is
    // still `dimensions`.
    for (body, status, param, code) in [
        (
            json!({"input": "a", "dimensions": 100}),
            422,
            "dimensions",
            "invalid_value",
        ),
        (
            json!({"input": "a", "prompt_name": "nope"}),
            422,
            "prompt_name",
            "invalid_value",
        ),
        (
            json!({"input": "a", "encoding_format": "int8"}),
            422,
            "encoding_format",
            "invalid_value",
        ),
        (json!({"input": [[1, 2]]}), 422, "input", "invalid_value"),
        (json!({"input": []}), 422, "input", "invalid_value"),
        (
            json!({"input": "a", "model": "gpt-4"}),
            404,
            "model",
            "model_not_found",
        ),
    ] {
        let (got, answer) = answer(&state, post("/v1/embeddings", &body)).await;
        assert_eq!(got.as_u16(), status, "{body} → {answer}");
        assert_eq!(answer["error"]["param"], param, "{body} → {answer}");
        assert_eq!(answer["error"]["code"], code, "{body} → {answer}");
    }
    // TEI's empty input is its own kind (400 `Empty`), not a message that starts a certain
    // way; the service's own dialect calls it a 422 like any invalid request.
    let (status, tei) = answer(&state, post("/embed", &json!({"inputs": []}))).await;
    assert_eq!(
        (status.as_u16(), &tei["error_type"]),
        (400, &json!("Empty"))
    );
    let (status, seed) = answer(&state, post("/api/v1/embed", &json!({"inputs": []}))).await;
    common::assert_error(status.as_u16(), &seed, 422, "invalid_request");
}

#[tokio::test]
async fn client_values_in_errors_are_cut_to_64_characters_and_their_length() {
    let state = installed(&roomy()).await;
    let huge = "Z".repeat(HUGE);
    let cases: Vec<(&str, Request<Body>, u16)> = vec![
        (
            "prompt_name",
            post(
                "/api/v1/embed",
                &json!({"inputs": ["a"], "prompt_name": huge}),
            ),
            422,
        ),
        (
            "encoding_format",
            post(
                "/v1/embeddings",
                &json!({"input": "a", "encoding_format": huge}),
            ),
            422,
        ),
        (
            "truncation_direction",
            post(
                "/embed",
                &json!({"inputs": "a", "truncation_direction": huge}),
            ),
            422,
        ),
        (
            "unknown field",
            post("/api/v1/embed", &{
                let mut body = json!({"inputs": ["a"]});
                body[huge.as_str()] = json!(1);
                body
            }),
            422,
        ),
        (
            "string of the wrong type",
            post(
                "/api/v1/embed",
                &json!({"inputs": ["a"], "dimensions": huge}),
            ),
            422,
        ),
        (
            "model",
            post("/v1/embeddings", &json!({"input": "a", "model": huge})),
            404,
        ),
        ("path", get(&format!("/{}", "Z".repeat(60_000))), 404),
        (
            "method",
            Request::builder()
                .method(Method::from_bytes("Z".repeat(300_000).as_bytes()).unwrap())
                .uri("/api/v1/embed")
                .body(Body::empty())
                .unwrap(),
            405,
        ),
    ];
    for (what, request, status) in cases {
        let (got, _, body) = send(&state, request).await;
        assert_eq!(got.as_u16(), status, "{what}");
        assert!(
            body.len() < SMALL,
            "{what}: the error body has {} bytes",
            body.len()
        );
        let text = String::from_utf8(body).unwrap();
        assert!(
            text.contains("bytes)"),
            "{what}: the cut value keeps its length: {text}"
        );
        // 64 characters (the path's first is its `/`).
        assert!(
            text.contains(&"Z".repeat(63)) && !text.contains(&"Z".repeat(65)),
            "{what}: 64 characters of the value, no more: {text}"
        );
    }
}

/// A request to a protected route with these `Authorization` headers.
fn with_authorizations(values: &[String]) -> Request<Body> {
    let mut request = get("/api/v1/models");
    for value in values {
        request
            .headers_mut()
            .append(header::AUTHORIZATION, value.parse().unwrap());
    }
    request
}

#[tokio::test]
async fn two_authorization_headers_are_refused_whatever_their_order() {
    let state = installed(&Config {
        api_key: Some(KEY.parse().unwrap()),
        ..Config::default()
    })
    .await;
    let right = format!("Bearer {KEY}");
    let wrong = "Bearer wrong".to_string();
    for pair in [
        [right.clone(), wrong.clone()],
        [wrong.clone(), right.clone()],
        [right.clone(), right.clone()],
    ] {
        let (status, body) = answer(&state, with_authorizations(&pair)).await;
        common::assert_error(status.as_u16(), &body, 400, "duplicate_credentials");
    }
    let (status, _) = answer(&state, with_authorizations(&[right])).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = answer(&state, with_authorizations(&[wrong])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

fn keyed_with_a_path() -> Config {
    Config {
        api_key: Some(KEY.parse().unwrap()),
        models: vec![MODEL_PATH.to_string()],
        ..Config::default()
    }
}

async fn health(state: &AppState, authorization: Option<&str>) -> (StatusCode, Value) {
    let mut request = get("/health");
    if let Some(value) = authorization {
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, value.parse().unwrap());
    }
    answer(state, request).await
}

#[tokio::test]
async fn health_tells_strangers_only_the_state_and_model_ids() {
    let config = keyed_with_a_path();
    let state = AppState::new(&config);
    let key = format!("Bearer {KEY}");

    // Loading: 503 either way; the model's path only with the key.
    let (status, public) = health(&state, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(public["status"], "loading", "{public}");
    assert!(!public.to_string().contains(MODEL_PATH), "{public}");
    assert!(public.get("states").is_none(), "{public}");
    let (_, detailed) = health(&state, Some(&key)).await;
    assert!(detailed.to_string().contains(MODEL_PATH), "{detailed}");

    state.install(vec![mock()]).await.unwrap();
    for wrong in [None, Some("Bearer wrong")] {
        let (status, public) = health(&state, wrong).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(public, json!({"status": "ok", "models": ["mock"]}));
    }
    let (status, detailed) = health(&state, Some(&key)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detailed["models"], json!(["mock"]));
    assert_eq!(detailed["states"][0]["model"], MODEL_PATH, "{detailed}");

    // The operator's metrics port tells everything, without the key.
    let response = metrics_router(state.clone())
        .oneshot(get("/health"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let operator: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(operator["states"][0]["model"], MODEL_PATH, "{operator}");
}

#[tokio::test]
async fn compressed_bodies_are_refused_with_415_and_never_decoded() {
    let state = installed(&Config::default()).await;
    let body = json!({"inputs": ["a"]});
    for coding in ["gzip", "br", "identity, gzip", "x-unknown"] {
        let mut request = post("/api/v1/embed", &body);
        request
            .headers_mut()
            .insert(header::CONTENT_ENCODING, coding.parse().unwrap());
        let (status, answer) = answer(&state, request).await;
        let message = common::assert_error(status.as_u16(), &answer, 415, "unsupported_media_type");
        assert!(message.contains("Content-Encoding"), "{message}");
        assert!(message.contains("uncompressed"), "{message}");
    }
    for (path, body) in [
        ("/v1/embeddings", json!({"input": "a"})),
        ("/embed", json!({"inputs": "a"})),
    ] {
        let mut request = post(path, &body);
        request
            .headers_mut()
            .insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
        let (status, _) = answer(&state, request).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{path}");
    }
    // `identity` is no coding at all.
    let mut request = post("/api/v1/embed", &body);
    request
        .headers_mut()
        .insert(header::CONTENT_ENCODING, "identity".parse().unwrap());
    let (status, _) = answer(&state, request).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_coding_other_than_chunked_is_refused_over_a_socket() {
    let server = TestServer::start(common::config(), vec![mock()]).await;
    let body = br#"{"inputs": ["a"]}"#;
    let chunked = |coding: &str| {
        let mut request = format!(
            "POST /api/v1/embed HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
             transfer-encoding: {coding}\r\nconnection: close\r\n\r\n{:x}\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        request.extend_from_slice(b"\r\n0\r\n\r\n");
        request
    };
    let refused = raw::exchange(
        server.addr,
        &chunked("gzip, chunked"),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].status, 415, "{refused:?}");
    let message = refused[0].json()["error"]["message"].to_string();
    assert!(message.contains("gzip"), "{message}");
    let served = raw::exchange(server.addr, &chunked("chunked"), Duration::from_secs(10)).await;
    assert_eq!(served[0].status, 200, "{served:?}");
    server.stop().await.unwrap();
}

/// The log line of the first request answered with `id`, from a running service (polled
/// until it appears: the log reader thread may lag the answer).
async fn request_line(service: &Service, id: &str) -> String {
    for _ in 0..500 {
        let log = service.log();
        if let Some(line) = log
            .lines()
            .find(|line| line.contains("request answered") && line.contains(id))
        {
            return line.to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no request line for {id} in:\n{}", service.log());
}

/// The service's own executable, its log as an operator reads it: a request id sent as
/// `abc}:status=200:FORGED` must not close the span's fields and add a `status` of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_cannot_forge_a_text_log_field() {
    let forged = "abc}:status=200:FORGED";
    let mut service = Service::start(&[
        ("AKIDB_EMBEDDING_PROVIDER", "mock"),
        ("AKIDB_LOG_FORMAT", "text"),
    ]);
    service.wait_ready().await;
    let response = common::fresh_client()
        .get(service.url("/api/v1/models"))
        .header("x-request-id", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // A visible-ASCII id is the client's to choose, and comes back.
    assert_eq!(response.headers()["x-request-id"], forged);
    let line = request_line(&service, "FORGED").await;
    assert!(
        line.contains(r#"id="abc}:status=200:FORGED""#),
        "the id is quoted: {line}"
    );
    assert!(!line.contains("id=abc}"), "the id closed the span: {line}");
    service.terminate();
    assert!(service.wait_exit(Duration::from_secs(20)).await.is_some());
}

fn is_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.iter().map(|group| group.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|group| group.bytes().all(|byte| byte.is_ascii_hexdigit()))
}

#[tokio::test]
async fn request_ids_are_tower_http_uuids_on_every_answer_unknown_routes_included() {
    let state = installed(&Config::default()).await;
    for request in [
        get("/api/v1/models"),
        get("/no/such/route"),
        Request::delete("/health").body(Body::empty()).unwrap(),
    ] {
        let path = request.uri().path().to_string();
        let (_, headers, _) = send(&state, request).await;
        let id = headers
            .get("x-request-id")
            .unwrap_or_else(|| panic!("no request id from {path}"))
            .to_str()
            .unwrap();
        assert!(is_uuid(id), "{path}: {id}");
    }
    // An id that is not visible ASCII of sane length is replaced, not echoed.
    for given in ["two words", &"x".repeat(129)] {
        let mut request = get("/api/v1/models");
        request
            .headers_mut()
            .insert("x-request-id", given.parse().unwrap());
        let (_, headers, _) = send(&state, request).await;
        let id = headers["x-request-id"].to_str().unwrap();
        assert!(is_uuid(id), "{given:?} became {id}");
    }
}

/// This process's resident memory as the kernel tells it in kB, independent of the page size.
fn vm_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// The value of `series` in a Prometheus text exposition.
fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// `/proc/self/stat` counts resident memory in pages; with a fixed 4096-byte page the series
/// would be off by 4× or 16× on kernels with 16 or 64 KiB pages (on 4 KiB machines, such as
/// x86-64, both agree).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn resident_memory_is_counted_in_the_systems_pages() {
    let state = installed(&Config::default()).await;
    let before = vm_rss_bytes();
    let (status, _, body) = send(&state, get("/metrics")).await;
    let after = vm_rss_bytes();
    assert_eq!(status, StatusCode::OK);
    let resident = series(
        &String::from_utf8(body).unwrap(),
        "process_resident_memory_bytes",
    );
    // Other tests of this binary allocate meanwhile: a wide margin, far below a factor 4.
    let (low, high) = (
        before.min(after) as f64 / 1.5,
        before.max(after) as f64 * 1.5,
    );
    assert!(
        (low..=high).contains(&resident),
        "resident {resident} bytes, the kernel says {before}..{after}"
    );
}
