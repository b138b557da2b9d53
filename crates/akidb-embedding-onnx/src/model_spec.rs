//! Model descriptions: what a model needs from the pipeline, as data.
//!
//! Adding a model is adding a row ([`ModelSpec::builtin`]), not a code path. A folder's own
//! sentence-transformers files and the ONNX graph refine the row when the model is loaded
//! (see [`crate::st_config`]).

use std::collections::BTreeMap;
use std::path::Path;

use akidb_embedding_core::{EmbeddingError, Result};
use serde::{Deserialize, Serialize};

use crate::LoadOptions;
use crate::st_config::FolderConfig;

/// How token vectors become one text vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The graph already pools: read its `sentence_embedding` output as is (EmbeddingGemma,
    /// whose graph holds mean pooling, two Dense layers and normalisation).
    SentenceEmbedding,
    /// Mean of `last_hidden_state` over positions whose `attention_mask` is 1 (MiniLM).
    Mean,
    /// `last_hidden_state` at the first position (`[CLS]`).
    Cls,
}

impl Pooling {
    /// The graph output this pooling reads.
    pub fn output_name(self) -> &'static str {
        match self {
            Self::SentenceEmbedding => "sentence_embedding",
            Self::Mean | Self::Cls => "last_hidden_state",
        }
    }
}

/// Which ONNX export of a model to load; `onnx-community` repositories ship these names, each
/// with its `_data` file when weights are split.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnnxVariant {
    /// `model.onnx`: fp32 weights, the reference.
    #[default]
    Fp32,
    /// `model_fp16.onnx`: fp16 weights (not for EmbeddingGemma, whose activations overflow in fp16).
    Fp16,
    /// `model_q4.onnx`: 4-bit weights.
    Q4,
    /// `model_quantized.onnx`: int8 weights.
    Quantized,
    /// Any other file name (e.g. `model_qint8_avx512.onnx`).
    File(String),
}

impl OnnxVariant {
    /// The `.onnx` file name of this variant.
    pub fn file_name(&self) -> &str {
        match self {
            Self::Fp32 => "model.onnx",
            Self::Fp16 => "model_fp16.onnx",
            Self::Q4 => "model_q4.onnx",
            Self::Quantized => "model_quantized.onnx",
            Self::File(name) => name,
        }
    }

    /// Parses `fp32`, `fp16`, `q4`, `quantized`/`int8`, or a file name ending in `.onnx`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "fp32" | "" => Some(Self::Fp32),
            "fp16" => Some(Self::Fp16),
            "q4" => Some(Self::Q4),
            "quantized" | "int8" | "q8" => Some(Self::Quantized),
            name if name.ends_with(".onnx") => Some(Self::File(name.to_string())),
            _ => None,
        }
    }
}

/// Everything the pipeline needs to know about a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// The id requests address the model by; for built-ins, its Hugging Face repository.
    pub id: String,
    /// Other names that select this row (short names, the original PyTorch repository).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `model_type` in `config.json` of folders this row describes (used to match a local folder
    /// to a built-in row).
    #[serde(default)]
    pub model_type: Option<String>,
    /// How token vectors become a text vector; `None` lets the folder's files or the graph's
    /// outputs decide (loading fails if neither does).
    pub pooling: Option<Pooling>,
    /// Most tokens per text, special tokens and prompt included.
    pub max_tokens: usize,
    /// Output dimension, if known before loading (the graph's output decides otherwise).
    pub dimension: Option<usize>,
    /// Smaller dimensions the model was trained to support (Matryoshka), largest first.
    #[serde(default)]
    pub matryoshka_dimensions: Vec<usize>,
    /// Task prompts by name, prepended to texts before tokenising.
    #[serde(default)]
    pub prompts: BTreeMap<String, String>,
    /// Folder of the ONNX files inside the hub repository (`onnx` for `onnx-community/*`).
    #[serde(default)]
    pub hub_onnx_dir: Option<String>,
    /// True when the weights live in a `<model>.onnx_data` file beside the graph, which must
    /// then be present.
    #[serde(default)]
    pub external_data: bool,
    /// Name of the folder this model is installed under inside a models folder (see
    /// [`crate::LoadOptions::with_models_dir`]).
    #[serde(default)]
    pub install_dir: Option<String>,
}

/// The EmbeddingGemma-300m task prompts, from Google's `config_sentence_transformers.json`
/// (the `onnx-community` export ships no such file, so the table lives here).
pub const EMBEDDING_GEMMA_PROMPTS: &[(&str, &str)] = &[
    ("query", "task: search result | query: "),
    ("document", "title: none | text: "),
    ("BitextMining", "task: search result | query: "),
    ("Clustering", "task: clustering | query: "),
    ("Classification", "task: classification | query: "),
    ("InstructionRetrieval", "task: code retrieval | query: "),
    ("MultilabelClassification", "task: classification | query: "),
    ("PairClassification", "task: sentence similarity | query: "),
    ("Reranking", "task: search result | query: "),
    ("Retrieval", "task: search result | query: "),
    ("Retrieval-query", "task: search result | query: "),
    ("Retrieval-document", "title: none | text: "),
    ("STS", "task: sentence similarity | query: "),
    ("Summarization", "task: summarization | query: "),
];

impl ModelSpec {
    /// `onnx-community/embeddinggemma-300m-ONNX`: 768 dimensions (Matryoshka 512/256/128),
    /// 2048 tokens, task prompts, pooling inside the graph, weights in `model.onnx_data`.
    pub fn embedding_gemma_300m() -> Self {
        Self {
            id: "onnx-community/embeddinggemma-300m-ONNX".to_string(),
            aliases: vec![
                "google/embeddinggemma-300m".to_string(),
                "embeddinggemma-300m".to_string(),
            ],
            model_type: Some("gemma3_text".to_string()),
            pooling: Some(Pooling::SentenceEmbedding),
            max_tokens: 2048,
            dimension: Some(768),
            matryoshka_dimensions: vec![512, 256, 128],
            prompts: EMBEDDING_GEMMA_PROMPTS
                .iter()
                .map(|(name, prompt)| (name.to_string(), prompt.to_string()))
                .collect(),
            hub_onnx_dir: Some("onnx".to_string()),
            external_data: true,
            install_dir: Some("embeddinggemma-300m-ONNX".to_string()),
        }
    }

    /// `sentence-transformers/all-MiniLM-L6-v2`: 384 dimensions, 256 tokens, mean pooling.
    pub fn all_minilm_l6_v2() -> Self {
        Self {
            id: "sentence-transformers/all-MiniLM-L6-v2".to_string(),
            aliases: vec![
                "all-MiniLM-L6-v2".to_string(),
                "all-minilm-l6-v2".to_string(),
            ],
            model_type: Some("bert".to_string()),
            pooling: Some(Pooling::Mean),
            max_tokens: 256,
            dimension: Some(384),
            matryoshka_dimensions: Vec::new(),
            prompts: BTreeMap::new(),
            hub_onnx_dir: Some("onnx".to_string()),
            external_data: false,
            install_dir: Some("all-MiniLM-L6-v2".to_string()),
        }
    }

    /// Every built-in row.
    pub fn builtins() -> Vec<Self> {
        vec![Self::embedding_gemma_300m(), Self::all_minilm_l6_v2()]
    }

    /// The built-in row whose id or alias is `name` (case-insensitive).
    pub fn builtin(name: &str) -> Option<Self> {
        Self::builtins()
            .into_iter()
            .find(|spec| spec.answers_to(name))
    }

    /// The built-in row describing folders whose `config.json` has this `model_type`.
    pub fn builtin_for_model_type(model_type: &str) -> Option<Self> {
        Self::builtins()
            .into_iter()
            .find(|spec| spec.model_type.as_deref() == Some(model_type))
    }

    /// True when `name` is this row's id or one of its aliases (case-insensitive).
    pub fn answers_to(&self, name: &str) -> bool {
        self.id.eq_ignore_ascii_case(name)
            || self.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    }

    /// A description for a model the catalogue does not know: everything comes from its folder.
    pub fn custom(id: impl Into<String>, max_tokens: usize) -> Self {
        Self {
            id: id.into(),
            aliases: Vec::new(),
            model_type: None,
            pooling: None,
            max_tokens,
            dimension: None,
            matryoshka_dimensions: Vec::new(),
            prompts: BTreeMap::new(),
            hub_onnx_dir: None,
            external_data: false,
            install_dir: None,
        }
    }

    /// Sets the pooling.
    #[must_use]
    pub fn with_pooling(mut self, pooling: Pooling) -> Self {
        self.pooling = Some(pooling);
        self
    }

    /// Sets the Matryoshka dimensions.
    #[must_use]
    pub fn with_matryoshka_dimensions(mut self, dimensions: Vec<usize>) -> Self {
        self.matryoshka_dimensions = dimensions;
        self
    }

    /// Sets the prompt table.
    #[must_use]
    pub fn with_prompts(mut self, prompts: BTreeMap<String, String>) -> Self {
        self.prompts = prompts;
        self
    }
}

/// Combines, in increasing priority: the built-in row (matched by id or by `model_type`), the
/// folder's sentence-transformers files. An explicit [`LoadOptions::with_spec`] wins over both.
pub(crate) fn merge(
    options: &LoadOptions,
    builtin: Option<ModelSpec>,
    folder: &FolderConfig,
    dir: &Path,
) -> Result<ModelSpec> {
    if let Some(spec) = &options.spec {
        let mut spec = spec.clone();
        if let Some(id) = &options.id {
            spec.id = id.clone();
        }
        return Ok(spec);
    }
    let by_type = folder
        .model_type
        .as_deref()
        .and_then(ModelSpec::builtin_for_model_type);
    let named = builtin.is_some();
    let base = builtin.or(by_type);
    let default_id = if named {
        base.as_ref().map(|s| s.id.clone())
    } else if Path::new(&options.model).is_dir() {
        dir.file_name().and_then(|n| n.to_str()).map(str::to_string)
    } else {
        Some(options.model.clone())
    };
    let id = options
        .id
        .clone()
        .or(default_id)
        .unwrap_or_else(|| options.model.clone());
    let max_tokens = folder
        .max_tokens
        .or(base.as_ref().map(|s| s.max_tokens))
        .ok_or_else(|| {
            EmbeddingError::model_load(
                dir.display(),
                "cannot tell the token limit: no sentence_bert_config.json and no built-in description; \
                 describe the model with LoadOptions::with_spec",
            )
        })?;
    let mut spec = match base {
        Some(base) => ModelSpec {
            id,
            max_tokens,
            ..base
        },
        None => ModelSpec::custom(id, max_tokens),
    };
    // A pooling the folder declares is honoured, except that a graph that pools itself
    // (EmbeddingGemma's `sentence_embedding`) is decided by the graph: see `load`.
    if spec.pooling != Some(Pooling::SentenceEmbedding)
        && let Some(pooling) = folder.pooling
    {
        spec.pooling = Some(pooling);
    }
    if let Some(prompts) = &folder.prompts {
        spec.prompts = prompts.clone();
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_finds_rows_by_id_alias_and_model_type() {
        let gemma = ModelSpec::builtin("google/embeddinggemma-300m").unwrap();
        assert_eq!(gemma.id, "onnx-community/embeddinggemma-300m-ONNX");
        assert_eq!(gemma.max_tokens, 2048);
        assert_eq!(gemma.prompts["query"], "task: search result | query: ");
        assert_eq!(gemma.prompts["document"], "title: none | text: ");
        assert_eq!(gemma.prompts.len(), 14);
        assert_eq!(
            ModelSpec::builtin("ALL-MINILM-L6-V2").unwrap().max_tokens,
            256
        );
        assert_eq!(
            ModelSpec::builtin_for_model_type("bert").unwrap().pooling,
            Some(Pooling::Mean)
        );
        assert!(ModelSpec::builtin("nope/nothing").is_none());
    }

    #[test]
    fn variants_name_their_files() {
        assert_eq!(
            OnnxVariant::parse("int8").unwrap().file_name(),
            "model_quantized.onnx"
        );
        assert_eq!(
            OnnxVariant::parse("q4").unwrap().file_name(),
            "model_q4.onnx"
        );
        assert_eq!(OnnxVariant::parse("x.onnx").unwrap().file_name(), "x.onnx");
        assert!(OnnxVariant::parse("fp8").is_none());
    }

    fn gemma_folder() -> FolderConfig {
        FolderConfig {
            model_type: Some("gemma3_text".to_string()),
            vocab_size: None,
            pooling: Some(Pooling::Mean),
            max_tokens: None,
            prompts: Some([("query".to_string(), "Q: ".to_string())].into()),
        }
    }

    #[test]
    fn merge_takes_the_row_then_the_folders_files() {
        let folder = std::env::temp_dir().join(format!("my-gemma-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let dir = folder.as_path();
        let spec = merge(
            &LoadOptions::new(folder.to_str().unwrap()),
            None,
            &gemma_folder(),
            dir,
        )
        .unwrap();
        std::fs::remove_dir_all(dir).unwrap();
        // Found by model_type; named after the folder; the folder's prompts replace the row's;
        // a graph that pools itself keeps doing so.
        assert_eq!(spec.id, format!("my-gemma-{}", std::process::id()));
        assert_eq!(spec.max_tokens, 2048);
        assert_eq!(spec.prompts.len(), 1);
        assert_eq!(spec.pooling, Some(Pooling::SentenceEmbedding));
        let named = merge(
            &LoadOptions::new("minilm").with_id("mine"),
            ModelSpec::builtin("all-MiniLM-L6-v2"),
            &FolderConfig {
                max_tokens: Some(128),
                pooling: Some(Pooling::Cls),
                ..FolderConfig::default()
            },
            dir,
        )
        .unwrap();
        assert_eq!((named.id.as_str(), named.max_tokens), ("mine", 128));
        assert_eq!(named.pooling, Some(Pooling::Cls));
    }

    #[test]
    fn an_explicit_spec_wins_and_an_unknown_model_needs_a_token_limit() {
        let explicit = ModelSpec::custom("custom", 77);
        let spec = merge(
            &LoadOptions::new("x")
                .with_spec(explicit.clone())
                .with_id("renamed"),
            Some(explicit),
            &gemma_folder(),
            Path::new("/m"),
        )
        .unwrap();
        assert_eq!((spec.id.as_str(), spec.max_tokens), ("renamed", 77));
        let err = merge(
            &LoadOptions::new("owner/unknown"),
            None,
            &FolderConfig::default(),
            Path::new("/m"),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("cannot tell the token limit"),
            "{err}"
        );
    }
}
