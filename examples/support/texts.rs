//! The shared benchmark texts (`benches/texts.json`), read by the `latency` and `profile`
//! examples (and, with the same keys, by `benches/python_baseline.py` and fastembed-bench).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The texts every latency benchmark embeds.
#[derive(Deserialize)]
pub struct Texts {
    /// "Hello, world!".
    pub short: String,
    /// About 50 words.
    pub medium: String,
    /// About 450 words.
    pub long: String,
    /// 32 texts of 20 to 60 words.
    pub batch32: Vec<String>,
}

/// `benches/texts.json` of this workspace.
pub fn default_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/texts.json")
}

/// Reads a texts file; a missing or malformed file ends the program with the reason.
pub fn read(path: &Path) -> Texts {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display())),
    )
    .expect("texts.json: expected {short, medium, long, batch32}")
}
