//! Attacks on the HTTP edge: oversized and lying bodies, deep and huge JSON, wrong content
//! types, invalid UTF-8, slow and idle clients. Each attack gets its documented status (or
//! its connection closed), and after each one the service still answers a real embedding
//! request correctly (all-MiniLM-L6-v2 where installed, else the mock).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use akidb_embedding_core::EmbeddingProvider;
use akidb_embedding_mock::MockEmbeddingProvider;
use akidb_rest::Config;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use common::raw::{self, RawResponse};
use common::{Probe, TestServer, assert_error, config, real_model, wait_for};

/// The client timeout of these tests: short, so slow-client attacks end quickly.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long past the client timeout a connection may take to be closed.
const SLACK: Duration = Duration::from_secs(10);

fn attack_config() -> Config {
    Config {
        client_timeout_ms: CLIENT_TIMEOUT.as_millis() as u64,
        ..config()
    }
}

/// Asserts a raw exchange got exactly one error answer of `status` and `kind`.
fn assert_one_error(responses: &[RawResponse], status: u16, kind: &str, attack: &str) -> String {
    let first = responses
        .first()
        .unwrap_or_else(|| panic!("{attack}: no response before the connection closed"));
    assert_error(first.status, &first.json(), status, kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_and_lying_lengths() {
    let loaded = real_model().await;
    let probe = Probe::new(&loaded).await;
    let server = TestServer::start(attack_config(), vec![loaded.provider.clone()]).await;
    let limit = akidb_rest::config::DEFAULT_MAX_BODY_BYTES;
    let within = CLIENT_TIMEOUT + SLACK;

    // An honest length over the limit is refused from the headers alone, body never sent.
    let head = format!(
        "POST /api/v1/embed HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        limit + 1
    );
    // (A server that waited for the body would answer 408 after the client timeout.)
    let responses = raw::exchange(server.addr, head.as_bytes(), within).await;
    assert_one_error(&responses, 413, "payload_too_large", "declared length");
    probe
        .check(&server, "a declared length over the limit")
        .await;

    // A chunked body (no length) that grows past the limit is cut off at the limit.
    let mut stream = raw::connect(server.addr).await;
    stream
        .write_all(
            b"POST /v1/embeddings HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
              transfer-encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024));
    for _ in 0..(limit / (64 * 1024) + 2) {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break; // the server stopped reading: fine
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let responses = raw::parse_responses(&raw::read_until_closed(&mut stream, within).await);
    assert_one_error(&responses, 413, "payload_too_large", "chunked body");
    probe.check(&server, "a chunked body over the limit").await;

    // A length shorter than the body: the body is cut (invalid JSON, 400) and the rest is
    // read as a next request, which is not HTTP: the connection is answered 400 and closed.
    let body = br#"{"inputs": ["smuggled request text"]}"#;
    let mut lying = b"POST /api/v1/embed HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
      content-length: 10\r\n\r\n"
        .to_vec();
    lying.extend_from_slice(body);
    let responses = raw::exchange(server.addr, &lying, within).await;
    assert_one_error(&responses, 400, "invalid_json", "short content-length");
    assert!(
        responses
            .iter()
            .skip(1)
            .all(|response| response.status == 400),
        "the rest of the body is never served as a request: {responses:?}"
    );
    probe
        .check(&server, "a content-length shorter than the body")
        .await;

    // A length longer than the body, then silence: 408 after the client timeout.
    let mut stalled =
        b"POST /api/v1/embed HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
      content-length: 1000\r\n\r\n"
            .to_vec();
    stalled.extend_from_slice(body);
    let started = Instant::now();
    let responses = raw::exchange(server.addr, &stalled, within).await;
    let message = assert_one_error(&responses, 408, "request_timeout", "stalled body");
    assert!(message.contains("1000 ms"), "{message}");
    assert!(started.elapsed() >= CLIENT_TIMEOUT);
    probe
        .check(&server, "a content-length longer than the body")
        .await;

    // Malformed framing is refused by the HTTP parser (400), never guessed at.
    for framing in [
        "content-length: abc\r\n",
        "content-length: 5\r\ncontent-length: 6\r\n",
        "content-length: -1\r\n",
        "transfer-encoding: gzip, chunked, identity\r\n",
    ] {
        let request = format!(
            "POST /api/v1/embed HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
             {framing}\r\n{{\"inputs\": [\"a\"]}}"
        );
        let responses = raw::exchange(server.addr, request.as_bytes(), within).await;
        assert!(
            responses.iter().all(|response| response.status == 400),
            "{framing:?}: {responses:?}"
        );
        probe.check(&server, &format!("framing {framing:?}")).await;
    }
    server.stop().await.unwrap();
}

/// The token limit is counted with the model's own tokenizer before a request queues:
/// exactly at it is served, one text over it is 413 on both routes, and the service goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_token_limit_are_refused_on_both_routes() {
    let loaded = real_model().await;
    let probe = Probe::new(&loaded).await;
    let limited = Config {
        max_request_tokens: 100,
        ..attack_config()
    };
    let server = TestServer::start(limited, vec![loaded.provider.clone()]).await;
    // "hello world" is 4 tokens for MiniLM ([CLS] hello world [SEP]) and for the mock.
    let at_limit = json!({ "input": vec!["hello world"; 25] }).to_string();
    let (status, answer) = server
        .post_raw("/v1/embeddings", "application/json", at_limit.into_bytes())
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["usage"]["total_tokens"], 100, "{answer}");
    for (path, field) in [("/api/v1/embed", "inputs"), ("/v1/embeddings", "input")] {
        let over = json!({ field: vec!["hello world"; 26] }).to_string();
        let (status, answer) = server
            .post_raw(path, "application/json", over.into_bytes())
            .await;
        let message = assert_error(status, &answer, 413, "payload_too_large");
        assert!(
            message.contains("104 tokens") && message.contains("limit of 100"),
            "{path}: {message}"
        );
    }
    probe
        .check(&server, "after requests over the token limit")
        .await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_and_huge_json_is_refused_without_harm() {
    let loaded = real_model().await;
    let probe = Probe::new(&loaded).await;
    // The 1 MB request of 256 texts must be served however slow this machine is: admission
    // estimates its work from timings measured here, so the deadline is made generous.
    let config = Config {
        request_timeout_ms: 600_000,
        ..attack_config()
    };
    let server = TestServer::start(config, vec![loaded.provider.clone()]).await;
    let deep = |open: &str, innermost: &str, close: &str| {
        let mut text = open.repeat(100_000);
        text.push_str(innermost);
        text.push_str(&close.repeat(100_000));
        text
    };
    let arrays = deep("[", "", "]");
    let objects = deep("{\"a\":", "1", "}");
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/api/v1/embed", arrays.clone(), 422, "invalid_request"),
        (
            "/api/v1/embed",
            format!(r#"{{"inputs": {arrays}}}"#),
            422,
            "invalid_request",
        ),
        ("/api/v1/embed", objects.clone(), 422, "invalid_request"),
        (
            "/v1/embeddings",
            format!(r#"{{"input": {arrays}}}"#),
            400,
            "invalid_json",
        ),
        // Deep values in fields the OpenAI route ignores are skipped without recursion:
        // the request is served.
        (
            "/v1/embeddings",
            format!(r#"{{"input": ["a"], "user": {arrays}}}"#),
            200,
            "",
        ),
        (
            "/v1/embeddings",
            format!(r#"{{"input": ["a"], "user": {objects}}}"#),
            200,
            "",
        ),
        // 100k texts: parsed, then refused by the count limit.
        (
            "/api/v1/embed",
            format!(r#"{{"inputs": [{}"a"]}}"#, "\"a\",".repeat(99_999)),
            413,
            "payload_too_large",
        ),
        (
            "/v1/embeddings",
            format!(r#"{{"input": [{}"a"]}}"#, "\"\",".repeat(99_999)),
            413,
            "payload_too_large",
        ),
        // One text of 1.5 million characters, inside the body limit: truncation means
        // truncation, it is embedded from its first tokens (the tokenizer reads only a
        // prefix that covers the model's cap).
        (
            "/api/v1/embed",
            format!(r#"{{"inputs": ["{}"]}}"#, "x".repeat(1_500_000)),
            200,
            "",
        ),
        // 256 texts of 4,000 characters, 1 million characters together: the same.
        (
            "/v1/embeddings",
            json!({ "input": vec!["y".repeat(4_000); 256] }).to_string(),
            200,
            "",
        ),
        // A number of a million digits, and a body that is only whitespace.
        (
            "/api/v1/embed",
            format!(
                r#"{{"inputs": ["a"], "dimensions": {}}}"#,
                "9".repeat(1_000_000)
            ),
            400,
            "invalid_json",
        ),
        ("/api/v1/embed", " ".repeat(1_900_000), 400, "invalid_json"),
    ];
    for (path, body, status, kind) in cases {
        let started = Instant::now();
        let (got, answer) = server
            .post_raw(path, "application/json", body.clone().into_bytes())
            .await;
        let shown: String = body.chars().take(40).collect();
        if status == 200 {
            assert_eq!(got, 200, "{shown}…: {answer}");
            probe.check(&server, &format!("{path} {shown}…")).await;
            continue;
        }
        let message = assert_error(got, &answer, status, kind);
        assert!(
            message.len() < 4096,
            "{shown}…: the error does not echo the body ({} bytes)",
            message.len()
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{shown}…: answered in {:?}",
            started.elapsed()
        );
        probe.check(&server, &format!("{path} {shown}…")).await;
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_types_and_invalid_utf8() {
    let loaded = real_model().await;
    let probe = Probe::new(&loaded).await;
    let server = TestServer::start(attack_config(), vec![loaded.provider.clone()]).await;
    let within = CLIENT_TIMEOUT + SLACK;
    let valid = br#"{"inputs": ["content types"]}"#;

    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "json",
        "",
    ] {
        let (status, body) = server
            .post_raw("/api/v1/embed", content_type, valid.to_vec())
            .await;
        assert_error(status, &body, 415, "unsupported_media_type");
    }
    let without = format!(
        "POST /api/v1/embed HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        valid.len()
    );
    let mut request = without.into_bytes();
    request.extend_from_slice(valid);
    let responses = raw::exchange(server.addr, &request, within).await;
    assert_one_error(&responses, 415, "unsupported_media_type", "no content type");
    for content_type in [
        "application/json; charset=utf-8",
        "application/vnd.api+json",
    ] {
        let (status, body) = server
            .post_raw("/api/v1/embed", content_type, valid.to_vec())
            .await;
        assert_eq!(status, 200, "{content_type}: {body}");
    }
    probe.check(&server, "wrong content types").await;

    // Bytes that are not UTF-8, anywhere in the body: 400, never a lossy guess.
    let invalid: [&[u8]; 7] = [
        // In a field the OpenAI route ignores (found by the request_parse fuzz target).
        b"{\"input\": [\"a\"], \"user\": \"\xff\xff u-1\"}",
        b"{\"inputs\": [\"\xff\xfe\"]}",
        b"{\"inputs\": [\"\xc0\xaf overlong slash\"]}",
        b"{\"inputs\": [\"\xed\xa0\x80 encoded surrogate\"]}",
        b"{\"inputs\": [\"truncated \xe6\x97\"]}",
        b"{\"model\": \"\x80\", \"inputs\": [\"a\"]}",
        b"\xfe\xff\x00{\x00\"\x00i\x00n\x00p\x00u\x00t\x00s\x00\"",
    ];
    for body in invalid {
        for path in ["/api/v1/embed", "/v1/embeddings"] {
            let (status, answer) = server
                .post_raw(path, "application/json", body.to_vec())
                .await;
            assert!(
                status == 400 || status == 422,
                "{path} {body:?}: {status} {answer}"
            );
            assert_error(
                status,
                &answer,
                status,
                if status == 400 {
                    "invalid_json"
                } else {
                    "invalid_request"
                },
            );
        }
    }
    // Lone surrogates written as escapes are not text either.
    let (status, answer) = server
        .post_raw(
            "/api/v1/embed",
            "application/json",
            br#"{"inputs": ["\ud800 lone"]}"#.to_vec(),
        )
        .await;
    assert_error(status, &answer, 400, "invalid_json");
    probe.check(&server, "invalid UTF-8").await;

    // Valid but unusual text is embedded: NUL, BOM, bidi controls, emoji sequences, a
    // thousand combining marks, private-use and non-characters.
    let combining = format!("e{}", "\u{301}".repeat(1000));
    let unusual: [&str; 7] = [
        "\u{0}",
        "\u{feff}byte order mark",
        "\u{202e}reversed\u{202c} text \u{200f}",
        "👩‍👩‍👧‍👦🏳️‍🌈",
        &combining,
        "\u{e000}\u{10fffd}\u{fffe}\u{ffff}",
        "\u{1}\u{1f}\u{7f}",
    ];
    let (status, body) = server
        .post("/api/v1/embed", &json!({ "inputs": unusual }))
        .await;
    assert_eq!(status, 200, "{body}");
    let vectors = common::vectors(&body);
    assert_eq!(vectors.len(), unusual.len());
    for vector in &vectors {
        let norm: f32 = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "finite unit vector: {norm}");
    }
    probe.check(&server, "unusual text").await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_while_others_are_served() {
    let loaded = real_model().await;
    let probe = Arc::new(Probe::new(&loaded).await);
    let server = Arc::new(TestServer::start(attack_config(), vec![loaded.provider.clone()]).await);

    // Headers trickled a byte at a time, never finished: the connection is closed after the
    // client timeout, and meanwhile the service answers others.
    let mut trickle = raw::connect(server.addr).await;
    trickle
        .write_all(b"POST /api/v1/embed HTTP/1.1\r\nhost: t\r\n")
        .await
        .unwrap();
    let trickler = tokio::spawn(async move {
        let started = Instant::now();
        loop {
            if trickle.write_all(b"x").await.is_err() {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < CLIENT_TIMEOUT + SLACK,
                "a client trickling its headers was never cut off"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    for _ in 0..3 {
        probe
            .check(&server, "while a client trickles headers")
            .await;
    }
    let cut_after = trickler.await.unwrap();
    assert!(cut_after >= CLIENT_TIMEOUT / 2, "cut after {cut_after:?}");

    // A slow but complete request (16 bytes every 10 ms, well within the timeout) is served.
    let body = br#"{"inputs": ["slow but steady"]}"#;
    let request = raw::post("/api/v1/embed", "application/json", body);
    let mut slow = raw::connect(server.addr).await;
    for piece in request.chunks(16) {
        slow.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let responses =
        raw::parse_responses(&raw::read_until_closed(&mut slow, CLIENT_TIMEOUT + SLACK).await);
    assert_eq!(responses.len(), 1, "{responses:?}");
    assert_eq!(responses[0].status, 200, "{:?}", responses[0]);

    // A body that stops half-way: 408, connection closed.
    let mut stalled = raw::connect(server.addr).await;
    let request = raw::post("/api/v1/embed", "application/json", body);
    stalled
        .write_all(&request[..request.len() - 5])
        .await
        .unwrap();
    let responses =
        raw::parse_responses(&raw::read_until_closed(&mut stalled, CLIENT_TIMEOUT + SLACK).await);
    assert_one_error(&responses, 408, "request_timeout", "half a body");
    probe.check(&server, "a body stopped half-way").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_loses_its_connection() {
    // The mock answers big batches at once; what matters is the connection, not the model.
    let mock: Arc<dyn EmbeddingProvider> = Arc::new(MockEmbeddingProvider::new(384));
    let server = TestServer::start(attack_config(), vec![mock]).await;
    let metrics = server.state.metrics();
    let texts: Vec<String> = (0..256).map(|i| format!("text number {i}")).collect();
    let body = json!({ "inputs": texts }).to_string();
    let one = raw::post("/api/v1/embed", "application/json", body.as_bytes());
    let one = String::from_utf8(one)
        .unwrap()
        .replace("connection: close\r\n", "");
    // 40 pipelined requests whose answers (about 1 MB each) are never read.
    let pipelined = one.repeat(40).into_bytes();
    wait_for("no connection left from start-up", SLACK, || {
        metrics.connections_open() == 0
    })
    .await;
    let mut stream = raw::connect(server.addr).await;
    wait_for("the connection is counted", SLACK, || {
        metrics.connections_open() == 1
    })
    .await;
    let writer = tokio::spawn(async move {
        let _ = stream.write_all(&pipelined).await;
        stream
    });
    // Once the socket buffers are full the server's writes stall; after the client timeout
    // it drops the connection.
    wait_for(
        "the stalled connection is closed",
        CLIENT_TIMEOUT + SLACK + SLACK,
        || metrics.connections_open() == 0,
    )
    .await;
    let mut stream = writer.await.unwrap();
    let bytes = raw::read_until_closed(&mut stream, SLACK).await;
    let answered = raw::parse_responses(&bytes).len();
    assert!(
        answered < 40,
        "the server gave up before answering all: {answered}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_neither_starve_others_nor_stay_for_ever() {
    let loaded = real_model().await;
    let probe = Probe::new(&loaded).await;
    // Long enough that all 500 are open at once even on a busy machine.
    let timeout = Duration::from_secs(5);
    let config = Config {
        client_timeout_ms: timeout.as_millis() as u64,
        ..config()
    };
    let server = TestServer::start(config, vec![loaded.provider.clone()]).await;
    let metrics = server.state.metrics();
    let accepted_before = metrics.connections_total();

    let mut idle = Vec::new();
    for index in 0..500 {
        let mut stream = raw::connect(server.addr).await;
        if index % 2 == 1 {
            // Half of them start a request and stop.
            stream.write_all(b"GET /hea").await.unwrap();
        }
        idle.push(stream);
    }
    wait_for("500 connections accepted", SLACK, || {
        metrics.connections_total() >= accepted_before + 500
    })
    .await;
    assert!(
        metrics.connections_open() >= 400,
        "most of them open at once"
    );
    probe.check(&server, "500 idle connections").await;

    let started = Instant::now();
    for stream in &mut idle {
        assert!(
            raw::closes_within(stream, timeout + SLACK).await,
            "an idle connection stayed open"
        );
    }
    assert!(started.elapsed() < timeout + SLACK);
    wait_for("idle connections closed", SLACK, || {
        metrics.connections_open() == 0
    })
    .await;
    probe.check(&server, "idle connections timed out").await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_clients_wait_instead_of_failing() {
    let loaded = real_model().await;
    let probe = Probe::new(&loaded).await;
    let config = Config {
        max_connections: 16,
        client_timeout_ms: 2000,
        ..config()
    };
    let server = TestServer::start(config, vec![loaded.provider.clone()]).await;
    let metrics = server.state.metrics();
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(raw::connect(server.addr).await);
    }
    wait_for("the cap is reached", SLACK, || {
        metrics.connections_open() == 16
    })
    .await;
    for _ in 0..20 {
        assert!(metrics.connections_open() <= 16, "never more than the cap");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The probe waits in the backlog until idle connections time out, then is served.
    probe.check(&server, "connections at the cap").await;
    assert!(metrics.connections_total() >= 17);
    drop(idle);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_are_refused_by_the_http_parser() {
    let loaded = real_model().await;
    let probe = Probe::new(&loaded).await;
    let server = TestServer::start(attack_config(), vec![loaded.provider.clone()]).await;
    let huge_header = format!("x-padding: {}\r\n", "a".repeat(500 * 1024));
    let many_headers: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    let long_uri = format!("/api/v1/embed?{}", "q".repeat(500 * 1024));
    for (what, request) in [
        (
            "a 500 KiB header",
            format!("GET /health HTTP/1.1\r\nhost: t\r\n{huge_header}\r\n"),
        ),
        (
            "200 headers",
            format!("GET /health HTTP/1.1\r\nhost: t\r\n{many_headers}\r\n"),
        ),
        (
            "a 500 KiB URI",
            format!("GET {long_uri} HTTP/1.1\r\nhost: t\r\n\r\n"),
        ),
    ] {
        let responses =
            raw::exchange(server.addr, request.as_bytes(), CLIENT_TIMEOUT + SLACK).await;
        assert!(
            !responses.is_empty()
                && responses
                    .iter()
                    .all(|response| response.status == 431 || response.status == 400),
            "{what}: {responses:?}"
        );
        probe.check(&server, what).await;
    }
    server.stop().await.unwrap();
}
