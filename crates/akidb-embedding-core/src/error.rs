//! The one error type of every embedding provider.

/// `Result` with [`EmbeddingError`].
pub type Result<T, E = EmbeddingError> = std::result::Result<T, E>;

/// Everything that can go wrong while loading a model or embedding text.
///
/// Variants fall in three groups, told apart by [`EmbeddingError::kind`]: the caller sent
/// something the model cannot embed ([`ErrorKind::InvalidInput`]), the model could not be
/// loaded ([`ErrorKind::Load`]), or running it failed ([`ErrorKind::Runtime`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddingError {
    /// The request held no texts.
    #[error("the request holds no texts: send at least one")]
    EmptyBatch,

    /// The request asked for a prompt the model does not define.
    #[error("unknown prompt `{name}`; this model defines: {}", .available.join(", "))]
    UnknownPrompt {
        /// The prompt name that was asked for.
        name: String,
        /// The prompt names the model defines.
        available: Vec<String>,
    },

    /// The request asked for an output dimension the model cannot produce.
    #[error("unsupported output dimension {requested}; this model supports: {}", join_numbers(.supported))]
    UnsupportedDimension {
        /// The dimension that was asked for.
        requested: usize,
        /// The dimensions the model supports.
        supported: Vec<usize>,
    },

    /// A text has more tokens than the model accepts and the request refused truncation.
    #[error(
        "text at index {index} is longer than this model's limit of {max_tokens} tokens (at least {tokens} counted)"
    )]
    TextTooLong {
        /// Position of the text in the request.
        index: usize,
        /// Tokens counted, special tokens and prompt included: the text's whole count, or, for
        /// a text too long to count cheaply, the count of a first part of it that is already
        /// over the limit (a lower bound).
        tokens: usize,
        /// The model's limit.
        max_tokens: usize,
    },

    /// A request holds more tokens, all its texts together, than its caller allows.
    #[error(
        "the request holds {tokens} tokens, more than the limit of {limit} per request; send fewer or shorter texts"
    )]
    TooManyTokens {
        /// The request's tokens, prompts and special tokens included.
        tokens: usize,
        /// The limit.
        limit: usize,
    },

    /// Any other input the provider refuses, with the reason.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The inference runtime a provider runs on (ONNX Runtime's shared library, for one)
    /// could not be found or started.
    #[error("{runtime} unavailable: {reason}")]
    RuntimeUnavailable {
        /// The runtime, as its users name it (`ONNX Runtime`).
        runtime: String,
        /// What is wrong, and how to get it.
        reason: String,
    },

    /// A model file is missing, unreadable or not what it should be.
    #[error("cannot load model from {path}: {reason}")]
    ModelLoad {
        /// The file or folder at fault.
        path: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The model or its files could not be fetched from the Hugging Face hub or its cache.
    #[error("cannot fetch `{model}`: {reason}")]
    Download {
        /// The repository id.
        model: String,
        /// What went wrong.
        reason: String,
    },

    /// Running the model failed, or it produced values that are not finite.
    #[error("inference failed: {0}")]
    Inference(String),

    /// The provider does not offer an optional capability (token spans, for one).
    #[error("model `{model}` does not support {capability}")]
    Unsupported {
        /// The model's id.
        model: String,
        /// What was asked for, as a phrase (`token spans`).
        capability: String,
    },
}

/// The group an [`EmbeddingError`] belongs to; decides who must act (the caller or the operator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is at fault; sending it again unchanged fails again.
    InvalidInput,
    /// The model or the runtime could not be loaded.
    Load,
    /// The model failed while running.
    Runtime,
}

impl EmbeddingError {
    /// Which group this error falls in.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::EmptyBatch
            | Self::UnknownPrompt { .. }
            | Self::UnsupportedDimension { .. }
            | Self::TextTooLong { .. }
            | Self::TooManyTokens { .. }
            | Self::InvalidInput(_)
            | Self::Unsupported { .. } => ErrorKind::InvalidInput,
            Self::RuntimeUnavailable { .. } | Self::ModelLoad { .. } | Self::Download { .. } => {
                ErrorKind::Load
            }
            Self::Inference(_) => ErrorKind::Runtime,
        }
    }

    /// True when the caller's request is at fault (a 4xx in HTTP terms).
    pub fn is_invalid_input(&self) -> bool {
        self.kind() == ErrorKind::InvalidInput
    }

    /// Shorthand for [`EmbeddingError::RuntimeUnavailable`].
    pub fn runtime_unavailable(
        runtime: impl std::fmt::Display,
        reason: impl std::fmt::Display,
    ) -> Self {
        Self::RuntimeUnavailable {
            runtime: runtime.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Shorthand for [`EmbeddingError::ModelLoad`].
    pub fn model_load(path: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        Self::ModelLoad {
            path: path.to_string(),
            reason: reason.to_string(),
        }
    }
}

fn join_numbers(numbers: &[usize]) -> String {
    numbers
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_offending_values() {
        let err = EmbeddingError::TextTooLong {
            index: 3,
            tokens: 4000,
            max_tokens: 2048,
        };
        assert_eq!(
            err.to_string(),
            "text at index 3 is longer than this model's limit of 2048 tokens (at least 4000 counted)"
        );
        let err = EmbeddingError::UnsupportedDimension {
            requested: 100,
            supported: vec![768, 512],
        };
        assert_eq!(
            err.to_string(),
            "unsupported output dimension 100; this model supports: 768, 512"
        );
    }

    #[test]
    fn kinds_separate_caller_faults_from_operator_faults() {
        assert!(EmbeddingError::EmptyBatch.is_invalid_input());
        assert_eq!(
            EmbeddingError::model_load("m/model.onnx", "missing").kind(),
            ErrorKind::Load
        );
        let runtime = EmbeddingError::runtime_unavailable("ONNX Runtime", "no library found");
        assert_eq!(runtime.kind(), ErrorKind::Load);
        assert_eq!(
            runtime.to_string(),
            "ONNX Runtime unavailable: no library found"
        );
        assert_eq!(
            EmbeddingError::Inference("x".into()).kind(),
            ErrorKind::Runtime
        );
        // Asking a model for what it cannot do fails again unchanged: the caller's to change.
        let unsupported = EmbeddingError::Unsupported {
            model: "m".into(),
            capability: "token spans".into(),
        };
        assert!(unsupported.is_invalid_input());
        assert_eq!(
            unsupported.to_string(),
            "model `m` does not support token spans"
        );
    }
}
