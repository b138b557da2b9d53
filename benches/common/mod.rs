//! What the criterion benches share: the benchmark texts, the models benchmarked, and loading
//! them (a model that is not installed is skipped with a message, never faked).

use std::path::{Path, PathBuf};

use akidb_embedding_onnx::OnnxEmbeddingProvider;
use serde::Deserialize;

/// The shared benchmark texts (`benches/texts.json`), also read by the Python and fastembed
/// baselines.
#[derive(Deserialize)]
#[allow(dead_code, reason = "each bench reads the texts it measures")]
pub struct Texts {
    /// `"Hello, world!"`.
    pub short: String,
    /// 50 words.
    pub medium: String,
    /// 450 words.
    pub long: String,
    /// 32 texts of 20–60 words.
    pub batch32: Vec<String>,
}

/// Reads `benches/texts.json`.
pub fn texts() -> Texts {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/texts.json");
    serde_json::from_slice(&std::fs::read(&path).expect("benches/texts.json"))
        .expect("benches/texts.json: expected {short, medium, long, batch32}")
}

/// The model folders benchmarked, `(name, folder)`.
pub fn folders() -> [(&'static str, PathBuf); 2] {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        ("minilm", root.join(".akidb/models/all-MiniLM-L6-v2")),
        (
            "tiny-gemma",
            root.join("../shared/models/tiny-embeddinggemma"),
        ),
    ]
}

/// The token cap of a model of [`folders`].
#[allow(dead_code, reason = "only the tokenize bench reads the cap")]
pub fn cap(name: &str) -> usize {
    if name == "minilm" { 256 } else { 2048 }
}

/// The models benchmarked, `(name, provider)`, 2 intra-op threads; `bench` names the
/// benchmark in the skip messages.
pub fn models(bench: &str) -> Vec<(&'static str, OnnxEmbeddingProvider)> {
    folders()
        .into_iter()
        .filter_map(|(name, folder)| load(bench, name, &folder).map(|p| (name, p)))
        .collect()
}

/// Loads a model, or says why it is skipped.
fn load(bench: &str, name: &str, folder: &Path) -> Option<OnnxEmbeddingProvider> {
    if !folder.join("tokenizer.json").is_file() {
        eprintln!(
            "{bench} bench: skipping {name}: no model at {} (run scripts/setup.sh)",
            folder.display()
        );
        return None;
    }
    match OnnxEmbeddingProvider::load(
        akidb_embeddings::install::load_options(folder.display().to_string()).with_intra_threads(2),
    ) {
        Ok(provider) => Some(provider),
        Err(e) => {
            eprintln!("{bench} bench: skipping {name}: cannot load it: {e}");
            None
        }
    }
}
