//! A minimal HTTP server with the Hugging Face hub's file layout, for testing downloads
//! without the internet: `GET /{repo}/resolve/{revision}/{file}` with the headers `hf-hub`
//! reads (`x-repo-commit`, `etag`, `content-range`) and byte ranges.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A running server; it stops serving when dropped (its thread ends with the test process).
pub struct HubServer {
    /// Base address to use as `HF_ENDPOINT`, e.g. `http://127.0.0.1:41234`.
    pub endpoint: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl HubServer {
    /// Serves `files` (path inside the repository → file on disk) as repository `repo`.
    pub fn start(repo: &str, files: BTreeMap<String, PathBuf>) -> Self {
        Self::start_throttled(repo, files, None)
    }

    /// Like [`HubServer::start`], sending file bodies at about `bytes_per_second` (`None`: as
    /// fast as possible), so a test can watch a download in progress.
    pub fn start_throttled(
        repo: &str,
        files: BTreeMap<String, PathBuf>,
        bytes_per_second: Option<u64>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let endpoint = format!("http://{}", listener.local_addr().expect("local address"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        let prefix = format!("/{repo}/resolve/");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = serve(stream, &prefix, &files, &seen, bytes_per_second);
            }
        });
        Self { endpoint, requests }
    }

    /// Paths requested so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn serve(
    stream: TcpStream,
    prefix: &str,
    files: &BTreeMap<String, PathBuf>,
    seen: &Mutex<Vec<String>>,
    bytes_per_second: Option<u64>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("range")
        {
            range = Some(value.trim().to_string());
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    if let Ok(mut seen) = seen.lock() {
        seen.push(path.clone());
    }
    // `/{repo}/resolve/{revision}/{file}`
    let file = path
        .strip_prefix(prefix)
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, file)| file.to_string());
    let body = file
        .and_then(|f| files.get(&f))
        .and_then(|p| std::fs::read(p).ok());
    let mut stream = stream;
    let Some(body) = body else {
        let msg = b"Entry not found";
        write!(
            stream,
            "HTTP/1.1 404 Not Found\r\ncontent-length: {}\r\nx-error-code: EntryNotFound\r\nconnection: close\r\n\r\n",
            msg.len()
        )?;
        return stream.write_all(msg);
    };
    let size = body.len();
    let (start, end) = parse_range(range.as_deref(), size);
    let slice = body.get(start..end).unwrap_or(&[]);
    let etag = format!("{:016x}{:016x}", fnv(&body), size);
    let status = if range.is_some() {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nx-repo-commit: 0123456789abcdef0123456789abcdef01234567\r\netag: \"{etag}\"\r\n\
         content-range: bytes {start}-{}/{size}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        end.saturating_sub(1),
        slice.len()
    )?;
    match bytes_per_second {
        Some(rate) if rate > 0 => {
            // 20 chunks a second at the given rate.
            let chunk = usize::try_from(rate / 20).unwrap_or(usize::MAX).max(1);
            for piece in slice.chunks(chunk) {
                stream.write_all(piece)?;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Ok(())
        }
        _ => stream.write_all(slice),
    }
}

fn parse_range(range: Option<&str>, size: usize) -> (usize, usize) {
    let Some(spec) = range.and_then(|r| r.strip_prefix("bytes=")) else {
        return (0, size);
    };
    let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
    let start = a.parse().unwrap_or(0).min(size);
    let end = b.parse::<usize>().map(|e| e + 1).unwrap_or(size).min(size);
    (start, end.max(start))
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A model folder (graph at its root or under `onnx/`) laid out as the onnx-community
/// EmbeddingGemma repository: the configs and tokenizer that exist at the root, the graph
/// under `onnx/`, with its `model.onnx_data` unless `with_data` is false.
pub fn onnx_community_layout(dir: &Path, with_data: bool) -> BTreeMap<String, PathBuf> {
    let mut files: BTreeMap<String, PathBuf> = [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ]
    .iter()
    .filter(|file| dir.join(file).is_file())
    .map(|file| (file.to_string(), dir.join(file)))
    .collect();
    let graph_dir = if dir.join("onnx/model.onnx").is_file() {
        dir.join("onnx")
    } else {
        dir.to_path_buf()
    };
    files.insert("onnx/model.onnx".into(), graph_dir.join("model.onnx"));
    if with_data {
        files.insert(
            "onnx/model.onnx_data".into(),
            graph_dir.join("model.onnx_data"),
        );
    }
    files
}
