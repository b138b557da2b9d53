//! What a provider tells its callers about the model it serves.

use serde::Serialize;

/// Description of a loaded model, as callers need it to build valid requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelInfo {
    /// The id requests address the model by (a hub repository id or a folder name).
    pub id: String,
    /// Length of the vectors the model produces when no `dimensions` are requested.
    pub dimension: usize,
    /// Most tokens (special tokens and prompt included) the model reads per text.
    pub max_tokens: usize,
    /// Every output dimension a request may ask for, largest first (the full dimension and
    /// any Matryoshka truncations).
    pub dimensions: Vec<usize>,
    /// Prompt names a request may use, sorted.
    pub prompts: Vec<String>,
}

impl ModelInfo {
    /// True when `dimension` is one of the supported output dimensions.
    pub fn supports_dimension(&self, dimension: usize) -> bool {
        self.dimensions.contains(&dimension)
    }
}
