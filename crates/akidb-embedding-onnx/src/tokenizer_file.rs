//! Reading `tokenizer.json` without the parser's transient memory.
//!
//! `tokenizers` reads the `model` section of a `tokenizer.json` through two generic trees (an
//! untagged enum buffers the whole section, then a `serde_json::Value` holds it again) before
//! it builds the model. For EmbeddingGemma's tokenizer (262,144 tokens, 514,906 merges, a
//! 33 MB file) that peaks near 300 MB for a tokenizer that keeps 57 MB, and the allocator
//! keeps most of the freed memory: the process stays about 190 MB larger than it needs to
//! for as long as it runs.
//!
//! [`load`] reads a BPE model's vocabulary and merges straight into the structures
//! [`BpeBuilder`](tokenizers::models::bpe::BpeBuilder) takes, builds the rest of the tokenizer
//! (normaliser, pre-tokeniser, post-processor, decoder, truncation, padding) from its own
//! sections, and adds the added tokens last against the real model, in the same order and
//! with the same calls as `tokenizers`' own reader: the result is the same tokenizer (the
//! tests compare both serialised in full), and the file is read at about 120 MB peak.
//! Anything the fast reader does not recognise (other model types, the legacy `"a b"` merge
//! format, unusual JSON) goes to `tokenizers`' own reader, so no file reads differently.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::value::RawValue;
use tokenizers::models::bpe::BPE;
use tokenizers::{AddedToken, Tokenizer};

/// Which reader produced a tokenizer (for tests and the load log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// The BPE reader of this module.
    Bpe,
    /// `tokenizers`' own reader.
    Generic,
}

/// Reads `path` as a `tokenizer.json`; see the [module docs](self).
pub fn load(path: &Path) -> Result<(Tokenizer, Reader), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    from_json(&text)
}

/// Builds the tokenizer a `tokenizer.json` text describes; see the [module docs](self).
pub fn from_json(text: &str) -> Result<(Tokenizer, Reader), String> {
    if let Some(tokenizer) = read_bpe(text) {
        return Ok((tokenizer, Reader::Bpe));
    }
    text.parse::<Tokenizer>()
        .map(|tokenizer| (tokenizer, Reader::Generic))
        .map_err(|e| e.to_string())
}

/// The `model` section of a BPE tokenizer, as `tokenizers` writes it.
#[derive(Deserialize)]
struct BpeSection {
    #[serde(rename = "type")]
    kind: Option<String>,
    dropout: Option<f32>,
    unk_token: Option<String>,
    continuing_subword_prefix: Option<String>,
    end_of_word_suffix: Option<String>,
    fuse_unk: Option<bool>,
    byte_fallback: Option<bool>,
    ignore_merges: Option<bool>,
    vocab: ahash::AHashMap<String, u32>,
    /// Only the pair format; the legacy `"a b"` strings fail here and go to the generic reader.
    merges: Vec<(String, String)>,
}

/// One entry of `added_tokens`.
#[derive(Deserialize)]
struct AddedTokenEntry {
    id: u32,
    #[serde(flatten)]
    token: AddedToken,
}

/// The sections `tokenizers` reads besides `model` and `added_tokens`; anything else in the
/// file sends it to the generic reader.
const OTHER_SECTIONS: [&str; 7] = [
    "version",
    "truncation",
    "padding",
    "normalizer",
    "pre_tokenizer",
    "post_processor",
    "decoder",
];

/// The fast path: `None` when the file is not a BPE tokenizer in today's format (or is
/// invalid: the generic reader then says why).
fn read_bpe(text: &str) -> Option<Tokenizer> {
    let sections: BTreeMap<&str, &RawValue> = serde_json::from_str(text).ok()?;
    if sections
        .keys()
        .any(|k| *k != "model" && *k != "added_tokens" && !OTHER_SECTIONS.contains(k))
    {
        return None;
    }
    let section: BpeSection = serde_json::from_str(sections.get("model")?.get()).ok()?;
    if section.kind.as_deref().is_some_and(|kind| kind != "BPE") {
        return None;
    }
    let mut builder = BPE::builder().vocab_and_merges(section.vocab, section.merges);
    // The same optional settings, applied the same way, as `tokenizers`' BPE reader.
    if let Some(dropout) = section.dropout {
        builder = builder.dropout(dropout);
    }
    if let Some(unk) = section.unk_token {
        builder = builder.unk_token(unk);
    }
    if let Some(prefix) = section.continuing_subword_prefix {
        builder = builder.continuing_subword_prefix(prefix);
    }
    if let Some(suffix) = section.end_of_word_suffix {
        builder = builder.end_of_word_suffix(suffix);
    }
    if let Some(fuse_unk) = section.fuse_unk {
        builder = builder.fuse_unk(fuse_unk);
    }
    if let Some(byte_fallback) = section.byte_fallback {
        builder = builder.byte_fallback(byte_fallback);
    }
    if let Some(ignore_merges) = section.ignore_merges {
        builder = builder.ignore_merges(ignore_merges);
    }
    let model = builder.build().ok()?;

    // Everything but the model and the added tokens, read by `tokenizers` itself around an
    // empty model; the real model goes in before any token is added, since added tokens take
    // the model's id when the model has them.
    let mut shell = String::with_capacity(4096);
    shell.push('{');
    for (name, value) in &sections {
        if OTHER_SECTIONS.contains(name) {
            shell.push_str(&serde_json::to_string(name).ok()?);
            shell.push(':');
            shell.push_str(value.get());
            shell.push(',');
        }
    }
    shell.push_str(r#""added_tokens":[],"model":{"type":"BPE","vocab":{},"merges":[]}}"#);
    let mut tokenizer: Tokenizer = shell.parse().ok()?;
    tokenizer.with_model(model);

    let entries: Vec<AddedTokenEntry> = match sections.get("added_tokens") {
        Some(raw) => serde_json::from_str(raw.get()).ok()?,
        None => Vec::new(),
    };
    let mut tokens = Vec::with_capacity(entries.len());
    for entry in entries {
        // `tokenizers` warns and goes on when a file's id disagrees with the model's.
        if let Some(id) = tokenizer.token_to_id(&entry.token.content)
            && id != entry.id
        {
            tracing::warn!(token = %entry.token.content, file_id = entry.id, model_id = id, "tokenizer.json gives an added token another id than its model");
        }
        tokens.push(entry.token);
    }
    tokenizer.add_tokens(&tokens);
    Some(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small BPE tokenizer in the format `tokenizers` writes, with added tokens both inside
    /// and outside the model's vocabulary and every pipeline section set.
    const SMALL_BPE: &str = r#"{
      "version": "1.0",
      "truncation": {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0},
      "padding": null,
      "added_tokens": [
        {"id": 0, "content": "<pad>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 1, "content": "<bos>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 9, "content": "<extra>", "single_word": false, "lstrip": true, "rstrip": false, "normalized": true, "special": false}
      ],
      "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
      "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false},
      "post_processor": {"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<bos>": {"id": "<bos>", "ids": [1], "tokens": ["<bos>"]}}},
      "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}]},
      "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
        "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
        "vocab": {"<pad>": 0, "<bos>": 1, "<unk>": 2, "a": 3, "b": 4, "ab": 5, "▁": 6, "▁ab": 7, "c": 8},
        "merges": [["a", "b"], ["▁", "ab"]]}
    }"#;

    fn generic(text: &str) -> Tokenizer {
        text.parse().expect("tokenizers reads the fixture")
    }

    fn serialised(tokenizer: &Tokenizer) -> String {
        tokenizer.to_string(false).expect("serialises")
    }

    #[test]
    fn a_bpe_file_reads_to_the_same_tokenizer_as_tokenizers_own_reader() {
        let (fast, reader) = from_json(SMALL_BPE).expect("reads");
        assert_eq!(reader, Reader::Bpe);
        assert_eq!(serialised(&fast), serialised(&generic(SMALL_BPE)));
        for text in ["ab ab c", "abc <extra> x", "<bos>ab"] {
            let a = fast.encode(text, true).expect("encodes");
            let b = generic(SMALL_BPE).encode(text, true).expect("encodes");
            assert_eq!(a.get_ids(), b.get_ids(), "{text}");
            assert_eq!(a.get_offsets(), b.get_offsets(), "{text}");
        }
        assert_eq!(fast.token_to_id("<extra>"), Some(9));
    }

    #[test]
    fn legacy_merges_and_other_models_go_to_the_generic_reader() {
        let legacy = SMALL_BPE.replace(r#"[["a", "b"], ["▁", "ab"]]"#, r#"["a b", "▁ ab"]"#);
        let (tokenizer, reader) = from_json(&legacy).expect("reads");
        assert_eq!(reader, Reader::Generic);
        assert_eq!(serialised(&tokenizer), serialised(&generic(&legacy)));

        let word_level = r#"{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "hi": 1}, "unk_token": "[UNK]"}}"#;
        let (tokenizer, reader) = from_json(word_level).expect("reads");
        assert_eq!(reader, Reader::Generic);
        assert_eq!(
            tokenizer
                .encode("hi there", false)
                .expect("encodes")
                .get_ids(),
            &[1, 0]
        );

        // `tokenizers` refuses sections it does not know; so does this reader.
        let unknown_section = SMALL_BPE.replacen("\"version\"", "\"future\": 1, \"version\"", 1);
        assert!(unknown_section.parse::<Tokenizer>().is_err());
        assert!(from_json(&unknown_section).is_err());
    }

    #[test]
    fn invalid_files_get_tokenizers_own_error() {
        let truncated = &SMALL_BPE[..SMALL_BPE.len() / 2];
        let error = from_json(truncated).expect_err("a cut file is refused");
        assert!(error.contains("EOF") || error.contains("line"), "{error}");
        let error =
            from_json(&SMALL_BPE.replace("\"merges\": [[", "\"merges\": [[7, ")).unwrap_err();
        assert!(!error.is_empty());
        assert!(from_json("[]").is_err());
    }
}
