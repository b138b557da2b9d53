//! Tokenisation with the real tokenizers (all-MiniLM-L6-v2's and the tiny EmbeddingGemma
//! double's `tokenizer.json`), through `TextTokenizer::encode` as the provider calls it, at
//! the models' caps and at small caps that make truncation common.
//!
//! The first input byte picks the tokenizer, the rest is the text (lossily decoded, so every
//! input is a text). Invariants: no panic; never more tokens than the cap; a truncated text
//! has exactly the cap; `Truncation::Error` refuses exactly the texts `Truncate` cuts, with
//! the true count, and otherwise gives the same ids.
//!
//! Tokenizer files: `AKIDB_FUZZ_MINILM` / `AKIDB_FUZZ_GEMMA` (folders), else
//! `.akidb/models/all-MiniLM-L6-v2` and `../shared/models/tiny-embeddinggemma`.

#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use akidb_embedding_core::{EmbeddingError, Truncation};
use akidb_embedding_onnx::tokenize::TextTokenizer;
use libfuzzer_sys::fuzz_target;

struct Bound {
    tokenizer: TextTokenizer,
    cap: usize,
}

fn folder(variable: &str, default: &str) -> PathBuf {
    std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(default))
}

static TOKENIZERS: LazyLock<Vec<Bound>> = LazyLock::new(|| {
    let minilm = folder("AKIDB_FUZZ_MINILM", "../.akidb/models/all-MiniLM-L6-v2");
    let gemma = folder(
        "AKIDB_FUZZ_GEMMA",
        "../../shared/models/tiny-embeddinggemma",
    );
    [(&minilm, 256), (&minilm, 8), (&gemma, 2048), (&gemma, 16)]
        .into_iter()
        .map(|(dir, cap)| {
            let path = dir.join("tokenizer.json");
            let tokenizer = TextTokenizer::from_file(&path, cap)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            Bound { tokenizer, cap }
        })
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let bound = &TOKENIZERS[usize::from(selector) % TOKENIZERS.len()];
    let text = String::from_utf8_lossy(rest);
    let cut = bound
        .tokenizer
        .encode(&text, Truncation::Truncate, 0)
        .expect("truncating tokenisation never fails on text");
    assert!(!cut.is_empty());
    assert!(
        cut.len() <= bound.cap,
        "{} tokens over the cap {}",
        cut.len(),
        bound.cap
    );
    assert_eq!(cut.ids.len(), cut.type_ids.len());
    match bound.tokenizer.encode(&text, Truncation::Error, 0) {
        Ok(whole) => assert_eq!(whole, cut, "no truncation: the same ids"),
        Err(EmbeddingError::TextTooLong {
            index,
            tokens,
            max_tokens,
        }) => {
            assert_eq!(index, 0);
            assert_eq!(max_tokens, bound.cap);
            assert!(tokens > bound.cap);
            assert_eq!(cut.len(), bound.cap, "a cut text fills the cap exactly");
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
});
