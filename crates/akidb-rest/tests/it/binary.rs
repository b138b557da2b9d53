//! The `akidb-rest` executable: configuration from the environment, a load failure that ends
//! the process with the reason, and a graceful exit on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;

use common::process::command as binary;

#[test]
fn a_model_that_cannot_load_ends_the_process_with_the_reason() {
    let output = binary()
        .env("AKIDB_EMBEDDING_MODEL", "/nonexistent/akidb-model-folder")
        .output()
        .unwrap();
    assert!(!output.status.success(), "exit status {:?}", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/akidb-model-folder"),
        "{stderr}"
    );
    assert!(
        !stderr.to_lowercase().contains("mock"),
        "no fallback to the mock: {stderr}"
    );
}

#[test]
fn invalid_settings_are_refused_at_start() {
    let output = binary().env("AKIDB_MAX_BATCH_SIZE", "0").output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("AKIDB_MAX_BATCH_SIZE") || stderr.contains("max-batch-size"),
        "{stderr}"
    );
}

#[cfg(unix)]
#[test]
fn serves_the_mock_when_asked_and_exits_cleanly_on_sigterm() {
    let mut child = binary()
        .env("AKIDB_EMBEDDING_PROVIDER", "mock")
        .env("AKIDB_EMBEDDING_MODEL", "mock-a,mock-b")
        .env("AKIDB_API_KEY", "do-not-log-this-key")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let addr = loop {
        let line = lines.next().expect("log line").unwrap();
        log.push_str(&line);
        log.push('\n');
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let started = Instant::now();
    let health = loop {
        let reply = http_get(&addr, "/health");
        if reply.starts_with("HTTP/1.1 200") || started.elapsed() > Duration::from_secs(10) {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        health.contains("mock-a") && health.contains("mock-b"),
        "{health}"
    );
    assert!(http_get(&addr, "/metrics").starts_with("HTTP/1.1 401"));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    for line in lines {
        log.push_str(&line.unwrap());
        log.push('\n');
    }
    assert!(exit.success(), "exit status {exit:?}; log:\n{log}");
    assert!(log.contains("shutting down"), "{log}");
    assert!(
        !log.contains("do-not-log-this-key"),
        "the key never appears in logs"
    );
}

/// A minimal HTTP/1.1 GET (the blocking test has no async client at hand).
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply
}
