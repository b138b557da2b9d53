//! Request checks every provider applies in the same way, before any work is done.

use crate::{EmbedRequest, EmbeddingError, ModelInfo, Result};

/// Checks the parts of a request that do not need the tokenizer: a non-empty batch and a
/// supported output dimension. Returns the output dimension to produce.
pub fn check_request(request: &EmbedRequest, info: &ModelInfo) -> Result<usize> {
    if request.texts.is_empty() {
        return Err(EmbeddingError::EmptyBatch);
    }
    match request.dimensions {
        None => Ok(info.dimension),
        Some(requested) if info.supports_dimension(requested) => Ok(requested),
        Some(requested) => Err(EmbeddingError::UnsupportedDimension {
            requested,
            supported: info.dimensions.clone(),
        }),
    }
}

/// Checks a request's token counts (from [`crate::TokenizedRequest::token_counts`]) against
/// a per-request limit; returns their total.
pub fn check_total_tokens(counts: &[usize], limit: usize) -> Result<usize> {
    let tokens = counts.iter().sum();
    if tokens > limit {
        return Err(EmbeddingError::TooManyTokens { tokens, limit });
    }
    Ok(tokens)
}

/// Looks a prompt name up in a model's prompt table.
///
/// Like sentence-transformers, `query` and `document` are valid for a model that defines no
/// prompts at all and then add nothing; any other unknown name is an error.
pub fn resolve_prompt<'a, F>(name: Option<&str>, lookup: F, available: &[String]) -> Result<&'a str>
where
    F: Fn(&str) -> Option<&'a str>,
{
    let Some(name) = name else { return Ok("") };
    if let Some(prompt) = lookup(name) {
        return Ok(prompt);
    }
    if available.is_empty() && matches!(name, "query" | "document") {
        return Ok("");
    }
    Err(EmbeddingError::UnknownPrompt {
        name: name.to_string(),
        available: available.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn info() -> ModelInfo {
        ModelInfo {
            id: "m".into(),
            dimension: 768,
            max_tokens: 2048,
            dimensions: vec![768, 512, 256, 128],
            prompts: vec!["query".into()],
        }
    }

    #[test]
    fn total_tokens_over_the_limit_are_refused_with_both_numbers() {
        assert_eq!(check_total_tokens(&[3, 4], 7).unwrap(), 7);
        let err = check_total_tokens(&[3, 5], 7).unwrap_err();
        assert_eq!(
            err,
            EmbeddingError::TooManyTokens {
                tokens: 8,
                limit: 7
            }
        );
        assert!(err.is_invalid_input());
        assert!(err.to_string().contains("8 tokens") && err.to_string().contains("7"));
    }

    #[test]
    fn empty_batch_and_bad_dimension_are_refused() {
        let empty = EmbedRequest::new(Vec::<String>::new());
        assert_eq!(
            check_request(&empty, &info()),
            Err(EmbeddingError::EmptyBatch)
        );
        let bad = EmbedRequest::new(["a"]).with_dimensions(300);
        assert!(matches!(
            check_request(&bad, &info()),
            Err(EmbeddingError::UnsupportedDimension { requested: 300, .. })
        ));
        let good = EmbedRequest::new(["a"]).with_dimensions(256);
        assert_eq!(check_request(&good, &info()), Ok(256));
        assert_eq!(check_request(&EmbedRequest::new(["a"]), &info()), Ok(768));
    }

    #[test]
    fn prompts_resolve_like_sentence_transformers() {
        let table: BTreeMap<String, String> = [("query".to_string(), "q: ".to_string())].into();
        let names: Vec<String> = table.keys().cloned().collect();
        let lookup = |n: &str| table.get(n).map(String::as_str);
        assert_eq!(resolve_prompt(Some("query"), lookup, &names), Ok("q: "));
        assert_eq!(resolve_prompt(None, lookup, &names), Ok(""));
        assert!(matches!(
            resolve_prompt(Some("document"), lookup, &names),
            Err(EmbeddingError::UnknownPrompt { .. })
        ));
        // A model without prompts accepts `query`/`document` as empty prompts, nothing else.
        let none = |_: &str| None;
        assert_eq!(resolve_prompt(Some("document"), none, &[]), Ok(""));
        assert!(resolve_prompt(Some("STS"), none, &[]).is_err());
    }
}
