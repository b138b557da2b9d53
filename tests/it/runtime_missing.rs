//! A missing or broken ONNX Runtime library is a typed, explanatory error, not a crash; once
//! the library is found, loading works in the same process. ONNX Runtime is loaded once per
//! process, so the test runs itself again in a fresh process of this binary.

use std::process::Command;

use akidb_embedding_core::{EmbeddingError, ErrorKind};
use akidb_embedding_onnx::{LoadOptions, OnnxEmbeddingProvider};
use akidb_test_support::{temp_dir, tiny_gemma_dir, workspace_root};

/// Set in the fresh process, where the test really runs.
const FRESH_PROCESS: &str = "AKIDB_TEST_FRESH_RUNTIME_PROCESS";

/// Runs `test` (this module's test of that name) alone in a new process of this binary.
fn in_fresh_process(test: &str) {
    let name = format!("{}::{test}", module_path!().trim_start_matches("it::"));
    let output = Command::new(std::env::current_exe().unwrap())
        .args([name.as_str(), "--exact", "--test-threads=1", "--nocapture"])
        .env(FRESH_PROCESS, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{name} failed in its own process:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn missing_then_corrupt_then_real_runtime_library() {
    if std::env::var_os(FRESH_PROCESS).is_none() {
        return in_fresh_process("missing_then_corrupt_then_real_runtime_library");
    }
    let model = tiny_gemma_dir();
    let model = model.to_str().unwrap().to_string();

    // Nothing named, nothing to search (and no ORT_DYLIB_PATH in tests): the error lists what
    // was looked at and says how to get the library; the library guesses no install folder.
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        let nowhere = temp_dir("no-runtime-here");
        let err = OnnxEmbeddingProvider::load(
            LoadOptions::new(&model).with_runtime_search([nowhere.path()]),
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, EmbeddingError::RuntimeUnavailable { .. })
                && message.contains("no-runtime-here")
                && message.contains("pip install onnxruntime")
                && message.contains("ORT_DYLIB_PATH"),
            "{message}"
        );
    }

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
        message.contains("/nonexistent/libonnxruntime.so") && message.contains("ORT_DYLIB_PATH"),
        "{message}"
    );

    let folder = temp_dir("corrupt-ort");
    let corrupt = folder.path().join("libonnxruntime.so");
    std::fs::write(&corrupt, b"this is not a shared library").unwrap();
    let err = OnnxEmbeddingProvider::load(LoadOptions::new(&model).with_runtime_library(&corrupt))
        .unwrap_err();
    assert!(
        matches!(err, EmbeddingError::RuntimeUnavailable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(corrupt.to_str().unwrap()), "{err}");

    let real = akidb_test_support::require(
        workspace_root().join(".akidb/runtime/libonnxruntime.so"),
        "ONNX Runtime",
        "run scripts/setup.sh",
    );
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
