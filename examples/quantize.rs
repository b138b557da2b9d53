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

use std::process::ExitCode;

use akidb_embedding_onnx::quantize::quantize_folder;
use clap::Parser;

#[path = "support/folder_args.rs"]
mod folder_args;

use folder_args::{Folders, RecipeArgs, usage_error};

/// Command line of the `quantize` example.
#[derive(Parser)]
#[command(about = "Quantise a model folder's fp32 ONNX graph into the q8 variant (MatMulNBits)")]
struct Args {
    /// The folder read and the folder model_q8.onnx, model_q8.onnx_data and the
    /// tokenizer/config files are written into.
    #[command(flatten)]
    folders: Folders,
    /// Recipe options (default: the `q8` variant's own recipe).
    #[command(flatten)]
    recipe: RecipeArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let recipe = match args.recipe.recipe() {
        Ok(recipe) => recipe,
        Err(message) => return usage_error(&message),
    };
    let Folders { model, output } = &args.folders;
    eprintln!(
        "quantising {} into {} ({} bits, block {}, accuracy level {}, {} override(s), {} fp32 pattern(s), embedding table {})",
        model.display(),
        output.display(),
        recipe.bits,
        recipe.block_size,
        recipe.accuracy_level,
        recipe.overrides.len(),
        recipe.keep_fp32.len(),
        recipe
            .embedding_block_size
            .map_or("fp32".to_string(), |b| format!("8-bit, block {b}")),
    );
    match quantize_folder(model, output, &recipe) {
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
