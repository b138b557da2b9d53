//! The `q8` quantiser and variant on the tiny EmbeddingGemma double:
//! - packed weights and scales equal ONNX Runtime's own Python quantiser byte for byte;
//! - the quantised model loads, keeps every token count, and stays close to the fp32 vectors;
//! - the first-load cache is built, reused, rebuilt when stale or corrupt, moves to the cache
//!   folder when the model folder is read-only, and survives concurrent first loads;
//! - bad inputs give typed errors.

#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use akidb_embedding_onnx::quantize::cache::{BESIDE_DIR, cached_q8};
use akidb_embedding_onnx::quantize::{
    NodeOverride, Q8_FILE, QuantizeError, QuantizeRecipe, quantize_file, quantize_folder,
    read_matmul_nbits,
};
use akidb_embedding_onnx::{OnnxEmbeddingProvider, OnnxVariant};
use akidb_test_support::{TempDir, reference, sentences, temp_dir, tiny_gemma_dir, workspace_root};

/// Constant-weight MatMuls of the tiny double: 7 per layer × 6 layers + 2 Dense heads.
const TINY_MATMULS: usize = 44;

/// Worst cosine of the q8 tiny double against the sentence-transformers fp32 reference over
/// every shared sentence. Measured: 0.998683 (s06), mean 0.999629 (8 bits, block 32,
/// accuracy level 4). A packing or layout error drops it far below.
const MIN_Q8_COSINE: f64 = 0.998;
/// The same with the embedding table quantised too. Measured: 0.998135 (s06), mean 0.999503.
const MIN_Q8_GATHER_COSINE: f64 = 0.997;

/// A writable folder that links every file of the tiny double (the shared copy is read-only).
fn linked_double(name: &str) -> TempDir {
    let source = tiny_gemma_dir();
    let dir = temp_dir(name);
    for entry in std::fs::read_dir(&source).unwrap().flatten() {
        std::os::unix::fs::symlink(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

/// Asserts that `python3` has ONNX Runtime's quantiser, naming the install step otherwise.
fn require_python_quantiser() {
    let probe = Command::new("python3")
        .args([
            "-c",
            "import onnx, onnxruntime.quantization.matmul_nbits_quantizer",
        ])
        .output();
    match probe {
        Ok(out) => assert!(
            out.status.success(),
            "python3 cannot import onnxruntime's quantiser \
             (python3 -m pip install -r scripts/requirements-test.txt): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("python3 cannot be run: {e}"),
    }
}

/// Needs ONNX Runtime's Python quantiser: ignored by a plain `cargo test`; `scripts/test.sh`
/// installs it and runs this with `--ignored`.
#[test]
#[ignore = "needs the Python test packages"]
fn packed_weights_and_scales_match_onnx_runtime_python_byte_for_byte() {
    let model = tiny_gemma_dir();
    require_python_quantiser();
    let dir = temp_dir("q8-python");
    // (bits, block size, accuracy level): the default, 4-bit, a block larger than K (32) with
    // padding, and level 0 (no attribute).
    for (bits, block, level) in [(8, 32, 4), (4, 32, 4), (8, 64, 0), (4, 16, 1)] {
        let name = format!("b{bits}-k{block}-a{level}");
        let python = dir.path().join(format!("python-{name}")).join("model.onnx");
        let status = Command::new("python3")
            .arg(workspace_root().join("scripts/quantize_reference.py"))
            .arg("--model")
            .arg(model.join("model.onnx"))
            .arg("--output")
            .arg(&python)
            .args(["--bits", &bits.to_string()])
            .args(["--block-size", &block.to_string()])
            .args(["--accuracy-level", &level.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "python quantiser failed for {name}");

        let ours = dir.path().join(format!("ours-{name}")).join("model.onnx");
        std::fs::create_dir_all(ours.parent().unwrap()).unwrap();
        let recipe = QuantizeRecipe::default()
            .with_bits(bits)
            .with_block_size(block)
            .with_accuracy_level(level);
        let report = quantize_file(&model.join("model.onnx"), &ours, &recipe).unwrap();
        assert_eq!(report.quantized.len(), TINY_MATMULS);

        let mut theirs = read_matmul_nbits(&python).unwrap();
        let mut mine = read_matmul_nbits(&ours).unwrap();
        theirs.sort_by(|a, b| a.name.cmp(&b.name));
        mine.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(theirs.len(), TINY_MATMULS, "{name}: python's node count");
        assert_eq!(mine.len(), theirs.len(), "{name}");
        for (a, b) in mine.iter().zip(&theirs) {
            assert_eq!(a.name, b.name, "{name}");
            assert_eq!(a.inputs, b.inputs, "{name}: {}", a.name);
            assert_eq!(
                (a.k, a.n, a.bits, a.block_size, a.accuracy_level),
                (b.k, b.n, b.bits, b.block_size, b.accuracy_level),
                "{name}: attributes of {}",
                a.name
            );
            assert_eq!(a.packed_dims, b.packed_dims, "{name}: {}", a.name);
            assert_eq!(a.scales_dims, b.scales_dims, "{name}: {}", a.name);
            assert!(
                a.packed == b.packed,
                "{name}: packed B of {} differs",
                a.name
            );
            let bits_of = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits_of(&a.scales),
                bits_of(&b.scales),
                "{name}: scales of {}",
                a.name
            );
        }
    }
}

/// Embeds every shared sentence: token counts must be exact, and every cosine against the
/// fp32 reference at least `min_cosine`. Returns the worst and mean cosine.
fn embed_all_and_compare(provider: &OnnxEmbeddingProvider, min_cosine: f64) -> (f64, f64) {
    let sentences = sentences();
    let reference = reference("tiny-embeddinggemma.st.json");
    let crate::Fidelity {
        worst,
        worst_id,
        mean,
    } = crate::fidelity(provider, &sentences, &reference);
    eprintln!(
        "{} sentences: worst cosine {worst:.6} ({worst_id}), mean {mean:.6}",
        sentences.len()
    );
    assert!(
        worst >= min_cosine,
        "{worst_id}: cosine {worst} below {min_cosine}"
    );
    (worst, mean)
}

#[test]
fn the_quantised_folder_loads_and_keeps_the_vectors() {
    let model = tiny_gemma_dir();
    let out = temp_dir("q8-folder");
    let started = Instant::now();
    let report = quantize_folder(&model, out.path(), &QuantizeRecipe::default()).unwrap();
    eprintln!(
        "quantised the tiny double in {:.0} ms ({} MatMuls, {:.1} MB -> {:.1} MB)",
        started.elapsed().as_secs_f64() * 1000.0,
        report.quantized.len(),
        report.source_bytes as f64 / 1e6,
        report.output_bytes as f64 / 1e6
    );
    assert_eq!(report.quantized.len(), TINY_MATMULS);
    assert!(report.output_bytes < report.source_bytes);
    for file in [
        Q8_FILE,
        "model_q8.onnx_data",
        "tokenizer.json",
        "config.json",
        "config_sentence_transformers.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        assert!(
            out.path().join(file).is_file(),
            "{file} missing from the output"
        );
    }
    assert!(
        !out.path().join("model.onnx").exists(),
        "the fp32 graph is not copied"
    );

    let provider = OnnxEmbeddingProvider::load(
        crate::load_options(out.path().to_str().unwrap())
            .with_variant(OnnxVariant::Q8)
            .with_intra_threads(1),
    )
    .unwrap();
    embed_all_and_compare(&provider, MIN_Q8_COSINE);

    // The Dense heads kept fp32, the rest at 4 bits in blocks of 16: a mixed recipe loads too.
    let mixed = temp_dir("q8-mixed");
    let recipe = QuantizeRecipe::default()
        .keep_fp32("/d?/MatMul")
        .with_override(NodeOverride::new("*/mlp/*").bits(4).block_size(16));
    let report = quantize_folder(&model, mixed.path(), &recipe).unwrap();
    assert_eq!(report.kept_fp32, vec!["/d1/MatMul", "/d2/MatMul"]);
    assert_eq!(report.quantized.len(), TINY_MATMULS - 2);
    let nodes = read_matmul_nbits(&mixed.path().join(Q8_FILE)).unwrap();
    let mlp = nodes
        .iter()
        .find(|n| n.name == "/t/layers.3/mlp/up_proj/MatMul_Q4")
        .unwrap();
    assert_eq!((mlp.bits, mlp.block_size), (4, 16));
    OnnxEmbeddingProvider::load(
        crate::load_options(mixed.path().to_str().unwrap())
            .with_variant(OnnxVariant::Q8)
            .with_intra_threads(1),
    )
    .unwrap();
}

#[test]
fn the_embedding_table_can_be_quantised_too() {
    let model = tiny_gemma_dir();
    let out = temp_dir("q8-gather");
    let recipe = QuantizeRecipe::default().with_embedding_table(Some(32));
    let report = quantize_folder(&model, out.path(), &recipe).unwrap();
    assert_eq!(report.embedding.as_deref(), Some("t.embed_tokens.weight"));
    // 262,144 × 32 fp32 (33.5 MB) becomes 8.4 MB of uint8 plus 1 MB of scales.
    assert!(
        report.output_bytes < 12_000_000,
        "{} bytes",
        report.output_bytes
    );
    let provider = OnnxEmbeddingProvider::load(
        crate::load_options(out.path().to_str().unwrap())
            .with_variant(OnnxVariant::Q8)
            .with_intra_threads(1),
    )
    .unwrap();
    embed_all_and_compare(&provider, MIN_Q8_GATHER_COSINE);
}

fn mtime(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn q8_without_model_q8_quantises_at_first_load_and_caches_beside_the_model() {
    let dir = linked_double("q8-lazy");
    let load = || {
        OnnxEmbeddingProvider::load(
            crate::load_options(dir.path().to_str().unwrap())
                .with_variant(OnnxVariant::Q8)
                .with_intra_threads(1),
        )
        .unwrap()
    };
    let provider = load();
    let root = dir.path().join(BESIDE_DIR);
    let entries: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(entries.len(), 1, "one cache entry: {entries:?}");
    let graph = entries[0].join(Q8_FILE);
    let before = mtime(&graph);
    embed_all_and_compare(&provider, MIN_Q8_COSINE);
    drop(provider);
    let _again = load();
    assert_eq!(mtime(&graph), before, "the second load rebuilt the cache");
}

#[test]
fn the_cache_is_reused_and_rebuilt_when_stale_or_corrupt() {
    let dir = linked_double("q8-cache");
    let source = dir.path().join("model.onnx");
    let data = dir.path().join("model.onnx_data");
    let roots = [dir.path().join("cache")];
    let recipe = QuantizeRecipe::default();

    let first = cached_q8(&source, Some(&data), &roots, &recipe).unwrap();
    assert!(first.built);
    assert!(first.dir.starts_with(&roots[0]));
    let reused = cached_q8(&source, Some(&data), &roots, &recipe).unwrap();
    assert!(!reused.built, "a valid entry is reused");
    assert_eq!(
        reused,
        akidb_embedding_onnx::quantize::cache::CacheEntry {
            built: false,
            ..first.clone()
        }
    );

    // Truncated weights: rebuilt, same key.
    let full = std::fs::metadata(&first.data).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&first.data)
        .unwrap()
        .set_len(full / 2)
        .unwrap();
    let rebuilt = cached_q8(&source, Some(&data), &roots, &recipe).unwrap();
    assert!(rebuilt.built, "a truncated entry must be rebuilt");
    assert_eq!(std::fs::metadata(&rebuilt.data).unwrap().len(), full);

    // Same size, one byte changed: rebuilt.
    let mut bytes = std::fs::read(&rebuilt.data).unwrap();
    bytes[1000] ^= 0x55;
    std::fs::write(&rebuilt.data, &bytes).unwrap();
    assert!(
        cached_q8(&source, Some(&data), &roots, &recipe)
            .unwrap()
            .built
    );

    // Manifest gone: rebuilt.
    std::fs::remove_file(rebuilt.dir.join("manifest.json")).unwrap();
    assert!(
        cached_q8(&source, Some(&data), &roots, &recipe)
            .unwrap()
            .built
    );

    // The source changes (one weight byte): a new entry replaces the old one.
    let mut weights = std::fs::read(&data).unwrap();
    std::fs::remove_file(&data).unwrap();
    let last = weights.len() - 1;
    weights[last] ^= 0x01;
    std::fs::write(&data, &weights).unwrap();
    let changed = cached_q8(&source, Some(&data), &roots, &recipe).unwrap();
    assert!(changed.built);
    assert_ne!(
        changed.dir, first.dir,
        "the key follows the source's checksum"
    );
    assert!(!first.dir.exists(), "the outdated entry is removed");

    // Another recipe is another entry.
    let other = cached_q8(
        &source,
        Some(&data),
        &roots,
        &QuantizeRecipe::default().with_block_size(16),
    )
    .unwrap();
    assert!(other.built);
    assert_ne!(other.dir, changed.dir);
}

#[test]
fn a_read_only_model_folder_sends_the_cache_to_the_cache_folder() {
    use std::os::unix::fs::PermissionsExt;
    let dir = linked_double("q8-readonly");
    let cache = temp_dir("q8-readonly-cache");
    let beside = dir.path().join(BESIDE_DIR);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let entry = cached_q8(
        &dir.path().join("model.onnx"),
        Some(&dir.path().join("model.onnx_data")),
        &[beside.clone(), cache.path().to_path_buf()],
        &QuantizeRecipe::default(),
    );
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let entry = entry.unwrap();
    assert!(entry.built);
    assert!(
        entry.dir.starts_with(cache.path()),
        "{}",
        entry.dir.display()
    );
    assert!(
        !beside.exists(),
        "nothing is written into a read-only folder"
    );
}

#[test]
fn concurrent_first_loads_share_one_valid_entry() {
    let dir = linked_double("q8-concurrent");
    let roots = [dir.path().join("cache")];
    let entries: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    cached_q8(
                        &dir.path().join("model.onnx"),
                        Some(&dir.path().join("model.onnx_data")),
                        &roots,
                        &QuantizeRecipe::default(),
                    )
                    .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(entries.windows(2).all(|w| w[0].dir == w[1].dir));
    let left: Vec<_> = std::fs::read_dir(&roots[0])
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "temporary folders left behind: {left:?}");
    let reused = cached_q8(
        &dir.path().join("model.onnx"),
        Some(&dir.path().join("model.onnx_data")),
        &roots,
        &QuantizeRecipe::default(),
    )
    .unwrap();
    assert!(!reused.built, "the installed entry is valid");
}

#[test]
fn bad_inputs_give_typed_errors() {
    let dir = linked_double("q8-errors");
    let out = temp_dir("q8-errors-out");
    // Nothing left to quantise.
    let err = quantize_folder(
        dir.path(),
        out.path(),
        &QuantizeRecipe::default().keep_fp32("*"),
    )
    .unwrap_err();
    assert!(
        matches!(err, QuantizeError::NothingToQuantize { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("keeps every MatMul") && err.to_string().contains("44 of them"),
        "{err}"
    );
    // A bad recipe.
    let err = quantize_folder(
        dir.path(),
        out.path(),
        &QuantizeRecipe::default().with_bits(2),
    )
    .unwrap_err();
    assert!(matches!(err, QuantizeError::Recipe(_)), "{err}");
    // No model folder / no graph.
    let err = quantize_folder(
        &dir.path().join("nope"),
        out.path(),
        &QuantizeRecipe::default(),
    )
    .unwrap_err();
    assert!(matches!(err, QuantizeError::Missing { .. }), "{err}");
    let empty = temp_dir("q8-errors-empty");
    let err = quantize_folder(empty.path(), out.path(), &QuantizeRecipe::default()).unwrap_err();
    assert!(
        matches!(err, QuantizeError::Missing { .. }) && err.to_string().contains("model.onnx"),
        "{err}"
    );
    // Not an ONNX file.
    std::fs::write(
        empty.path().join("model.onnx"),
        b"\xff\xff\xff not protobuf",
    )
    .unwrap();
    let err = quantize_folder(empty.path(), out.path(), &QuantizeRecipe::default()).unwrap_err();
    assert!(matches!(err, QuantizeError::InvalidModel { .. }), "{err}");
    // Missing weights file.
    std::fs::remove_file(dir.path().join("model.onnx_data")).unwrap();
    let err = quantize_folder(dir.path(), out.path(), &QuantizeRecipe::default()).unwrap_err();
    assert!(
        matches!(err, QuantizeError::Missing { .. }) && err.to_string().contains("model.onnx_data"),
        "{err}"
    );
    // Truncated weights file.
    let original = tiny_gemma_dir().join("model.onnx_data");
    let bytes = std::fs::read(original).unwrap();
    std::fs::write(
        dir.path().join("model.onnx_data"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    let err = quantize_folder(dir.path(), out.path(), &QuantizeRecipe::default()).unwrap_err();
    assert!(err.to_string().contains("too short"), "{err}");
    assert!(
        !out.path().join(Q8_FILE).exists() && !out.path().join("model_q8.onnx_data").exists(),
        "a failed run leaves no output"
    );
    // Through the loader: a typed load error, not a silent fallback to fp32.
    let err = OnnxEmbeddingProvider::load(
        crate::load_options(dir.path().to_str().unwrap()).with_variant(OnnxVariant::Q8),
    )
    .unwrap_err();
    assert!(err.to_string().contains("q8 quantisation failed"), "{err}");
}
