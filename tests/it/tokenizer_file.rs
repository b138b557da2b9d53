//! `akidb_embedding_onnx::tokenizer_file` on the real tokenizers: EmbeddingGemma's 262k-token
//! BPE file takes the low-memory reader and gives exactly the tokenizer `tokenizers` reads;
//! MiniLM's WordPiece file goes to `tokenizers`' own reader.

use std::path::Path;

use akidb_embedding_onnx::tokenizer_file::{self, Reader};
use tokenizers::Tokenizer;

/// Reads `dir/tokenizer.json` both ways and checks the two tokenizers are the same: the full
/// serialisation (model, merges by rank, added tokens with ids, every pipeline section) and
/// the encodings, offsets included, of texts that exercise added and special tokens.
fn same_as_tokenizers_reader(dir: &Path, expected: Reader) {
    let path = dir.join("tokenizer.json");
    let (fast, reader) = tokenizer_file::load(&path).expect("reads");
    assert_eq!(reader, expected, "{}", path.display());
    let generic = Tokenizer::from_file(&path).expect("tokenizers reads it");
    assert!(
        fast.to_string(false).expect("serialises") == generic.to_string(false).expect("serialises"),
        "{}: the two readers disagree",
        path.display()
    );
    for text in [
        "task: search result | query: Which planet is known as the Red Planet?",
        "<start_of_turn>user\nnaïve café — 東京タワー 🎉🎉 <unused17> <b>bold</b>\t\t  spaces",
        "",
    ] {
        let a = fast.encode(text, true).expect("encodes");
        let b = generic.encode(text, true).expect("encodes");
        assert_eq!(a.get_ids(), b.get_ids(), "{text:?}");
        assert_eq!(a.get_offsets(), b.get_offsets(), "{text:?}");
        assert_eq!(
            a.get_special_tokens_mask(),
            b.get_special_tokens_mask(),
            "{text:?}"
        );
    }
}

#[test]
fn embeddinggemma_tokenizer_reads_fast_and_identically() {
    // The double ships the real model's tokenizer.json, byte for byte.
    let dir = akidb_test_support::tiny_gemma_dir();
    same_as_tokenizers_reader(&dir, Reader::Bpe);
}

#[test]
fn minilm_tokenizer_goes_to_tokenizers_reader() {
    let dir = akidb_test_support::minilm_dir();
    same_as_tokenizers_reader(&dir, Reader::Generic);
}
