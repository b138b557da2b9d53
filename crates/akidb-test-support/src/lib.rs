//! Fixtures for the workspace's tests: the team's `../shared` folder (reference vectors, the
//! tiny EmbeddingGemma double) and the models `scripts/setup.sh` installs.
//!
//! Two kinds of fixture, two behaviours, so that a test that did not run never reads "ok":
//! - **Required** (MiniLM from `scripts/setup.sh`, `../shared`): a missing one fails the test
//!   that needs it, with the step that installs it.
//! - **Optional** (the real EmbeddingGemma-300m, `AKIDB_GEMMA_DIR`): tests that need it are
//!   `#[ignore = "needs AKIDB_GEMMA_DIR"]`, so cargo's summary counts them as ignored;
//!   `scripts/test.sh` runs them with `--ignored` when the variable is set.

#![allow(clippy::print_stderr, clippy::expect_used, clippy::unwrap_used)]

pub mod hub_server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use tempfile::TempDir;

/// A fresh, empty temporary folder whose name starts with `akidb-test-{name}-`, removed with
/// its contents when the guard is dropped; unique even when test binaries run concurrently.
pub fn temp_dir(name: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("akidb-test-{name}-"))
        .tempdir()
        .expect("create temp dir")
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
            std::fs::copy(entry.path(), dir.path().join(&file)).expect("copy model file");
        }
    }
    dir
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// How to provide the fixtures of `../shared`.
const SHARED_HINT: &str = "the team's shared folder must sit beside the workspace as ../shared \
                           (reference vectors and models/tiny-embeddinggemma)";

/// Returns `path`, a required fixture; panics naming what is missing and `install`, the step
/// that provides it.
pub fn require(path: PathBuf, what: &str, install: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{what} not found at {}: {install}. It is a required test fixture.",
        path.display()
    );
    path
}

/// The team's shared folder (`../shared` beside the workspace).
pub fn shared_dir() -> PathBuf {
    workspace_root().join("../shared")
}

/// The tiny EmbeddingGemma test double (required).
pub fn tiny_gemma_dir() -> PathBuf {
    require(
        shared_dir().join("models/tiny-embeddinggemma"),
        "the tiny EmbeddingGemma test double",
        SHARED_HINT,
    )
}

/// all-MiniLM-L6-v2 as installed by `scripts/setup.sh` (required).
pub fn minilm_dir() -> PathBuf {
    require(
        workspace_root().join(".akidb/models/all-MiniLM-L6-v2"),
        "all-MiniLM-L6-v2",
        "run scripts/setup.sh",
    )
}

/// The real EmbeddingGemma-300m folder named by `AKIDB_GEMMA_DIR` (hub layout, as
/// `../shared/tools/embeddinggemma/build.sh` writes it).
///
/// The real model is too big for CI: tests that call this are `#[ignore = "needs
/// AKIDB_GEMMA_DIR"]`, and run with `--ignored`. Asked to run them, an unset variable or one
/// that names no EmbeddingGemma folder is a failure.
pub fn real_gemma_dir() -> PathBuf {
    let dir = std::env::var_os("AKIDB_GEMMA_DIR").unwrap_or_else(|| {
        panic!(
            "AKIDB_GEMMA_DIR is not set, and this test needs the real EmbeddingGemma-300m: \
             build it with ../shared/tools/embeddinggemma/build.sh DIR, then set \
             AKIDB_GEMMA_DIR=DIR/embeddinggemma-300m-ONNX (without it, leave out --ignored)"
        )
    });
    let dir = PathBuf::from(dir);
    assert!(
        dir.join("tokenizer.json").is_file(),
        "AKIDB_GEMMA_DIR={} has no tokenizer.json: not an EmbeddingGemma folder",
        dir.display()
    );
    dir
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

/// The reference texts of `../shared` (required).
pub fn sentences() -> Vec<Sentence> {
    let path = require(
        shared_dir().join("reference/sentences.json"),
        "the reference sentences",
        SHARED_HINT,
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A reference file of `../shared/reference/` (required).
pub fn reference(file: &str) -> Reference {
    let path = require(
        shared_dir().join("reference").join(file),
        "reference vectors",
        SHARED_HINT,
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(
        expected = "all-MiniLM-L6-v2 not found at /nonexistent/minilm: run scripts/setup.sh"
    )]
    fn a_missing_required_fixture_fails_with_its_install_step() {
        require(
            PathBuf::from("/nonexistent/minilm"),
            "all-MiniLM-L6-v2",
            "run scripts/setup.sh",
        );
    }

    #[test]
    fn a_present_fixture_is_returned() {
        let dir = temp_dir("present");
        assert_eq!(
            require(dir.path().to_path_buf(), "a folder", "make it"),
            dir.path()
        );
    }

    #[test]
    fn temp_dirs_are_distinct_and_removed_on_drop() {
        let (a, b) = (temp_dir("same-name"), temp_dir("same-name"));
        assert_ne!(a.path(), b.path());
        let path = a.path().to_path_buf();
        assert!(path.is_dir());
        drop(a);
        assert!(!path.exists());
    }
}
