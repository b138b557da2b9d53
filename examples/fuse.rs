//! Writes a model folder's fused graph (see `akidb_embedding_onnx::quantize::fuse`): the
//! export's shape arithmetic folded and spelled-out operators replaced by ONNX Runtime's fused
//! ones, into a loadable folder with the tokenizer and configuration files. With `--q8` the
//! fp32 graph is quantised too (the `q8` variant's recipe, or the recipe the `quantize`
//! example's recipe options describe) and written as `model_q8.onnx`.
//! ```text
//! cargo run --release --example fuse -- --model DIR --output DIR2 [--q8] [--steps shapes,gelu] [--portable]
//! cargo run --release --example embed -- --model DIR2 "Hello"
//! ```
//! Loading a folder fuses its graph at first load anyway (`LoadOptions::with_fused_graph`);
//! this writes the result ahead of time and prints node counts and rewrites as JSON. The
//! default steps are the library's, whose `q8_matmul` (on CPUs with AVX-512 VNNI) and
//! `row_ops` write operators only this library's sessions run: `--portable` leaves them out,
//! for a graph any ONNX Runtime loads (Python's, say).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::process::ExitCode;

use akidb_embedding_onnx::quantize::fuse::{FuseRecipe, FuseStep};
use akidb_embedding_onnx::quantize::fuse_folder;
use clap::Parser;

#[path = "support/folder_args.rs"]
mod folder_args;

use folder_args::{Folders, RecipeArgs, usage_error};

/// Command line of the `fuse` example.
#[derive(Parser)]
#[command(about = "Fuse a model folder's ONNX graph into ONNX Runtime's fused operators")]
struct Args {
    /// The folder read and the folder the fused graph, its weights and the tokenizer/config
    /// files are written into.
    #[command(flatten)]
    folders: Folders,
    /// The graph file to fuse (default model.onnx).
    #[arg(long, default_value = "model.onnx")]
    file: String,
    /// Quantise the fp32 graph too, writing model_q8.onnx (any recipe option implies it).
    #[arg(long)]
    q8: bool,
    /// Recipe options for `--q8` (default: the `q8` variant's own recipe).
    #[command(flatten)]
    recipe: RecipeArgs,
    /// Comma-separated steps (shapes, gelu, rms_norm, attention, rotary, skip_rms_norm,
    /// multi_query, packed_attention, q8_matmul, row_ops); default the library's (all but q8_matmul
    /// where the CPU lacks AVX-512 VNNI).
    #[arg(long, value_delimiter = ',')]
    steps: Vec<String>,
    /// Only the steps whose graphs any ONNX Runtime loads (all but q8_matmul and row_ops).
    #[arg(long, conflicts_with = "steps")]
    portable: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let recipe = if args.portable {
        FuseRecipe::only(FuseStep::PORTABLE)
    } else if args.steps.is_empty() {
        FuseRecipe::default()
    } else {
        let steps: Result<Vec<FuseStep>, String> = args
            .steps
            .iter()
            .map(|s| {
                serde_json::from_value(serde_json::Value::String(s.clone()))
                    .map_err(|_| format!("unknown step `{s}`"))
            })
            .collect();
        match steps {
            Ok(steps) => FuseRecipe::only(steps),
            Err(message) => return usage_error(&message),
        }
    };
    let quantize = if args.q8 || !args.recipe.is_empty() {
        match args.recipe.recipe() {
            Ok(recipe) => Some(recipe),
            Err(message) => return usage_error(&message),
        }
    } else {
        None
    };
    match fuse_folder(
        &args.folders.model,
        &args.folders.output,
        &args.file,
        quantize.as_ref(),
        &recipe,
    ) {
        Ok(report) => {
            println!(
                "{}",
                serde_json::json!({
                    "output": report.output,
                    "fused": report.fused,
                    "quantized": report.quantized.len(),
                    "elapsed_ms": report.elapsed.as_millis() as u64,
                })
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
