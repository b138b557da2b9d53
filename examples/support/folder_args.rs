//! The command line the `quantize` and `fuse` examples share (`#[path]`-included): the folder
//! read and the folder written, the quantisation recipe options, and how a bad command line
//! ends the program.

use std::path::PathBuf;
use std::process::ExitCode;

use akidb_embedding_onnx::quantize::{NodeOverride, QuantizeRecipe};

/// The model folder read and the folder written.
#[derive(clap::Args)]
pub struct Folders {
    /// Model folder holding the fp32 graph (at its root or under onnx/) and its tokenizer.
    #[arg(long)]
    pub model: PathBuf,
    /// Folder to write the graph, its weights and the tokenizer/config files into.
    #[arg(long)]
    pub output: PathBuf,
}

/// Quantisation recipe options. Without any, the `q8` variant's own recipe
/// (`QuantizeRecipe::q8`); any of them makes a uniform recipe from the options instead.
#[derive(clap::Args)]
pub struct RecipeArgs {
    /// Bits per weight: 8 or 4 (default 8).
    #[arg(long)]
    pub bits: Option<u32>,
    /// Weights per block along K (a power of two, at least 16; default 32 when uniform).
    #[arg(long)]
    pub block_size: Option<usize>,
    /// MatMulNBits accuracy level: 0 (unset) to 4 (int8 activations; the default).
    #[arg(long)]
    pub accuracy_level: Option<u32>,
    /// Keep the MatMuls whose node name matches this glob in fp32 (repeatable).
    #[arg(long = "keep-fp32", value_name = "PATTERN")]
    pub keep_fp32: Vec<String>,
    /// Block size for nodes matching a glob, as PATTERN=SIZE (repeatable, first match wins).
    #[arg(long = "block-size-for", value_name = "PATTERN=SIZE")]
    pub block_size_for: Vec<String>,
    /// Quantise the token-embedding table (8 bits, blocks of this size along the hidden axis).
    #[arg(long)]
    pub embedding_block_size: Option<usize>,
    /// A JSON QuantizeRecipe; replaces the recipe options above.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
}

impl RecipeArgs {
    /// Whether no recipe option was given.
    pub fn is_empty(&self) -> bool {
        self.recipe.is_none()
            && self.bits.is_none()
            && self.block_size.is_none()
            && self.accuracy_level.is_none()
            && self.keep_fp32.is_empty()
            && self.block_size_for.is_empty()
            && self.embedding_block_size.is_none()
    }

    /// The recipe the options describe, validated; the reason when they describe none.
    pub fn recipe(&self) -> Result<QuantizeRecipe, String> {
        let recipe = if let Some(path) = &self.recipe {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
        } else if self.is_empty() {
            QuantizeRecipe::q8()
        } else {
            let uniform = QuantizeRecipe::default();
            let mut recipe = uniform
                .clone()
                .with_bits(self.bits.unwrap_or(uniform.bits))
                .with_block_size(self.block_size.unwrap_or(uniform.block_size))
                .with_accuracy_level(self.accuracy_level.unwrap_or(uniform.accuracy_level))
                .with_embedding_table(self.embedding_block_size);
            for pattern in &self.keep_fp32 {
                recipe = recipe.keep_fp32(pattern);
            }
            for rule in &self.block_size_for {
                let (pattern, size) = rule
                    .rsplit_once('=')
                    .ok_or_else(|| format!("--block-size-for wants PATTERN=SIZE, got `{rule}`"))?;
                let size = size
                    .parse()
                    .map_err(|_| format!("--block-size-for: `{size}` is not a number"))?;
                recipe = recipe.with_override(NodeOverride::new(pattern).block_size(size));
            }
            recipe
        };
        recipe.validate().map_err(|e| e.to_string())?;
        Ok(recipe)
    }
}

/// Reports a command line that describes nothing to do, with the usage exit code.
pub fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}
