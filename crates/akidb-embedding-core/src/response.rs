//! What a provider answers.

use serde::Serialize;

/// Vectors for every text of a request, in input order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbedResponse {
    /// One vector per input text, in input order.
    pub embeddings: Vec<Vec<f32>>,
    /// Length of every vector.
    pub dimension: usize,
    /// Tokens each text used (prompt and special tokens included, after truncation).
    pub token_counts: Vec<usize>,
}

impl EmbedResponse {
    /// Builds a response from vectors and their token counts.
    pub fn new(embeddings: Vec<Vec<f32>>, dimension: usize, token_counts: Vec<usize>) -> Self {
        Self {
            embeddings,
            dimension,
            token_counts,
        }
    }

    /// Number of vectors (equals the number of input texts).
    pub fn count(&self) -> usize {
        self.embeddings.len()
    }

    /// Tokens of all texts together: the sum of [`token_counts`](Self::token_counts).
    pub fn total_tokens(&self) -> usize {
        self.token_counts.iter().sum()
    }
}
