//! Raw HTTP/1.1 over a TCP socket, for requests no well-behaved client sends: lying lengths,
//! trickled headers, stalled bodies, idle sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response read off a raw connection.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Header lines, lower-cased names, as `name: value`.
    pub headers: Vec<String>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "status {}: body is not JSON ({error}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key == name).then(|| value.trim())
        })
    }
}

/// Opens a connection to `addr`.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

/// Sends `request` on a fresh connection and reads until the server closes it (or `within`
/// passes); returns every response it sent, in order.
pub async fn exchange(addr: SocketAddr, request: &[u8], within: Duration) -> Vec<RawResponse> {
    let mut stream = connect(addr).await;
    // The server may answer (and close) before it has read everything: that is no error here.
    let _ = stream.write_all(request).await;
    let bytes = read_until_closed(&mut stream, within).await;
    parse_responses(&bytes)
}

/// Reads until the peer closes the connection (EOF or reset), for at most `within`.
/// Returns what was read; panics if the connection is still open after `within`.
pub async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut bytes = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return bytes,
            Ok(Ok(read)) => bytes.extend_from_slice(&buffer[..read]),
            Err(_) => panic!(
                "the server kept the connection open for {within:?}; read so far: {}",
                String::from_utf8_lossy(&bytes)
            ),
        }
    }
}

/// Whether the peer closes the connection within `within` (reading and discarding data).
pub async fn closes_within(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// Splits a byte stream into HTTP/1.1 responses (bodies sized by `content-length`, or
/// `chunked`); stops at the first incomplete one.
pub fn parse_responses(mut bytes: &[u8]) -> Vec<RawResponse> {
    let mut responses = Vec::new();
    while let Some(end) = find(bytes, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).to_string();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let Some(status) = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
        else {
            break;
        };
        let headers: Vec<String> = lines
            .map(|line| match line.split_once(':') {
                Some((name, value)) => format!("{}: {}", name.to_ascii_lowercase(), value.trim()),
                None => line.to_string(),
            })
            .collect();
        let mut response = RawResponse {
            status,
            headers,
            body: Vec::new(),
        };
        let rest = &bytes[end + 4..];
        if response.header("transfer-encoding") == Some("chunked") {
            let Some((body, used)) = dechunk(rest) else {
                break;
            };
            response.body = body;
            bytes = &rest[used..];
        } else {
            let length: usize = response
                .header("content-length")
                .and_then(|value| value.parse().ok())
                .unwrap_or(0);
            if rest.len() < length {
                break;
            }
            response.body = rest[..length].to_vec();
            bytes = &rest[length..];
        }
        responses.push(response);
    }
    responses
}

fn dechunk(mut bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
    let total = bytes.len();
    let mut body = Vec::new();
    loop {
        let line_end = find(bytes, b"\r\n")?;
        let size_text = String::from_utf8_lossy(&bytes[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            let trailer_end = find(bytes, b"\r\n")?;
            bytes = &bytes[trailer_end + 2..];
            return Some((body, total - bytes.len()));
        }
        if bytes.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&bytes[..size]);
        bytes = &bytes[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A POST of `body` to `path` with the given content type and an honest `content-length`.
pub fn post(path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: {content_type}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}
