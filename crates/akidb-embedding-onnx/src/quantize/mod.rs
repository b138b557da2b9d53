//! The project's own `q8` quantiser: rewrites an fp32 ONNX graph's `MatMul`s with constant
//! weights into ONNX Runtime's block-wise `com.microsoft::MatMulNBits`.
//!
//! ```no_run
//! use akidb_embedding_onnx::quantize::{quantize_folder, QuantizeRecipe};
//!
//! # fn main() -> Result<(), akidb_embedding_onnx::quantize::QuantizeError> {
//! // 8-bit weights in blocks of 32 along K, accuracy level 4; the Dense heads stay fp32.
//! let recipe = QuantizeRecipe::default().keep_fp32("/d1/*").keep_fp32("/d2/*");
//! let report = quantize_folder(
//!     "models/embeddinggemma-300m-ONNX".as_ref(),
//!     "models/embeddinggemma-300m-q8".as_ref(),
//!     &recipe,
//! )?;
//! eprintln!("{} MatMuls quantised", report.quantized.len());
//! # Ok(())
//! # }
//! ```
//!
//! What is written matches ONNX Runtime's own Python quantiser
//! (`onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer` with
//! `is_symmetric=True` and the same bits, block size and accuracy level) byte for byte: the
//! packed weights, the scales, the node (`<name>_Q<bits>`, inputs `[A, <B>_Q<bits>, <B>_scales]`,
//! attributes `K`, `N`, `bits`, `block_size`, `accuracy_level` unless 0) and the
//! `com.microsoft` opset import. See [`pack`] for the arithmetic.
//!
//! Rewritten: every top-level `MatMul` whose B input is a 2-D fp32 initializer, unless a
//! [`QuantizeRecipe::keep_fp32`] pattern names it. Optionally the token-embedding `Gather`
//! becomes `com.microsoft::GatherBlockQuantized` (8-bit, [`QuantizeRecipe::with_embedding_table`]).
//! Everything else, subgraphs of control-flow nodes included, is copied unchanged.
//!
//! Memory: the graph (`model.onnx`, a few MB) is held in memory; weights are streamed from the
//! source's `model.onnx_data` one tensor at a time (the embedding table in row chunks), and
//! unquantised tensors are copied in 1 MiB pieces, so a 1.2 GB model never has two copies in
//! memory. Tensors of 1 MiB or more start at 64 KiB offsets in the output `_data` file so ONNX
//! Runtime can map them.
//!
//! [`cache`] builds on this: `OnnxVariant::Q8` quantises a folder's fp32 graph at first load
//! and keeps the result.

pub mod cache;
pub mod fuse;
mod graph;
pub mod pack;
pub mod proto;
mod rewrite;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use rewrite::{QuantizedMatMul, is_fused, quantize_file, read_matmul_nbits, rewrite_file};

/// The graph file a quantised folder holds (`OnnxVariant::Q8` loads it).
pub const Q8_FILE: &str = "model_q8.onnx";

/// How to quantise: bits, block size and accuracy level, per-node overrides, nodes kept in
/// fp32, and the optional quantised embedding table.
///
/// The default is 8 bits, blocks of 32, accuracy level 4 (int8 activations on CPU), every
/// constant-weight `MatMul` quantised, the embedding table kept fp32.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantizeRecipe {
    /// Bits per weight: 8 or 4.
    pub bits: u32,
    /// Weights per block along K (one scale each): a power of two, at least 16.
    pub block_size: usize,
    /// `MatMulNBits` accuracy level: 0 (unset: the kernel's default), 1 fp32, 2 fp16, 3 bf16,
    /// 4 int8 activations. 0 writes no attribute, as ONNX Runtime's quantiser does.
    pub accuracy_level: u32,
    /// Per-node settings, by node-name pattern; the first matching rule wins.
    #[serde(default)]
    pub overrides: Vec<NodeOverride>,
    /// Node-name patterns of `MatMul`s to keep in fp32.
    #[serde(default)]
    pub keep_fp32: Vec<String>,
    /// Quantise the token-embedding table (the `Gather` of a 2-D fp32 initializer with a
    /// `[vocab, hidden]` shape) into `GatherBlockQuantized`, 8 bits, with this block size
    /// along the hidden axis. `None` keeps it fp32.
    #[serde(default)]
    pub embedding_block_size: Option<usize>,
}

/// Settings for the `MatMul`s whose node name matches `pattern`.
///
/// Patterns are globs over the whole node name: `*` matches any run of characters, `?` one
/// character; e.g. `/model/layers.0/*`, `*/mlp/down_proj/MatMul`, `*self_attn*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeOverride {
    /// Glob over node names.
    pub pattern: String,
    /// Bits for matching nodes (default: the recipe's).
    #[serde(default)]
    pub bits: Option<u32>,
    /// Block size for matching nodes (default: the recipe's).
    #[serde(default)]
    pub block_size: Option<usize>,
    /// Accuracy level for matching nodes (default: the recipe's).
    #[serde(default)]
    pub accuracy_level: Option<u32>,
}

impl NodeOverride {
    /// A rule for nodes matching `pattern` that changes nothing yet.
    pub fn new(pattern: impl Into<String>) -> Self {
        Self {
            pattern: pattern.into(),
            bits: None,
            block_size: None,
            accuracy_level: None,
        }
    }

    /// Sets the block size of matching nodes.
    #[must_use]
    pub fn block_size(mut self, block_size: usize) -> Self {
        self.block_size = Some(block_size);
        self
    }

    /// Sets the bits of matching nodes.
    #[must_use]
    pub fn bits(mut self, bits: u32) -> Self {
        self.bits = Some(bits);
        self
    }

    /// Sets the accuracy level of matching nodes.
    #[must_use]
    pub fn accuracy_level(mut self, level: u32) -> Self {
        self.accuracy_level = Some(level);
        self
    }
}

impl QuantizeRecipe {
    /// The recipe of the `q8` variant ([`crate::OnnxVariant::Q8`], and the `quantize` example
    /// without recipe options), chosen by measurement on the real EmbeddingGemma-300m (every
    /// recipe measured, with its speed and fidelity, is in `benches/quality/recipes.json`):
    ///
    /// - 8 bits, accuracy level 4 (int8 activations: the only fast `MatMulNBits` path on CPU);
    /// - blocks of 128 along K, which keep the kernels fast on long texts and batches;
    /// - blocks of 16 for the MLP's `down_proj` and 32 for `v_proj`, where most of the error
    ///   of coarse blocks comes from;
    /// - of the two Dense heads after pooling (`/d1`, `/d2`: 2 % of the weights, but alone a
    ///   third of block-32's error), the first kept in fp32 and the second in blocks of 16:
    ///   quantising `/d2` leaves the worst cosine where it was (0.99759 against 0.99760) and
    ///   saves 5 MiB of resident memory, while quantising `/d1` costs 0.0004 of it;
    /// - the token-embedding table in 8 bits, blocks of 32 (`GatherBlockQuantized`), which
    ///   shrinks the files from 1.2 GB to 355 MB at no measured cost in fidelity.
    ///
    /// Node-name patterns follow the module names of the `transformers` ONNX export; in a graph
    /// whose names differ, those nodes fall back to the recipe's blocks of 128.
    pub fn q8() -> Self {
        Self {
            bits: 8,
            block_size: 128,
            accuracy_level: 4,
            overrides: vec![
                NodeOverride::new("*/mlp/down_proj/MatMul").block_size(16),
                NodeOverride::new("*/self_attn/v_proj/MatMul").block_size(32),
                NodeOverride::new("/d2/MatMul").block_size(16),
            ],
            keep_fp32: vec!["/d1/MatMul".to_string()],
            embedding_block_size: Some(32),
        }
    }
}

impl Default for QuantizeRecipe {
    fn default() -> Self {
        Self {
            bits: 8,
            block_size: 32,
            accuracy_level: 4,
            overrides: Vec::new(),
            keep_fp32: Vec::new(),
            embedding_block_size: None,
        }
    }
}

/// The settings one `MatMul` is quantised with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeSettings {
    /// Bits per weight.
    pub bits: u32,
    /// Weights per block along K.
    pub block_size: usize,
    /// `MatMulNBits` accuracy level (0: attribute not written).
    pub accuracy_level: u32,
}

impl QuantizeRecipe {
    /// Sets the bits per weight (8 or 4).
    #[must_use]
    pub fn with_bits(mut self, bits: u32) -> Self {
        self.bits = bits;
        self
    }

    /// Sets the default block size.
    #[must_use]
    pub fn with_block_size(mut self, block_size: usize) -> Self {
        self.block_size = block_size;
        self
    }

    /// Sets the default accuracy level.
    #[must_use]
    pub fn with_accuracy_level(mut self, level: u32) -> Self {
        self.accuracy_level = level;
        self
    }

    /// Adds a per-node rule (rules are tried in the order they were added).
    #[must_use]
    pub fn with_override(mut self, rule: NodeOverride) -> Self {
        self.overrides.push(rule);
        self
    }

    /// Keeps the `MatMul`s whose node name matches `pattern` in fp32.
    #[must_use]
    pub fn keep_fp32(mut self, pattern: impl Into<String>) -> Self {
        self.keep_fp32.push(pattern.into());
        self
    }

    /// Quantises the token-embedding table into `GatherBlockQuantized` (8 bits, blocks of
    /// `block_size` along the hidden axis); `None` keeps it fp32.
    #[must_use]
    pub fn with_embedding_table(mut self, block_size: Option<usize>) -> Self {
        self.embedding_block_size = block_size;
        self
    }

    /// Checks bits, block sizes and accuracy levels of the recipe and of every rule.
    pub fn validate(&self) -> Result<(), QuantizeError> {
        let check = |what: &str, settings: NodeSettings| -> Result<(), QuantizeError> {
            if settings.bits != 4 && settings.bits != 8 {
                return Err(QuantizeError::Recipe(format!(
                    "{what}: bits must be 4 or 8, not {}",
                    settings.bits
                )));
            }
            check_block_size(what, settings.block_size)?;
            if settings.accuracy_level > 4 {
                return Err(QuantizeError::Recipe(format!(
                    "{what}: accuracy level must be 0 to 4, not {}",
                    settings.accuracy_level
                )));
            }
            Ok(())
        };
        check("recipe", self.defaults())?;
        for rule in &self.overrides {
            check(
                &format!("override `{}`", rule.pattern),
                self.apply(rule, self.defaults()),
            )?;
        }
        if let Some(block) = self.embedding_block_size {
            check_block_size("embedding table", block)?;
        }
        Ok(())
    }

    fn defaults(&self) -> NodeSettings {
        NodeSettings {
            bits: self.bits,
            block_size: self.block_size,
            accuracy_level: self.accuracy_level,
        }
    }

    fn apply(&self, rule: &NodeOverride, base: NodeSettings) -> NodeSettings {
        NodeSettings {
            bits: rule.bits.unwrap_or(base.bits),
            block_size: rule.block_size.unwrap_or(base.block_size),
            accuracy_level: rule.accuracy_level.unwrap_or(base.accuracy_level),
        }
    }

    /// The settings for the `MatMul` named `node`, or `None` when it stays fp32.
    pub fn settings_for(&self, node: &str) -> Option<NodeSettings> {
        if self.keep_fp32.iter().any(|p| glob_match(p, node)) {
            return None;
        }
        let base = self.defaults();
        Some(
            self.overrides
                .iter()
                .find(|rule| glob_match(&rule.pattern, node))
                .map_or(base, |rule| self.apply(rule, base)),
        )
    }
}

fn check_block_size(what: &str, block_size: usize) -> Result<(), QuantizeError> {
    if block_size < 16 || !block_size.is_power_of_two() {
        return Err(QuantizeError::Recipe(format!(
            "{what}: block size must be a power of two of at least 16, not {block_size}"
        )));
    }
    Ok(())
}

/// Whole-string glob: `*` any run of characters, `?` any one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    pi = star_p + 1;
                    ti = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == '*')
}

/// What a quantisation did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizeReport {
    /// The graph written.
    pub output: PathBuf,
    /// Each `MatMul` rewritten, with its settings.
    pub quantized: Vec<QuantizedNodeInfo>,
    /// `MatMul`s with a constant weight left in fp32 by the recipe.
    pub kept_fp32: Vec<String>,
    /// The embedding `Gather` rewritten into `GatherBlockQuantized`, if any.
    pub embedding: Option<String>,
    /// What graph fusion did, when it ran ([`fuse`]).
    #[serde(default)]
    pub fused: Option<fuse::FuseReport>,
    /// Bytes of the source graph and weights.
    pub source_bytes: u64,
    /// Bytes of the output graph and weights.
    pub output_bytes: u64,
    /// Wall time.
    #[serde(with = "duration_ms")]
    pub elapsed: Duration,
}

/// One rewritten `MatMul`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantizedNodeInfo {
    /// The original node name.
    pub node: String,
    /// Its weight initializer.
    pub weight: String,
    /// Rows of the weight (input features).
    pub k: usize,
    /// Columns of the weight (output features).
    pub n: usize,
    /// Settings used.
    pub settings: NodeSettings,
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().try_into().unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Why quantising failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuantizeError {
    /// The recipe is not valid (bits, block size, accuracy level).
    #[error("invalid quantisation recipe: {0}")]
    Recipe(String),
    /// A file or folder the quantiser needs is missing.
    #[error("missing {what}: {}", .path.display())]
    Missing {
        /// What was expected there.
        what: &'static str,
        /// Where it was expected.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The graph is not a valid ONNX model, or not one this quantiser can rewrite.
    #[error("{}: {reason}", .path.display())]
    InvalidModel {
        /// The graph file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The graph has no `MatMul` with a constant 2-D fp32 weight the recipe quantises.
    #[error(
        "{}: nothing to quantise: {reason} (the q8 variant needs MatMuls with constant fp32 weights)",
        .path.display()
    )]
    NothingToQuantize {
        /// The graph file.
        path: PathBuf,
        /// What the graph holds instead.
        reason: String,
    },
}

impl QuantizeError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn invalid(path: &Path, reason: impl Into<String>) -> Self {
        Self::InvalidModel {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

impl From<QuantizeError> for akidb_embedding_core::EmbeddingError {
    fn from(e: QuantizeError) -> Self {
        let path = match &e {
            QuantizeError::Missing { path, .. }
            | QuantizeError::Io { path, .. }
            | QuantizeError::InvalidModel { path, .. }
            | QuantizeError::NothingToQuantize { path, .. } => path.display().to_string(),
            QuantizeError::Recipe(_) => "q8 recipe".to_string(),
        };
        Self::model_load(path, format!("q8 quantisation failed: {e}"))
    }
}

/// Finds the fp32 graph of a model folder: `model.onnx` at the root or under `onnx/`.
pub fn find_fp32_graph(model_dir: &Path) -> Result<PathBuf, QuantizeError> {
    if !model_dir.is_dir() {
        return Err(QuantizeError::Missing {
            what: "model folder",
            path: model_dir.to_path_buf(),
        });
    }
    [
        model_dir.join("model.onnx"),
        model_dir.join("onnx").join("model.onnx"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .ok_or_else(|| QuantizeError::Missing {
        what: "fp32 graph (model.onnx at the folder's root or under onnx/)",
        path: model_dir.join("model.onnx"),
    })
}

/// Quantises a model folder into a new loadable folder: `output_dir/model_q8.onnx` and
/// `model_q8.onnx_data`, plus every non-ONNX file of `model_dir` (tokenizer, configs,
/// `1_Pooling/…`), so `LoadOptions::new(output_dir).with_variant(OnnxVariant::Q8)` loads it.
pub fn quantize_folder(
    model_dir: &Path,
    output_dir: &Path,
    recipe: &QuantizeRecipe,
) -> Result<QuantizeReport, QuantizeError> {
    recipe.validate()?;
    let source = find_fp32_graph(model_dir)?;
    std::fs::create_dir_all(output_dir).map_err(|e| QuantizeError::io(output_dir, e))?;
    let report = quantize_file(&source, &output_dir.join(Q8_FILE), recipe)?;
    copy_support_files(model_dir, output_dir)?;
    Ok(report)
}

/// Fuses a model folder's graph into a new loadable folder (see [`fuse`]): with `quantize`,
/// the fp32 graph is also quantised and written as `output_dir/model_q8.onnx` (the `q8`
/// variant); without, the folder's graph for `variant_file` (`model.onnx` for fp32) is fused
/// and written under the same name. The folder's other files are copied, so
/// `LoadOptions::new(output_dir)` loads it; the written graph is marked as fused, so loading
/// it never fuses it again.
pub fn fuse_folder(
    model_dir: &Path,
    output_dir: &Path,
    variant_file: &str,
    quantize: Option<&QuantizeRecipe>,
    fuse: &fuse::FuseRecipe,
) -> Result<QuantizeReport, QuantizeError> {
    let (source, name) = match quantize {
        Some(recipe) => {
            recipe.validate()?;
            (find_fp32_graph(model_dir)?, Q8_FILE.to_string())
        }
        None => {
            let source = [
                model_dir.join(variant_file),
                model_dir.join("onnx").join(variant_file),
            ]
            .into_iter()
            .find(|p| p.is_file())
            .ok_or_else(|| QuantizeError::Missing {
                what: "ONNX graph",
                path: model_dir.join(variant_file),
            })?;
            (source, variant_file.to_string())
        }
    };
    std::fs::create_dir_all(output_dir).map_err(|e| QuantizeError::io(output_dir, e))?;
    let output = output_dir.join(&name);
    let report = rewrite_file(&source, &output, quantize, Some(fuse))?;
    // A graph that keeps every weight inline (MiniLM's) needs no weights file; an empty one
    // would read as a truncated download.
    let data = output_dir.join(format!("{name}_data"));
    if std::fs::metadata(&data).is_ok_and(|m| m.len() == 0) {
        std::fs::remove_file(&data).map_err(|e| QuantizeError::io(&data, e))?;
    }
    copy_support_files(model_dir, output_dir)?;
    Ok(report)
}

/// Copies every file of `from` (recursively) that is not an ONNX graph or weights file, and
/// not hidden, into `to`, keeping relative paths. Nothing is copied onto itself.
fn copy_support_files(from: &Path, to: &Path) -> Result<(), QuantizeError> {
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same(from, to) {
        return Ok(());
    }
    let entries = std::fs::read_dir(from).map_err(|e| QuantizeError::io(from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| QuantizeError::io(from, e))?;
        let name = entry.file_name();
        let name_text = name.to_string_lossy();
        if name_text.starts_with('.')
            || name_text.ends_with(".onnx")
            || name_text.contains(".onnx_data")
        {
            continue;
        }
        let path = entry.path();
        let target = to.join(&name);
        if path.is_dir() {
            if !same(&path, to) {
                copy_support_files(&path, &target)?;
            }
        } else {
            // Folders are made only for the files they receive (the hub layout's `onnx/`
            // holds nothing to copy).
            std::fs::create_dir_all(to).map_err(|e| QuantizeError::io(to, e))?;
            std::fs::copy(&path, &target).map_err(|e| QuantizeError::io(&target, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        assert!(glob_match("*", ""));
        assert!(glob_match("/d1/*", "/d1/MatMul"));
        assert!(!glob_match("/d1/*", "/t/d1/MatMul"));
        assert!(glob_match(
            "*/mlp/*_proj/MatMul",
            "/t/layers.0/mlp/down_proj/MatMul"
        ));
        assert!(glob_match(
            "/t/layers.?/*",
            "/t/layers.5/self_attn/q_proj/MatMul"
        ));
        assert!(!glob_match("/t/layers.?/*", "/t/layers.10/x"));
        assert!(!glob_match("abc", "abcd"));
        assert!(glob_match("a*c*e", "abcdeXe"));
    }

    #[test]
    fn the_q8_recipe_sets_each_node_group_as_measured() {
        let q8 = QuantizeRecipe::q8();
        let block = |name: &str| q8.settings_for(name).map(|s| (s.bits, s.block_size));
        let layer = "/model/layers.3";
        assert_eq!(
            block(&format!("{layer}/mlp/up_proj/MatMul")),
            Some((8, 128))
        );
        assert_eq!(
            block(&format!("{layer}/mlp/down_proj/MatMul")),
            Some((8, 16))
        );
        assert_eq!(
            block(&format!("{layer}/self_attn/v_proj/MatMul")),
            Some((8, 32))
        );
        // The first Dense head stays fp32; the second is quantised in blocks of 16.
        assert_eq!(block("/d1/MatMul"), None);
        assert_eq!(block("/d2/MatMul"), Some((8, 16)));
        assert_eq!(q8.embedding_block_size, Some(32));
        assert!(
            q8.settings_for("/d2/MatMul")
                .is_some_and(|s| s.accuracy_level == 4)
        );
    }

    #[test]
    fn first_matching_override_wins_and_keep_fp32_beats_it() {
        let recipe = QuantizeRecipe::default()
            .with_override(NodeOverride::new("*/mlp/*").block_size(128))
            .with_override(NodeOverride::new("*").bits(4))
            .keep_fp32("/d?/*");
        let mlp = recipe
            .settings_for("/t/layers.0/mlp/up_proj/MatMul")
            .unwrap();
        assert_eq!((mlp.bits, mlp.block_size, mlp.accuracy_level), (8, 128, 4));
        let other = recipe
            .settings_for("/t/layers.0/self_attn/q_proj/MatMul")
            .unwrap();
        assert_eq!((other.bits, other.block_size), (4, 32));
        assert_eq!(recipe.settings_for("/d1/MatMul"), None);
    }

    #[test]
    fn bad_recipes_are_refused_with_the_reason() {
        let err = |r: QuantizeRecipe| r.validate().unwrap_err().to_string();
        assert!(err(QuantizeRecipe::default().with_bits(3)).contains("bits must be 4 or 8"));
        assert!(err(QuantizeRecipe::default().with_block_size(48)).contains("power of two"));
        assert!(err(QuantizeRecipe::default().with_block_size(8)).contains("at least 16"));
        assert!(err(QuantizeRecipe::default().with_accuracy_level(5)).contains("0 to 4"));
        let text =
            err(QuantizeRecipe::default()
                .with_override(NodeOverride::new("*/mlp/*").block_size(20)));
        assert!(text.contains("*/mlp/*"), "{text}");
        assert!(
            err(QuantizeRecipe::default().with_embedding_table(Some(10))).contains("embedding")
        );
        QuantizeRecipe::default().validate().unwrap();
        QuantizeRecipe::default()
            .with_bits(4)
            .with_block_size(128)
            .validate()
            .unwrap();
    }

    #[test]
    fn support_files_are_copied_without_graphs_weights_or_hidden_files() {
        let base = std::env::temp_dir().join(format!("akidb-q8-copy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let from = base.join("from");
        for file in [
            "tokenizer.json",
            "1_Pooling/config.json",
            "onnx/model.onnx",
            "onnx/model.onnx_data",
            "model_q4.onnx",
            ".akidb-q8/x/model_q8.onnx",
        ] {
            let path = from.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, file).unwrap();
        }
        let to = base.join("to");
        copy_support_files(&from, &to).unwrap();
        assert_eq!(
            std::fs::read(to.join("tokenizer.json")).unwrap(),
            b"tokenizer.json"
        );
        assert!(to.join("1_Pooling/config.json").is_file());
        assert!(!to.join("onnx").exists());
        assert!(!to.join("model_q4.onnx").exists());
        assert!(!to.join(".akidb-q8").exists());
        // Into a folder inside the source: no endless recursion.
        copy_support_files(&from, &from.join("out")).unwrap();
        assert!(from.join("out/tokenizer.json").is_file());
        assert!(!from.join("out/out").exists());
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn recipes_round_trip_through_json() {
        let recipe = QuantizeRecipe::default()
            .with_override(NodeOverride::new("*/mlp/*").block_size(64))
            .keep_fp32("/d1/*")
            .with_embedding_table(Some(32));
        let json = serde_json::to_string(&recipe).unwrap();
        assert_eq!(
            serde_json::from_str::<QuantizeRecipe>(&json).unwrap(),
            recipe
        );
        let minimal: QuantizeRecipe =
            serde_json::from_str(r#"{"bits":4,"block_size":64,"accuracy_level":0}"#).unwrap();
        assert_eq!(minimal.bits, 4);
        assert!(minimal.overrides.is_empty());
    }
}
