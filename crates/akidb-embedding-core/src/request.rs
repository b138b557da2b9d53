//! What a caller asks for.

use serde::{Deserialize, Serialize};

/// What to do with a text longer than the model's token limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    /// Keep the first tokens up to the limit (what sentence-transformers does).
    #[default]
    Truncate,
    /// Keep the last tokens up to the limit, cutting the start of the text, prompt included
    /// (text-embeddings-inference's `truncation_direction: "Left"`). The text is tokenised
    /// once, from a bounded end of it, so this costs what [`Truncation::Truncate`] costs.
    TruncateStart,
    /// Refuse the request with [`crate::EmbeddingError::TextTooLong`].
    Error,
}

/// A batch of texts to embed and how to embed them.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedRequest {
    /// The texts, in the order their vectors come back.
    pub texts: Vec<String>,
    /// L2-normalise each vector (default `true`).
    pub normalize: bool,
    /// Name of a task prompt the model defines (`query`, `document`, …), prepended to every text.
    pub prompt_name: Option<String>,
    /// Output dimension: a Matryoshka truncation of the model's vectors (default: the full dimension).
    pub dimensions: Option<usize>,
    /// What to do with over-long texts.
    pub truncation: Truncation,
}

impl EmbedRequest {
    /// A request with the defaults: normalised, no prompt, full dimension, truncation on.
    pub fn new<I, S>(texts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            texts: texts.into_iter().map(Into::into).collect(),
            normalize: true,
            prompt_name: None,
            dimensions: None,
            truncation: Truncation::default(),
        }
    }

    /// Sets whether vectors are L2-normalised.
    #[must_use]
    pub fn with_normalize(mut self, normalize: bool) -> Self {
        self.normalize = normalize;
        self
    }

    /// Uses the named task prompt.
    #[must_use]
    pub fn with_prompt(mut self, prompt_name: impl Into<String>) -> Self {
        self.prompt_name = Some(prompt_name.into());
        self
    }

    /// Asks for vectors of `dimensions` values (Matryoshka truncation).
    #[must_use]
    pub fn with_dimensions(mut self, dimensions: usize) -> Self {
        self.dimensions = Some(dimensions);
        self
    }

    /// Sets the truncation policy.
    #[must_use]
    pub fn with_truncation(mut self, truncation: Truncation) -> Self {
        self.truncation = truncation;
        self
    }
}
