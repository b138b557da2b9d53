//! Makes a model folder's `q8` variant: rewrites the fp32 graph's `MatMul`s into ONNX
//! Runtime's block-wise `MatMulNBits` and writes a loadable folder (`model_q8.onnx`,
//! `model_q8.onnx_data`, and the tokenizer and configuration files).
//! ```text
//! cargo run --release --example quantize -- --model DIR --output DIR2 [--bits 8] [--block-size 32]
//! cargo run --release --example embed -- --model DIR2 --variant q8 "Hello"
//! ```
//! Without recipe options it writes the `q8` variant's own recipe (`QuantizeRecipe::q8`: blocks
//! of 128, 16 for `down_proj`, 32 for `v_proj`, the first Dense head in fp32 and the second in
//! blocks of 16, the embedding table in 8 bits; chosen by measurement, see `docs/q8.md`);
//! any recipe option makes a uniform recipe from the options instead.
//! Recipe options: `--accuracy-level N` (default 4), `--keep-fp32 PATTERN` (repeatable),
//! `--block-size-for PATTERN=SIZE` (repeatable, first match wins), `--embedding-block-size N`
//! (quantise the token-embedding table into `GatherBlockQuantized`), or `--recipe FILE.json`
//! (a serialised `QuantizeRecipe`, replacing the other recipe options). Patterns are globs
//! over node names (`*`, `?`), e.g. `/model/layers.0/*` or `*/mlp/down_proj/MatMul`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::path::PathBuf;
use std::process::ExitCode;

use akidb_embedding_onnx::quantize::{NodeOverride, QuantizeRecipe, quantize_folder};
use clap::Parser;

/// Command line of the `quantize` example.
#[derive(Parser)]
#[command(about = "Quantise a model folder's fp32 ONNX graph into the q8 variant (MatMulNBits)")]
struct Args {
    /// Model folder holding model.onnx (at its root or under onnx/) and its tokenizer.
    #[arg(long)]
    model: PathBuf,
    /// Folder to write model_q8.onnx, model_q8.onnx_data and the tokenizer/config files into.
    #[arg(long)]
    output: PathBuf,
    /// Bits per weight: 8 or 4 (default 8). Any recipe option turns the default `q8` recipe
    /// (`QuantizeRecipe::q8`, mixed blocks) into a uniform one built from these options.
    #[arg(long)]
    bits: Option<u32>,
    /// Weights per block along K (a power of two, at least 16; default 32 when uniform).
    #[arg(long)]
    block_size: Option<usize>,
    /// MatMulNBits accuracy level: 0 (unset) to 4 (int8 activations; the default).
    #[arg(long)]
    accuracy_level: Option<u32>,
    /// Keep the MatMuls whose node name matches this glob in fp32 (repeatable).
    #[arg(long = "keep-fp32", value_name = "PATTERN")]
    keep_fp32: Vec<String>,
    /// Block size for nodes matching a glob, as PATTERN=SIZE (repeatable, first match wins).
    #[arg(long = "block-size-for", value_name = "PATTERN=SIZE")]
    block_size_for: Vec<String>,
    /// Quantise the token-embedding table (8 bits, blocks of this size along the hidden axis).
    #[arg(long)]
    embedding_block_size: Option<usize>,
    /// A JSON QuantizeRecipe; replaces the recipe options above.
    #[arg(long)]
    recipe: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let recipe = match recipe(&args) {
        Ok(recipe) => recipe,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "quantising {} into {} ({} bits, block {}, accuracy level {}, {} override(s), {} fp32 pattern(s), embedding table {})",
        args.model.display(),
        args.output.display(),
        recipe.bits,
        recipe.block_size,
        recipe.accuracy_level,
        recipe.overrides.len(),
        recipe.keep_fp32.len(),
        recipe
            .embedding_block_size
            .map_or("fp32".to_string(), |b| format!("8-bit, block {b}")),
    );
    match quantize_folder(&args.model, &args.output, &recipe) {
        Ok(report) => {
            for node in &report.quantized {
                eprintln!(
                    "  {} [{}x{}] -> {} bits, block {}",
                    node.node, node.k, node.n, node.settings.bits, node.settings.block_size
                );
            }
            for node in &report.kept_fp32 {
                eprintln!("  {node} kept fp32");
            }
            if let Some(table) = &report.embedding {
                eprintln!("  embedding table {table} -> GatherBlockQuantized");
            }
            eprintln!(
                "done in {:.2} s: {} MatMuls quantised, {} kept fp32; {:.1} MB -> {:.1} MB; wrote {}",
                report.elapsed.as_secs_f64(),
                report.quantized.len(),
                report.kept_fp32.len(),
                report.source_bytes as f64 / 1e6,
                report.output_bytes as f64 / 1e6,
                report.output.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn recipe(args: &Args) -> Result<QuantizeRecipe, String> {
    let recipe = if let Some(path) = &args.recipe {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
    } else if args.bits.is_none()
        && args.block_size.is_none()
        && args.accuracy_level.is_none()
        && args.keep_fp32.is_empty()
        && args.block_size_for.is_empty()
        && args.embedding_block_size.is_none()
    {
        QuantizeRecipe::q8()
    } else {
        let uniform = QuantizeRecipe::default();
        let mut recipe = uniform
            .clone()
            .with_bits(args.bits.unwrap_or(uniform.bits))
            .with_block_size(args.block_size.unwrap_or(uniform.block_size))
            .with_accuracy_level(args.accuracy_level.unwrap_or(uniform.accuracy_level))
            .with_embedding_table(args.embedding_block_size);
        for pattern in &args.keep_fp32 {
            recipe = recipe.keep_fp32(pattern);
        }
        for rule in &args.block_size_for {
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
