//! Reading the sentence-transformers files of a model folder: `modules.json`,
//! `1_Pooling/config.json`, `sentence_bert_config.json`, `config_sentence_transformers.json`,
//! and `config.json`'s `model_type`/`vocab_size`. Each file is optional; a file that is present
//! but malformed is a load error naming it, never silently ignored.

use std::collections::BTreeMap;
use std::path::Path;

use akidb_embedding_core::{EmbeddingError, Result};
use serde::Deserialize;
use serde_json::Value;

use crate::Pooling;

/// What the files of a folder say about its model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderConfig {
    /// `model_type` from `config.json`.
    pub model_type: Option<String>,
    /// `vocab_size` from `config.json` (rows of the embedding table).
    pub vocab_size: Option<usize>,
    /// Pooling from the pooling module's `config.json`.
    pub pooling: Option<Pooling>,
    /// `max_seq_length` from `sentence_bert_config.json`.
    pub max_tokens: Option<usize>,
    /// `prompts` from `config_sentence_transformers.json` (present even if empty when the file has the key).
    pub prompts: Option<BTreeMap<String, String>>,
}

impl FolderConfig {
    /// Reads whatever sentence-transformers files `dir` holds.
    pub fn read(dir: &Path) -> Result<Self> {
        let config = read_json(&dir.join("config.json"))?;
        let model_type = config
            .as_ref()
            .and_then(|c| c.get("model_type"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let vocab_size = config
            .as_ref()
            .and_then(|c| c.get("vocab_size"))
            .and_then(Value::as_u64)
            .and_then(|v| usize::try_from(v).ok());

        let max_tokens = read_json(&dir.join("sentence_bert_config.json"))?
            .and_then(|c| c.get("max_seq_length").and_then(Value::as_u64))
            .and_then(|v| usize::try_from(v).ok());

        let prompts = match read_json(&dir.join("config_sentence_transformers.json"))? {
            Some(c) => match c.get("prompts") {
                Some(p) => Some(
                    serde_json::from_value::<BTreeMap<String, String>>(p.clone()).map_err(|e| {
                        EmbeddingError::model_load(
                            dir.join("config_sentence_transformers.json").display(),
                            format!("`prompts` is not a table of strings: {e}"),
                        )
                    })?,
                ),
                None => None,
            },
            None => None,
        };

        Ok(Self {
            model_type,
            vocab_size,
            pooling: read_pooling(dir)?,
            max_tokens,
            prompts,
        })
    }
}

#[derive(Deserialize)]
struct Module {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

fn read_pooling(dir: &Path) -> Result<Option<Pooling>> {
    let modules_path = dir.join("modules.json");
    let pooling_dir = match read_json(&modules_path)? {
        Some(modules) => {
            let modules: Vec<Module> = serde_json::from_value(modules)
                .map_err(|e| EmbeddingError::model_load(modules_path.display(), e))?;
            match modules
                .into_iter()
                .find(|m| m.kind.ends_with("models.Pooling"))
            {
                Some(module) => dir.join(module.path),
                None => return Ok(None),
            }
        }
        None => dir.join("1_Pooling"),
    };
    let config_path = pooling_dir.join("config.json");
    let Some(config) = read_json(&config_path)? else {
        return Ok(None);
    };
    let config: PoolingConfig = serde_json::from_value(config)
        .map_err(|e| EmbeddingError::model_load(config_path.display(), e))?;
    let unsupported = config.pooling_mode_max_tokens
        || config.pooling_mode_mean_sqrt_len_tokens
        || config.pooling_mode_weightedmean_tokens
        || config.pooling_mode_lasttoken;
    match (
        config.pooling_mode_mean_tokens,
        config.pooling_mode_cls_token,
        unsupported,
    ) {
        (true, false, false) => Ok(Some(Pooling::Mean)),
        (false, true, false) => Ok(Some(Pooling::Cls)),
        _ => Err(EmbeddingError::model_load(
            config_path.display(),
            "unsupported pooling mode: only mean or cls pooling (exactly one) is implemented",
        )),
    }
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            EmbeddingError::model_load(path.display(), format!("not valid JSON: {e}"))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EmbeddingError::model_load(path.display(), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("akidb-st-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
        dir
    }

    #[test]
    fn reads_minilm_style_folder() {
        let dir = temp_dir("minilm");
        std::fs::write(
            dir.join("config.json"),
            r#"{"model_type":"bert","vocab_size":30522}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("sentence_bert_config.json"),
            r#"{"max_seq_length":256}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("1_Pooling/config.json"),
            r#"{"pooling_mode_mean_tokens":true,"pooling_mode_cls_token":false}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("config_sentence_transformers.json"),
            r#"{"__version__":{}}"#,
        )
        .unwrap();
        let config = FolderConfig::read(&dir).unwrap();
        assert_eq!(config.model_type.as_deref(), Some("bert"));
        assert_eq!(config.vocab_size, Some(30522));
        assert_eq!(config.max_tokens, Some(256));
        assert_eq!(config.pooling, Some(Pooling::Mean));
        assert_eq!(config.prompts, None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn malformed_files_are_errors_naming_the_file() {
        let dir = temp_dir("bad");
        std::fs::write(dir.join("sentence_bert_config.json"), "{not json").unwrap();
        let err = FolderConfig::read(&dir).unwrap_err().to_string();
        assert!(err.contains("sentence_bert_config.json"), "{err}");
        std::fs::write(dir.join("sentence_bert_config.json"), "{}").unwrap();
        std::fs::write(
            dir.join("1_Pooling/config.json"),
            r#"{"pooling_mode_max_tokens":true}"#,
        )
        .unwrap();
        let err = FolderConfig::read(&dir).unwrap_err().to_string();
        assert!(err.contains("unsupported pooling"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn empty_folder_says_nothing() {
        let dir = temp_dir("empty");
        assert_eq!(FolderConfig::read(&dir).unwrap(), FolderConfig::default());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
