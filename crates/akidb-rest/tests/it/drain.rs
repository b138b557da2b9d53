//! Drain on shutdown: `/health` turns 503 at once while requests are still accepted and
//! served for `AKIDB_DRAIN_DELAY_MS`, every answer in that time carries `Connection: close`
//! (and its connection is closed after it), then the listener closes, idle keep-alive
//! connections close and in-flight requests finish. In process over the mock (timings under
//! the test's control), then the executable with a real SIGTERM (the log's sequence).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use akidb_embedding_core::{
    EmbedRequest, EmbeddingProvider, Encoding, ModelInfo, Result as EmbedResult, TokenizedRequest,
};
use akidb_embedding_mock::MockEmbeddingProvider;
use akidb_rest::Config;
use async_trait::async_trait;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use common::raw::{RawResponse, parse_responses};
use common::{TestServer, config};

const DRAIN: Duration = Duration::from_millis(3000);

/// The mock behind a gate: while the gate is shut a run waits for it to open, so a test
/// keeps a request in flight exactly as long as it needs, with no latency to time against.
struct Gated {
    mock: MockEmbeddingProvider,
    open: watch::Sender<bool>,
    waiting: watch::Sender<usize>,
}

impl Gated {
    /// Open at first (start-up's calibration runs pass).
    fn new(id: &str) -> Arc<Self> {
        Arc::new(Self {
            mock: MockEmbeddingProvider::new(8).with_id(id),
            open: watch::Sender::new(true),
            waiting: watch::Sender::new(0),
        })
    }

    fn set_open(&self, open: bool) {
        self.open.send_replace(open);
    }

    /// Waits until a run is held at the shut gate.
    async fn wait_for_a_held_run(&self) {
        let mut waiting = self.waiting.subscribe();
        tokio::time::timeout(
            Duration::from_secs(60),
            waiting.wait_for(|&count| count > 0),
        )
        .await
        .expect("a run reached the gate within a minute")
        .unwrap();
    }
}

#[async_trait]
impl EmbeddingProvider for Gated {
    fn model_info(&self) -> &ModelInfo {
        self.mock.model_info()
    }
    async fn tokenize(&self, request: EmbedRequest) -> EmbedResult<TokenizedRequest> {
        self.mock.tokenize(request).await
    }
    async fn run(&self, batch: Vec<Encoding>) -> EmbedResult<Vec<Vec<f32>>> {
        let mut open = self.open.subscribe();
        if !*open.borrow() {
            self.waiting.send_modify(|count| *count += 1);
            let _ = open.wait_for(|&open| open).await;
            self.waiting.send_modify(|count| *count -= 1);
        }
        self.mock.run(batch).await
    }
}

/// A keep-alive `GET /health`.
const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nhost: test\r\n\r\n";

/// Sends `request` on `stream` and reads exactly one answer (the connection may stay open).
async fn one_answer(stream: &mut TcpStream, request: &[u8]) -> RawResponse {
    stream.write_all(request).await.expect("write the request");
    let mut bytes = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(response) = parse_responses(&bytes).into_iter().next() {
            return response;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let read = tokio::time::timeout(left, stream.read(&mut buffer))
            .await
            .expect("an answer within 20 s")
            .expect("read the answer");
        assert!(
            read > 0,
            "closed before a whole answer: {}",
            String::from_utf8_lossy(&bytes)
        );
        bytes.extend_from_slice(&buffer[..read]);
    }
}

/// Whether the server has closed `stream` (EOF or reset) by now, without waiting long.
async fn is_closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => panic!("unexpected bytes on an idle connection"),
        Err(_) => false,
    }
}

async fn wait_closed(stream: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut byte = [0u8; 1];
    match tokio::time::timeout(within, stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => started.elapsed(),
        Ok(Ok(_)) => panic!("unexpected bytes on an idle connection"),
        Err(_) => panic!("the connection was still open after {within:?}"),
    }
}

fn drain_config(drain: Duration) -> Config {
    Config {
        drain_delay_ms: drain.as_millis() as u64,
        shutdown_timeout_ms: 10_000,
        ..config()
    }
}

/// A keep-alive POST of `{"model": model, "inputs": [text]}` to `/api/v1/embed`.
fn keep_alive_embed(model: &str, text: &str) -> Vec<u8> {
    let body = json!({ "model": model, "inputs": [text] }).to_string();
    format!(
        "POST /api/v1/embed HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Connects to `addr` during the drain: the listener must still accept.
async fn connect_during_drain(addr: SocketAddr, what: &str) -> TcpStream {
    TcpStream::connect(addr).await.unwrap_or_else(|error| {
        panic!("{what}: the listener no longer accepts ({error}); it must until the drain ends")
    })
}

/// Connects to `addr` until the connection is refused and returns that error. A connection the
/// closing listener had queued but not accepted is reset: the listener is going, not gone, so
/// the next attempt tells. Panics if the listener still accepts `accept_for` after `since`.
async fn refused_connect(addr: SocketAddr, since: Instant, accept_for: Duration) -> std::io::Error {
    loop {
        match TcpStream::connect(addr).await {
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(error) => return error,
            Ok(_) => assert!(
                since.elapsed() < accept_for,
                "the listener still accepts {accept_for:?} after it was told to stop"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_answers_503_on_health_serves_with_connection_close_then_stops_accepting() {
    // One model answers at once; the other's runs wait at a gate the test opens once the
    // listener has closed, so a request sent to it during the drain is still in flight then.
    let fast: Arc<dyn EmbeddingProvider> = Arc::new(MockEmbeddingProvider::new(8).with_id("fast"));
    let held = Gated::new("held");
    let server = TestServer::start(drain_config(DRAIN), vec![fast, held.clone()]).await;
    let addr: SocketAddr = server.addr;

    // Before the signal: keep-alive answers, the connection stays open.
    let mut used_during_drain = TcpStream::connect(addr).await.unwrap();
    let before = one_answer(&mut used_during_drain, HEALTH).await;
    assert_eq!(before.status, 200);
    assert_ne!(before.header("connection"), Some("close"));
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert_eq!(one_answer(&mut idle, HEALTH).await.status, 200);
    assert!(!is_closed(&mut idle).await, "keep-alive before the drain");

    let stopping = tokio::spawn(server.stop());
    let signalled = Instant::now();

    // /health turns 503 on a new connection (the listener still accepts), and the answer
    // closes its connection.
    let health = loop {
        let mut fresh = connect_during_drain(addr, "/health").await;
        let answer = one_answer(&mut fresh, HEALTH).await;
        if answer.status == 503 {
            wait_closed(&mut fresh, Duration::from_secs(20)).await;
            break answer;
        }
    };
    assert_eq!(health.json()["error"]["type"], "not_ready", "{:?}", health);
    assert_eq!(health.header("connection"), Some("close"));

    // A request accepted during the drain, held in flight.
    held.set_open(false);
    let mut in_flight = connect_during_drain(addr, "the in-flight request").await;
    in_flight
        .write_all(&keep_alive_embed("held", "in flight"))
        .await
        .unwrap();
    held.wait_for_a_held_run().await;

    // A keep-alive connection opened before the drain is still served, told to close, and
    // closed after the answer.
    let served = one_answer(
        &mut used_during_drain,
        &keep_alive_embed("fast", "during the drain"),
    )
    .await;
    assert_eq!(
        served.status,
        200,
        "{}",
        String::from_utf8_lossy(&served.body)
    );
    assert_eq!(served.json()["count"], 1);
    assert_eq!(served.header("connection"), Some("close"));
    wait_closed(&mut used_during_drain, Duration::from_secs(20)).await;

    // The idle keep-alive connection was left open during the drain and is closed when the
    // listener closes.
    let idle_closed_after =
        signalled.elapsed() + wait_closed(&mut idle, DRAIN + Duration::from_secs(20)).await;
    assert!(
        idle_closed_after >= DRAIN,
        "an idle connection was closed {idle_closed_after:?} after the signal, within the drain"
    );
    // New connections are refused once the listener is closed.
    let refused = refused_connect(addr, signalled, DRAIN + Duration::from_secs(60)).await;
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    let refused_after = signalled.elapsed();
    assert!(refused_after >= DRAIN, "refused after {refused_after:?}");

    // The in-flight request was still running when the listener closed, and finishes.
    held.set_open(true);
    let answer = one_answer(&mut in_flight, b"").await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.json()["count"], 1);
    assert_eq!(answer.header("connection"), Some("close"));
    stopping.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_drain_delay_the_listener_closes_at_once() {
    // A request is held in flight when the signal comes: with no drain delay the listener
    // closes while it is still running, not after the work in flight.
    let held = Gated::new("held");
    let server = TestServer::start(drain_config(Duration::ZERO), vec![held.clone()]).await;
    let addr = server.addr;
    held.set_open(false);
    let mut in_flight = TcpStream::connect(addr).await.unwrap();
    in_flight
        .write_all(&keep_alive_embed("held", "in flight"))
        .await
        .unwrap();
    held.wait_for_a_held_run().await;
    let stopping = tokio::spawn(server.stop());
    let refused = refused_connect(addr, Instant::now(), Duration::from_secs(60)).await;
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    // Then the held request finishes and the server stops.
    held.set_open(true);
    let answer = one_answer(&mut in_flight, b"").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("connection"), Some("close"));
    stopping.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_the_logged_order() {
    let mut service = common::process::Service::start(&[
        ("AKIDB_EMBEDDING_PROVIDER", "mock"),
        ("AKIDB_DRAIN_DELAY_MS", "3000"),
        ("AKIDB_SHUTDOWN_TIMEOUT_MS", "5000"),
    ]);
    service.wait_ready().await;
    let addr: SocketAddr = service.addr.parse().unwrap();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert_eq!(one_answer(&mut idle, HEALTH).await.status, 200);

    // The clock starts before the signal is sent: on a busy machine sending it can take longer
    // than the slack, and the drain delay runs from its delivery.
    let signalled = Instant::now();
    service.terminate();
    // /health turns 503 while the listener still accepts: polled until it does, or until
    // the listener has closed without it.
    loop {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            panic!(
                "the listener closed with no 503 from /health first:\n{}",
                service.log()
            );
        };
        if one_answer(&mut stream, HEALTH).await.status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let idle_closed = signalled.elapsed() + wait_closed(&mut idle, Duration::from_secs(30)).await;
    assert!(
        idle_closed >= Duration::from_millis(3000),
        "{idle_closed:?}"
    );
    let status = service
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("still running 10 s after SIGTERM:\n{}", service.log()));
    assert!(status.success(), "exit {status}:\n{}", service.log());

    let log = service.whole_log().await;
    let position = |what: &str| {
        log.find(what)
            .unwrap_or_else(|| panic!("`{what}` is not in the log:\n{log}"))
    };
    let steps = [
        position("shutting down: draining"),
        position("drain delay over"),
        position("no longer accepting connections"),
        position("every connection closed"),
    ];
    assert!(
        steps.is_sorted(),
        "the steps were logged out of order:\n{log}"
    );
    assert!(log.contains("drain_delay_ms=3000"), "{log}");
}
