//! Typed, clear errors: bad requests (empty batch, unknown prompt, unsupported dimension,
//! over-long text with truncation off, untokenisable text) and bad model folders (missing or
//! truncated weights, a graph that is not ONNX, a tokenizer that does not match the model).

use std::path::Path;

use akidb_embedding_core::{EmbedRequest, EmbeddingError, ErrorKind, Truncation};
use akidb_embedding_onnx::{ModelSpec, OnnxEmbeddingProvider};
use akidb_test_support::{copy_model, minilm_dir, tiny_gemma_dir};

fn load(dir: &Path) -> Result<OnnxEmbeddingProvider, EmbeddingError> {
    OnnxEmbeddingProvider::load(crate::load_options(dir.to_str().unwrap()).with_intra_threads(1))
}

#[test]
fn request_errors_are_typed_and_name_the_problem() {
    let dir = tiny_gemma_dir();
    let provider = load(&dir).unwrap();

    let empty = provider
        .embed_blocking(EmbedRequest::new(Vec::<String>::new()))
        .unwrap_err();
    assert_eq!(empty, EmbeddingError::EmptyBatch);

    let prompt = provider
        .embed_blocking(EmbedRequest::new(["x"]).with_prompt("poem"))
        .unwrap_err();
    match &prompt {
        EmbeddingError::UnknownPrompt { name, available } => {
            assert_eq!(name, "poem");
            assert!(available.contains(&"query".to_string()));
        }
        other => panic!("expected UnknownPrompt, got {other:?}"),
    }

    let dimension = provider
        .embed_blocking(EmbedRequest::new(["x"]).with_dimensions(768))
        .unwrap_err();
    assert_eq!(
        dimension,
        EmbeddingError::UnsupportedDimension {
            requested: 768,
            supported: vec![32]
        }
    );

    // "word" and then "▁word" 2,999 times, plus <bos> and <eos>.
    let long_text = vec!["word"; 3000].join(" ");
    let too_long = provider
        .embed_blocking(
            EmbedRequest::new(["short", long_text.as_str()]).with_truncation(Truncation::Error),
        )
        .unwrap_err();
    match too_long {
        EmbeddingError::TextTooLong {
            index,
            tokens,
            max_tokens,
        } => {
            assert_eq!(index, 1);
            assert_eq!(max_tokens, 2048);
            assert_eq!(tokens, 3002);
        }
        other => panic!("expected TextTooLong, got {other:?}"),
    }
    // With truncation (the default) the same text embeds at the cap.
    let truncated = provider
        .embed_blocking(EmbedRequest::new([long_text.as_str()]))
        .unwrap();
    assert_eq!(truncated.token_counts, vec![2048]);

    // Gemma's tokenizer knows `<image_soft_token>` (id 262144), a row its embedding table lacks.
    let special = provider
        .embed_blocking(EmbedRequest::new(["fine", "see <image_soft_token> here"]))
        .unwrap_err();
    assert!(special.is_invalid_input(), "{special:?}");
    assert!(
        special.to_string().contains("text 1") && special.to_string().contains("image_soft_token"),
        "{special}"
    );

    for err in [empty, prompt, dimension] {
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
}

#[test]
fn missing_weights_file_is_named() {
    let dir = tiny_gemma_dir();
    // Described as EmbeddingGemma (whose weights are split), the folder must have model.onnx_data.
    let copy = copy_model(&dir, "no-data-spec", &["model.onnx_data"]);
    let err = OnnxEmbeddingProvider::load(
        crate::load_options(copy.path().to_str().unwrap())
            .with_spec(ModelSpec::embedding_gemma_300m()),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Load);
    assert!(
        err.to_string().contains("model.onnx_data")
            && err.to_string().contains("missing weights file"),
        "{err}"
    );

    // Without a description that says so, ONNX Runtime's own failure is still a load error naming the graph.
    let err = load(copy.path()).unwrap_err();
    assert!(matches!(err, EmbeddingError::ModelLoad { .. }), "{err:?}");
    assert!(err.to_string().contains("model.onnx"), "{err}");
}

#[test]
fn truncated_weights_file_is_a_load_error() {
    let dir = tiny_gemma_dir();
    let copy = copy_model(&dir, "truncated-data", &[]);
    let data = std::fs::read(dir.join("model.onnx_data")).unwrap();
    std::fs::write(copy.path().join("model.onnx_data"), &data[..data.len() / 2]).unwrap();
    let err = load(copy.path()).unwrap_err();
    assert!(matches!(err, EmbeddingError::ModelLoad { .. }), "{err:?}");
    assert!(err.to_string().contains("model.onnx_data"), "{err}");

    std::fs::write(copy.path().join("model.onnx_data"), b"").unwrap();
    let err = load(copy.path()).unwrap_err();
    assert!(
        err.to_string().contains("model.onnx_data") && err.to_string().contains("empty"),
        "{err}"
    );
}

#[test]
fn graph_that_is_not_onnx_is_a_load_error() {
    let dir = minilm_dir();
    let copy = copy_model(&dir, "not-onnx", &[]);
    std::fs::write(
        copy.path().join("model.onnx"),
        b"<html>404 not found</html>",
    )
    .unwrap();
    let err = load(copy.path()).unwrap_err();
    assert!(matches!(err, EmbeddingError::ModelLoad { .. }), "{err:?}");
    assert!(err.to_string().contains("model.onnx"), "{err}");
}

#[test]
fn missing_or_corrupt_tokenizer_is_a_load_error() {
    let dir = minilm_dir();
    let missing = copy_model(&dir, "no-tokenizer", &["tokenizer.json"]);
    let err = load(missing.path()).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");

    let corrupt = copy_model(&dir, "bad-tokenizer", &[]);
    std::fs::write(corrupt.path().join("tokenizer.json"), b"{\"version\": ").unwrap();
    let err = load(corrupt.path()).unwrap_err();
    assert!(matches!(err, EmbeddingError::ModelLoad { .. }), "{err:?}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

#[test]
fn a_broken_tokenizer_is_reported_before_broken_weights_and_leaves_no_copy_behind() {
    let dir = tiny_gemma_dir();
    // The weights copy runs beside the tokenizer's parse; the session is built only after a
    // good parse. With both broken, the tokenizer's error is the one reported, as when the
    // steps ran one after the other, and the private weights copy is removed.
    let copy = copy_model(&dir, "bad-tokenizer-and-graph", &[]);
    std::fs::write(copy.path().join("tokenizer.json"), b"{\"version\": ").unwrap();
    std::fs::write(
        copy.path().join("model.onnx"),
        b"<html>404 not found</html>",
    )
    .unwrap();
    let err = load(copy.path()).unwrap_err();
    assert!(matches!(err, EmbeddingError::ModelLoad { .. }), "{err:?}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&copy)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".akidb-weights-"))
        .collect();
    assert!(left.is_empty(), "private copies left behind: {left:?}");

    // With a good tokenizer, the graph's error comes through.
    std::fs::copy(
        dir.join("tokenizer.json"),
        copy.path().join("tokenizer.json"),
    )
    .unwrap();
    let err = load(copy.path()).unwrap_err();
    assert!(err.to_string().contains("model.onnx"), "{err}");
}

#[test]
fn tokenizer_larger_than_embedding_table_is_refused_at_load() {
    let dir = minilm_dir();
    let copy = copy_model(&dir, "vocab-mismatch", &[]);
    std::fs::create_dir_all(copy.path().join("1_Pooling")).unwrap();
    std::fs::copy(
        dir.join("1_Pooling/config.json"),
        copy.path().join("1_Pooling/config.json"),
    )
    .unwrap();
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        copy.path().join("config.json"),
        config.replace("30522", "1000"),
    )
    .unwrap();
    let err = load(copy.path()).unwrap_err();
    assert!(matches!(err, EmbeddingError::ModelLoad { .. }), "{err:?}");
    assert!(
        err.to_string().contains("do not match") && err.to_string().contains("1000 rows"),
        "{err}"
    );
}

#[test]
fn unknown_model_id_or_folder_is_a_clear_error() {
    let err = OnnxEmbeddingProvider::load(crate::load_options("./no/such/folder")).unwrap_err();
    assert!(err.to_string().contains("no such folder"), "{err}");
    let cache = akidb_test_support::temp_dir("empty-cache");
    let err = OnnxEmbeddingProvider::load(
        crate::load_options("someone/unknown-model")
            .with_offline(true)
            .with_cache_dir(cache.path()),
    )
    .unwrap_err();
    assert!(matches!(err, EmbeddingError::Download { .. }), "{err:?}");
    assert!(err.to_string().contains("offline"), "{err}");
}

#[test]
fn cuda_requested_without_cuda_fails_instead_of_falling_back_to_cpu() {
    let dir = minilm_dir();
    let err =
        OnnxEmbeddingProvider::load(crate::load_options(dir.to_str().unwrap()).with_cuda(true))
            .unwrap_err();
    assert!(matches!(err, EmbeddingError::ModelLoad { .. }), "{err:?}");
    assert!(err.to_string().contains("CUDA"), "{err}");
}
