//! `AKIDB_METRICS_BIND`: `GET /metrics` on a port of its own, without the API key, as
//! Prometheus scrapes by convention, while the main port's `/metrics` keeps needing the key;
//! the same series on both; the listener serves through the drain and closes with the main
//! one. Over real sockets, in process and with the executable.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use akidb_embedding_core::EmbeddingProvider;
use akidb_embedding_mock::MockEmbeddingProvider;
use akidb_rest::config::ApiKey;
use akidb_rest::{Config, ServeError, Server};
use serde_json::json;

use common::process::Service;
use common::{TestServer, config, fresh_client};

const KEY: &str = "metrics-test-key";

fn metrics_config() -> Config {
    Config {
        api_key: Some(ApiKey::from_str(KEY).unwrap()),
        metrics_bind: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..config()
    }
}

fn mock() -> Arc<dyn EmbeddingProvider> {
    Arc::new(MockEmbeddingProvider::new(8).with_id("mock"))
}

/// Each sample of a Prometheus text exposition: series (name and labels) → value.
fn samples(exposition: &str) -> BTreeMap<String, f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            (series.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

async fn get(client: &reqwest::Client, url: String, key: Option<&str>) -> (u16, String) {
    let mut request = client.get(url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("send");
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_port_answers_without_the_key_while_the_main_port_requires_it() {
    let server = TestServer::start(metrics_config(), vec![mock()]).await;
    let metrics_url = format!("http://{}/metrics", server.metrics_addr.unwrap());
    let client = fresh_client();
    let response = client
        .post(server.url("/api/v1/embed"))
        .bearer_auth(KEY)
        .json(&json!({"inputs": ["one", "two"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The main port keeps its key; the metrics port needs none and ignores a wrong one.
    assert_eq!(get(&client, server.url("/metrics"), None).await.0, 401);
    assert_eq!(
        get(&client, server.url("/metrics"), Some("wrong")).await.0,
        401
    );
    let (status, _) = get(&client, server.url("/metrics"), Some(KEY)).await;
    assert_eq!(status, 200);
    for key in [None, Some("wrong")] {
        let (status, body) = get(&client, metrics_url.clone(), key).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("akidb_models_ready 1"), "{body}");
    }

    // The same series on both ports (after each has been scraped once, so each port's own
    // scrapes are among them), and the same counts of what neither scrape touches.
    let (_, main) = get(&client, server.url("/metrics"), Some(KEY)).await;
    let (_, dedicated) = get(&client, metrics_url.clone(), None).await;
    let (main, dedicated) = (samples(&main), samples(&dedicated));
    assert!(main.len() > 20, "{main:?}");
    assert_eq!(
        main.keys().collect::<Vec<_>>(),
        dedicated.keys().collect::<Vec<_>>(),
        "the same series"
    );
    for series in [
        r#"akidb_http_requests_total{route="/api/v1/embed",status="200"}"#,
        r#"akidb_tokens_embedded_total{model="mock"}"#,
        "akidb_models_ready",
    ] {
        assert!(main.contains_key(series), "{series} in {main:?}");
        assert_eq!(main[series], dedicated[series], "{series}");
    }

    // The API stays behind the main port's key.
    let response = client
        .post(format!(
            "http://{}/api/v1/embed",
            server.metrics_addr.unwrap()
        ))
        .json(&json!({"inputs": ["one"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    // /health there tells every detail (the operator's port); the API stays behind the key.
    let health = format!("http://{}/health", server.metrics_addr.unwrap());
    assert_eq!(get(&client, health, None).await.0, 200);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_port_serves_through_the_drain_and_closes_with_the_main_port() {
    let drain = Duration::from_millis(1500);
    let config = Config {
        drain_delay_ms: drain.as_millis() as u64,
        ..metrics_config()
    };
    let server = TestServer::start(config, vec![mock()]).await;
    let (main, metrics) = (server.addr, server.metrics_addr.unwrap());
    let metrics_url = format!("http://{metrics}/metrics");
    let client = fresh_client();
    let stopping = tokio::spawn(server.stop());
    let signalled = Instant::now();
    // During the drain: /health 503 on the main port, scrapes still answered, each closing
    // its connection as every answer does while draining.
    let health = loop {
        let response = client
            .get(format!("http://{main}/health"))
            .send()
            .await
            .unwrap();
        if response.status() == 503 {
            break response;
        }
    };
    assert_eq!(health.headers()["connection"], "close");
    // `Connection: close` on a scrape is the drain's mark: before it scrapes keep their
    // connection, after it the port is closed.
    let response = client.get(&metrics_url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["connection"], "close");

    stopping.await.unwrap().unwrap();
    assert!(signalled.elapsed() >= drain, "the drain delay was kept");
    for addr in [main, metrics] {
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "{addr} still accepts after the shutdown"
        );
    }
}

#[tokio::test]
async fn a_metrics_address_that_cannot_be_bound_stops_the_start_with_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = Config {
        metrics_bind: Some(addr),
        ..config()
    };
    match Server::bind(&config).await {
        Err(ServeError::Bind { addr: failed, .. }) => assert_eq!(failed, addr),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("bound {addr} twice"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executable_serves_metrics_on_its_own_port_and_stops_it_on_sigterm() {
    let mut service = Service::start(&[
        ("AKIDB_EMBEDDING_PROVIDER", "mock"),
        ("AKIDB_EMBEDDING_MODEL", "mock"),
        ("AKIDB_API_KEY", KEY),
        ("AKIDB_METRICS_BIND", "127.0.0.1:0"),
    ]);
    service.wait_ready().await;
    let log = service.log();
    let metrics = log
        .lines()
        .find_map(|line| line.split("metrics_bind=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no metrics address logged:\n{log}"))
        .to_string();
    let client = fresh_client();
    assert_eq!(get(&client, service.url("/metrics"), None).await.0, 401);
    let (status, body) = get(&client, format!("http://{metrics}/metrics"), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("akidb_models_ready 1"), "{body}");

    service.terminate();
    let exit = service.wait_exit(Duration::from_secs(30)).await;
    assert!(
        exit.is_some_and(|status| status.success()),
        "{exit:?}:\n{}",
        service.log()
    );
    assert!(tokio::net::TcpStream::connect(&metrics).await.is_err());
}

#[test]
fn invalid_arena_and_metrics_settings_stop_the_executable_with_a_clear_error() {
    for (variable, value, flag) in [
        ("AKIDB_CPU_ARENA", "maybe", "--cpu-arena"),
        ("AKIDB_METRICS_BIND", "9000", "--metrics-bind"),
    ] {
        let output = common::process::command()
            .env(variable, value)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{variable}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(value) && stderr.contains(flag),
            "{variable}={value}: {stderr}"
        );
    }
}
