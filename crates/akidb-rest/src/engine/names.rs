//! The names clients address models by: each model's id, the aliases of its built-in
//! description (`embeddinggemma-300m`, `google/embeddinggemma-300m`), and the names the operator
//! adds with `AKIDB_SERVED_MODEL_NAME`. Each name resolves to exactly one model; an unknown
//! name is 404, never another model (a vector database must not mix models silently).

use std::collections::BTreeMap;

use akidb_embedding_core::{EmbeddingError, ModelInfo, Result};
use akidb_embedding_onnx::ModelSpec;

/// Every name of every served model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServedNames {
    /// Name → position of the model.
    by_name: BTreeMap<String, usize>,
    /// Each model's names, its id first.
    per_model: Vec<Vec<String>>,
}

impl ServedNames {
    /// The names of the models `infos` describes, with `aliases[i]` added to model `i`.
    /// Fails when a name would resolve to two models, or when there are more alias lists than
    /// models.
    pub fn build(infos: &[&ModelInfo], aliases: &[Vec<String>]) -> Result<Self> {
        if aliases.len() > infos.len() {
            // The operator's mistake, not a caller's: a load error.
            return Err(EmbeddingError::model_load(
                "AKIDB_SERVED_MODEL_NAME",
                format!(
                    "it lists names for {} models, but {} are served",
                    aliases.len(),
                    infos.len()
                ),
            ));
        }
        let mut names = Self::default();
        for (position, info) in infos.iter().enumerate() {
            let mut own = vec![info.id.clone()];
            if let Some(spec) = ModelSpec::builtin(&info.id).filter(|spec| spec.id == info.id) {
                own.extend(spec.aliases.iter().cloned());
            }
            own.extend(aliases.get(position).into_iter().flatten().cloned());
            own.dedup();
            let mut kept = Vec::with_capacity(own.len());
            for name in own {
                match names.by_name.get(&name) {
                    Some(&other) if other != position => {
                        return Err(EmbeddingError::model_load(
                            "AKIDB_SERVED_MODEL_NAME",
                            format!(
                                "the name `{name}` would address both `{}` and `{}`; give each model its own names",
                                infos[other].id, info.id
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        names.by_name.insert(name.clone(), position);
                        kept.push(name);
                    }
                }
            }
            names.per_model.push(kept);
        }
        Ok(names)
    }

    /// The position of the model `name` addresses.
    pub fn resolve(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The names of the model at `position`, its id first.
    pub fn of(&self, position: usize) -> &[String] {
        self.per_model.get(position).map_or(&[], Vec::as_slice)
    }

    /// Every name of every model, model by model.
    pub fn all(&self) -> impl Iterator<Item = (usize, &str)> {
        self.per_model
            .iter()
            .enumerate()
            .flat_map(|(position, names)| names.iter().map(move |name| (position, name.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> ModelInfo {
        ModelInfo {
            id: id.to_string(),
            dimension: 4,
            max_tokens: 16,
            dimensions: vec![4],
            prompts: vec![],
        }
    }

    #[test]
    fn ids_builtin_aliases_and_configured_names_resolve_to_one_model() {
        let gemma = info("onnx-community/embeddinggemma-300m-ONNX");
        let minilm = info("minilm");
        let names = ServedNames::build(
            &[&gemma, &minilm],
            &[vec![], vec!["text-embedding-3-small".to_string()]],
        )
        .unwrap();
        assert_eq!(names.resolve("embeddinggemma-300m"), Some(0));
        assert_eq!(names.resolve("google/embeddinggemma-300m"), Some(0));
        assert_eq!(names.resolve("text-embedding-3-small"), Some(1));
        assert_eq!(names.resolve("minilm"), Some(1));
        assert_eq!(names.resolve("text-embedding-3-large"), None);
        assert_eq!(names.of(1), ["minilm", "text-embedding-3-small"]);

        let clash = ServedNames::build(
            &[&gemma, &minilm],
            &[vec![], vec!["embeddinggemma-300m".into()]],
        );
        assert!(clash.unwrap_err().to_string().contains("both"));
        let too_many = ServedNames::build(&[&minilm], &[vec![], vec![]]);
        assert!(too_many.is_err());
    }
}
