//! A missing or broken ONNX Runtime library is a typed, explanatory error, not a crash; once
//! the library is found, loading works in the same process. (Its own test binary: ONNX
//! Runtime is loaded once per process.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use akidb_embedding_core::{EmbeddingError, ErrorKind};
use akidb_embedding_onnx::{LoadOptions, OnnxEmbeddingProvider};
use akidb_test_support::{temp_dir, tiny_gemma_dir, workspace_root};

#[test]
fn missing_then_corrupt_then_real_runtime_library() {
    let Some(model) = tiny_gemma_dir() else {
        return;
    };
    let model = model.to_str().unwrap().to_string();

    let missing = OnnxEmbeddingProvider::load(
        LoadOptions::new(&model).with_runtime_library("/nonexistent/libonnxruntime.so"),
    )
    .unwrap_err();
    assert!(
        matches!(missing, EmbeddingError::RuntimeUnavailable { .. }),
        "{missing:?}"
    );
    assert_eq!(missing.kind(), ErrorKind::Load);
    let message = missing.to_string();
    assert!(
        message.contains("/nonexistent/libonnxruntime.so") && message.contains("scripts/setup.sh"),
        "{message}"
    );

    let folder = temp_dir("corrupt-ort");
    let corrupt = folder.join("libonnxruntime.so");
    std::fs::write(&corrupt, b"this is not a shared library").unwrap();
    let err = OnnxEmbeddingProvider::load(LoadOptions::new(&model).with_runtime_library(&corrupt))
        .unwrap_err();
    assert!(
        matches!(err, EmbeddingError::RuntimeUnavailable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(corrupt.to_str().unwrap()), "{err}");

    let Some(real) = akidb_test_support::require(
        workspace_root().join(".akidb/runtime/libonnxruntime.so"),
        "ONNX Runtime (run scripts/setup.sh)",
    ) else {
        return;
    };
    let provider =
        OnnxEmbeddingProvider::load(LoadOptions::new(&model).with_runtime_library(real)).unwrap();
    assert_eq!(
        provider
            .embed_blocking(akidb_embedding_core::EmbedRequest::new(["ok"]))
            .unwrap()
            .count(),
        1
    );
}
