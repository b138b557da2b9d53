//! Writes a model folder's fused graph (see `akidb_embedding_onnx::quantize::fuse`): the
//! export's shape arithmetic folded and spelled-out operators replaced by ONNX Runtime's fused
//! ones, into a loadable folder with the tokenizer and configuration files. With `--q8` the
//! fp32 graph is quantised too (the `q8` variant's recipe) and written as `model_q8.onnx`.
//! ```text
//! cargo run --release --example fuse -- --model DIR --output DIR2 [--q8] [--steps shapes,gelu]
//! cargo run --release --example embed -- --model DIR2 "Hello"
//! ```
//! Loading a folder fuses its graph at first load anyway (`LoadOptions::with_fused_graph`);
//! this writes the result ahead of time and prints node counts and rewrites as JSON.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::path::PathBuf;
use std::process::ExitCode;

use akidb_embedding_onnx::quantize::fuse::{FuseRecipe, FuseStep};
use akidb_embedding_onnx::quantize::{QuantizeRecipe, fuse_folder};
use clap::Parser;

/// Command line of the `fuse` example.
#[derive(Parser)]
#[command(about = "Fuse a model folder's ONNX graph into ONNX Runtime's fused operators")]
struct Args {
    /// Model folder holding the graph (at its root or under onnx/) and its tokenizer.
    #[arg(long)]
    model: PathBuf,
    /// Folder to write the fused graph, its weights and the tokenizer/config files into.
    #[arg(long)]
    output: PathBuf,
    /// The graph file to fuse (default model.onnx).
    #[arg(long, default_value = "model.onnx")]
    file: String,
    /// Quantise the fp32 graph with the q8 recipe too, writing model_q8.onnx.
    #[arg(long)]
    q8: bool,
    /// Comma-separated steps (shapes, gelu); default all.
    #[arg(long, value_delimiter = ',')]
    steps: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let recipe = if args.steps.is_empty() {
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
            Err(message) => {
                eprintln!("error: {message}");
                return ExitCode::from(2);
            }
        }
    };
    let quantize = args.q8.then(QuantizeRecipe::q8);
    match fuse_folder(
        &args.model,
        &args.output,
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
