//! Fixtures for the workspace's tests: the team's `../shared` folder (reference vectors, the
//! tiny EmbeddingGemma double) and the models `scripts/setup.sh` installs.
//!
//! A missing fixture makes a test skip with a printed reason on a developer's machine, and
//! fail under `CI=true`, where every fixture must be present.

#![allow(clippy::print_stderr, clippy::expect_used, clippy::unwrap_used)]

pub mod hub_server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A temporary folder, removed with its contents when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// The folder's path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh, empty temporary folder named after `name`, removed when the guard is dropped.
pub fn temp_dir(name: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("akidb-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    TempDir(dir)
}

/// Copies the files of `from` (not sub-folders) into a fresh temp folder, minus `skip`.
pub fn copy_model(from: &Path, name: &str, skip: &[&str]) -> TempDir {
    let dir = temp_dir(name);
    for entry in std::fs::read_dir(from)
        .expect("read model folder")
        .flatten()
    {
        let file = entry.file_name();
        if entry.path().is_file() && !skip.iter().any(|s| file.to_str() == Some(*s)) {
            std::fs::copy(entry.path(), dir.join(&file)).expect("copy model file");
        }
    }
    dir
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// True when running under CI (`CI=true`), where missing fixtures are failures.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns `path` if it exists. Otherwise prints why the calling test is skipped and returns
/// `None`, or panics under CI.
pub fn require(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    let reason = format!("{what} not found at {}", path.display());
    if in_ci() {
        panic!("{reason} (required under CI=true; run scripts/setup.sh and provide ../shared)");
    }
    eprintln!("SKIPPED: {reason}");
    None
}

/// The team's shared folder (`../shared` beside the workspace).
pub fn shared_dir() -> PathBuf {
    workspace_root().join("../shared")
}

/// The tiny EmbeddingGemma test double, if present.
pub fn tiny_gemma_dir() -> Option<PathBuf> {
    require(
        shared_dir().join("models/tiny-embeddinggemma"),
        "tiny EmbeddingGemma test double",
    )
}

/// all-MiniLM-L6-v2 as installed by `scripts/setup.sh`, if present.
pub fn minilm_dir() -> Option<PathBuf> {
    require(
        workspace_root().join(".akidb/models/all-MiniLM-L6-v2"),
        "all-MiniLM-L6-v2 (run scripts/setup.sh)",
    )
}

/// The real EmbeddingGemma-300m folder named by `AKIDB_GEMMA_DIR` (hub layout, as
/// `../shared/tools/embeddinggemma/build.sh` writes it), if set.
///
/// The real model is too big for CI, so an unset variable skips with a printed reason even
/// under `CI=true`; a variable that names a missing folder is a failure everywhere.
pub fn real_gemma_dir() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("AKIDB_GEMMA_DIR") else {
        eprintln!(
            "SKIPPED: AKIDB_GEMMA_DIR is not set (build the real EmbeddingGemma-300m with \
             ../shared/tools/embeddinggemma/build.sh DIR, then AKIDB_GEMMA_DIR=DIR/embeddinggemma-300m-ONNX)"
        );
        return None;
    };
    let dir = PathBuf::from(dir);
    assert!(
        dir.join("tokenizer.json").is_file(),
        "AKIDB_GEMMA_DIR={} has no tokenizer.json: not an EmbeddingGemma folder",
        dir.display()
    );
    Some(dir)
}

/// A reference file outside `../shared` (e.g. `benches/quality/eval_reference.st.json`),
/// with the texts it was computed from, both relative to the workspace root.
pub fn workspace_reference(texts: &str, reference: &str) -> (Vec<Sentence>, Reference) {
    let read = |file: &str| {
        let path = workspace_root().join(file);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let texts = serde_json::from_slice(&read(texts)).unwrap_or_else(|e| panic!("{texts}: {e}"));
    let reference =
        serde_json::from_slice(&read(reference)).unwrap_or_else(|e| panic!("{reference}: {e}"));
    (texts, reference)
}

/// One text of `sentences.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Sentence {
    /// Its id in the reference files.
    pub id: String,
    /// The text.
    pub text: String,
    /// The prompt it is embedded with.
    pub prompt_name: Option<String>,
}

/// One reference vector and its token count.
#[derive(Debug, Clone, Deserialize)]
pub struct ReferenceItem {
    /// Token count after prompt and truncation, special tokens included.
    pub tokens: usize,
    /// The reference vector.
    pub embedding: Vec<f32>,
}

/// A reference file: `{"model", "cap", "pooling", "items": {id: {"tokens", "embedding"}}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Reference {
    /// Model name.
    pub model: String,
    /// Token cap.
    pub cap: usize,
    /// Pooling description.
    pub pooling: String,
    /// Items by sentence id.
    pub items: BTreeMap<String, ReferenceItem>,
}

/// The reference texts, if `../shared` is present.
pub fn sentences() -> Option<Vec<Sentence>> {
    let path = require(
        shared_dir().join("reference/sentences.json"),
        "reference sentences",
    )?;
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// A reference file of `../shared/reference/`, if present.
pub fn reference(file: &str) -> Option<Reference> {
    let path = require(
        shared_dir().join("reference").join(file),
        "reference vectors",
    )?;
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// Cosine similarity.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}
