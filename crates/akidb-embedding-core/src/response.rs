//! What a provider answers.

use serde::Serialize;

/// Vectors for every text of a request, in input order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbedResponse {
    /// One vector per input text, in input order.
    pub embeddings: Vec<Vec<f32>>,
    /// Length of every vector.
    pub dimension: usize,
    /// Number of vectors (equals the number of input texts).
    pub count: usize,
    /// Tokens each text used (prompt and special tokens included, after truncation).
    pub token_counts: Vec<usize>,
    /// Sum of `token_counts`.
    pub total_tokens: usize,
}

impl EmbedResponse {
    /// Builds a response from vectors and their token counts, deriving the other fields.
    pub fn new(embeddings: Vec<Vec<f32>>, dimension: usize, token_counts: Vec<usize>) -> Self {
        let total_tokens = token_counts.iter().sum();
        Self {
            count: embeddings.len(),
            embeddings,
            dimension,
            token_counts,
            total_tokens,
        }
    }
}
