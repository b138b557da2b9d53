//! A loaded model is independent of its folder: split weights truncated in place, emptied or
//! removed after load change nothing (ONNX Runtime maps a private, unlinked copy), while the
//! weights stay mapped rather than read into the heap.

use std::path::Path;

use akidb_embedding_core::EmbedRequest;
use akidb_embedding_onnx::{OnnxEmbeddingProvider, WeightsMapping};
use akidb_test_support::{copy_model, temp_dir, tiny_gemma_dir};

const TEXTS: [&str; 3] = [
    "The weights file changed under me.",
    "Hello, world!",
    "A third text, to run a batch.",
];

fn embed(provider: &OnnxEmbeddingProvider) -> Vec<Vec<f32>> {
    provider
        .embed_blocking(EmbedRequest::new(TEXTS))
        .unwrap()
        .embeddings
}

fn truncate(file: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// The files of this process's memory mappings (Linux), for the ones whose path contains `needle`.
fn mappings(needle: &str) -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut found: Vec<String> = maps
        .lines()
        .filter(|line| line.contains(needle))
        .filter_map(|line| line.find('/').map(|start| line[start..].to_string()))
        .collect();
    found.sort();
    found.dedup();
    found
}

#[test]
fn weights_truncated_emptied_or_removed_in_place_after_load_change_nothing() {
    let source = tiny_gemma_dir();
    let dir = copy_model(&source, "files-in-place-private", &[]);
    let provider = OnnxEmbeddingProvider::load(
        crate::load_options(dir.path().to_str().unwrap()).with_intra_threads(1),
    )
    .unwrap();
    let before = embed(&provider);

    // The private copy is gone from the folder once the model is loaded.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".akidb-weights-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "left in the model folder: {leftovers:?}"
    );

    let data = dir.path().join("model.onnx_data");
    let size = std::fs::metadata(&data).unwrap().len();
    // Without the private copy, each of these kills the process with SIGBUS at the next run.
    truncate(&data, size / 2);
    assert_eq!(embed(&provider), before, "after truncating to half");
    truncate(&data, 0);
    assert_eq!(embed(&provider), before, "after truncating to nothing");
    std::fs::remove_file(&data).unwrap();
    std::fs::remove_file(dir.path().join("model.onnx")).unwrap();
    assert_eq!(embed(&provider), before, "after removing the files");
}

#[cfg(target_os = "linux")]
#[test]
fn weights_are_mapped_from_the_private_copy_or_in_place_never_read_into_the_heap() {
    let source = tiny_gemma_dir();
    let private_dir = copy_model(&source, "files-mapped-private", &[]);
    let in_place_dir = copy_model(&source, "files-mapped-in-place", &[]);
    // The folder's own graph: a fused one is mapped from its cache entry the same way.
    let private = OnnxEmbeddingProvider::load(
        crate::load_options(private_dir.path().to_str().unwrap())
            .with_intra_threads(1)
            .with_fused_graph(false),
    )
    .unwrap();
    let in_place = OnnxEmbeddingProvider::load(
        crate::load_options(in_place_dir.path().to_str().unwrap())
            .with_intra_threads(1)
            .with_fused_graph(false)
            .with_weights_mapping(WeightsMapping::InPlace),
    )
    .unwrap();
    assert_eq!(embed(&private), embed(&in_place));

    // Private copy: mapped from the unlinked copy, never from the folder's own file.
    let maps = mappings(&private_dir.path().display().to_string());
    assert!(
        maps.iter().any(|m| m.contains("/.akidb-weights-")
            && m.contains("model.onnx_data")
            && m.ends_with("(deleted)")),
        "the private copy is not mapped: {maps:?}"
    );
    assert!(
        !maps.iter().any(|m| m
            == &private_dir
                .path()
                .join("model.onnx_data")
                .display()
                .to_string()),
        "the folder's own weights file is mapped: {maps:?}"
    );

    // In place: the folder's own file is mapped.
    let maps = mappings(&in_place_dir.path().display().to_string());
    assert_eq!(
        maps,
        [in_place_dir
            .path()
            .join("model.onnx_data")
            .display()
            .to_string()],
        "in-place mapping"
    );
}

#[test]
fn the_copy_goes_to_the_folder_asked_for_and_an_unusable_one_is_a_load_error() {
    let source = tiny_gemma_dir();
    let dir = copy_model(&source, "files-copy-dir", &[]);
    let copies = temp_dir("files-copy-dir-target");
    let provider = OnnxEmbeddingProvider::load(
        crate::load_options(dir.path().to_str().unwrap())
            .with_intra_threads(1)
            .with_fused_graph(false)
            .with_weights_copy_dir(copies.path()),
    )
    .unwrap();
    assert_eq!(embed(&provider).len(), TEXTS.len());
    assert_eq!(std::fs::read_dir(copies.path()).unwrap().count(), 0);
    #[cfg(target_os = "linux")]
    assert!(
        mappings(&copies.path().display().to_string())
            .iter()
            .any(|m| m.ends_with("model.onnx_data (deleted)")),
        "the copy was not made in the folder asked for"
    );

    let missing = copies.path().join("no-such-folder");
    let err = OnnxEmbeddingProvider::load(
        crate::load_options(dir.path().to_str().unwrap())
            .with_intra_threads(1)
            .with_weights_copy_dir(&missing),
    )
    .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), akidb_embedding_core::ErrorKind::Load);
    assert!(
        text.contains(&missing.display().to_string()) && text.contains("in-place"),
        "{text}"
    );
}
