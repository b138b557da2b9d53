//! Embeds texts with a real model.
//!
//! Texts on the command line: prints each vector's dimension, norm and first values, and the
//! cosine similarity of every text to the first.
//! ```text
//! cargo run --release --example embed -- --model sentence-transformers/all-MiniLM-L6-v2 \
//!     "The cat sits on the mat." "A cat is sitting on a mat." "Stock markets fell today."
//! ```
//! File mode (a contract other tools use): IN.json has the format of
//! `../shared/reference/sentences.json` (`[{"id", "text", "prompt_name"}]`), OUT.json that of
//! the reference files (`{"model", "cap", "pooling", "items": {id: {"tokens", "embedding"}}}`).
//! ```text
//! cargo run --release --example embed -- --model <model id or local folder> --input IN.json --output OUT.json
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use akidb_embedding_core::{EmbedRequest, EmbeddingProvider, vector::cosine};
use akidb_embedding_onnx::{OnnxEmbeddingProvider, OnnxVariant, Pooling};
use clap::Parser;

#[path = "support/progress.rs"]
mod progress;
use serde::{Deserialize, Serialize};

/// Command line of the `embed` example.
#[derive(Parser)]
#[command(about = "Embed texts with an ONNX embedding model")]
struct Args {
    /// Built-in model id (e.g. onnx-community/embeddinggemma-300m-ONNX) or local model folder.
    #[arg(long, default_value = "sentence-transformers/all-MiniLM-L6-v2")]
    model: String,
    /// Input file (format of sentences.json); needs --output.
    #[arg(long, requires = "output")]
    input: Option<PathBuf>,
    /// Output file (format of the reference files).
    #[arg(long, requires = "input")]
    output: Option<PathBuf>,
    /// Prompt name for texts given on the command line (`query`, `document`, …).
    #[arg(long)]
    prompt: Option<String>,
    /// Matryoshka output dimension.
    #[arg(long)]
    dimensions: Option<usize>,
    /// ONNX Runtime intra-op threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// ONNX export: fp32, fp16, q4, quantized, q8 (made and cached from fp32 when the folder
    /// has no model_q8.onnx), or a file name.
    #[arg(long, default_value = "fp32")]
    variant: String,
    /// Texts to embed (when no --input is given).
    texts: Vec<String>,
}

/// One entry of IN.json.
#[derive(Deserialize)]
struct Sentence {
    id: String,
    text: String,
    prompt_name: Option<String>,
}

/// One entry of OUT.json's `items`.
#[derive(Serialize)]
struct Item {
    tokens: usize,
    embedding: Vec<f32>,
}

/// OUT.json.
#[derive(Serialize)]
struct Output {
    model: String,
    cap: usize,
    pooling: &'static str,
    items: BTreeMap<String, Item>,
}

fn main() {
    let args = Args::parse();
    let variant = OnnxVariant::parse(&args.variant)
        .unwrap_or_else(|| fail(format!("unknown variant {}", args.variant)));
    let provider = OnnxEmbeddingProvider::load(progress::with_progress_bar(
        akidb_embeddings::install::load_options(&args.model)
            .with_intra_threads(args.threads)
            .with_variant(variant),
    ))
    .unwrap_or_else(|e| fail(e));
    match (&args.input, &args.output) {
        (Some(input), Some(output)) => embed_file(&provider, input, output),
        _ => embed_texts(&provider, &args),
    }
}

fn fail(error: impl std::fmt::Display) -> ! {
    eprintln!("error: {error}");
    std::process::exit(1)
}

fn embed_file(provider: &OnnxEmbeddingProvider, input: &PathBuf, output: &PathBuf) {
    let bytes = std::fs::read(input).unwrap_or_else(|e| fail(format!("{}: {e}", input.display())));
    let sentences: Vec<Sentence> = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| fail(format!("{}: {e}", input.display())));
    // One request per prompt: the provider batches and sorts by length inside each.
    let mut groups: BTreeMap<Option<String>, Vec<&Sentence>> = BTreeMap::new();
    for sentence in &sentences {
        groups
            .entry(sentence.prompt_name.clone())
            .or_default()
            .push(sentence);
    }
    let mut items = BTreeMap::new();
    for (prompt, group) in groups {
        let mut request = EmbedRequest::new(group.iter().map(|s| s.text.clone()));
        request.prompt_name = prompt;
        let response = provider.embed_blocking(request).unwrap_or_else(|e| fail(e));
        for ((sentence, embedding), tokens) in group
            .iter()
            .zip(response.embeddings)
            .zip(response.token_counts)
        {
            items.insert(sentence.id.clone(), Item { tokens, embedding });
        }
    }
    let info = provider.model_info();
    let out = Output {
        model: info.id.clone(),
        cap: info.max_tokens,
        pooling: match provider.pooling() {
            Pooling::SentenceEmbedding => "sentence_embedding",
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
        },
        items,
    };
    let json = serde_json::to_vec(&out).unwrap();
    std::fs::write(output, json).unwrap_or_else(|e| fail(format!("{}: {e}", output.display())));
    eprintln!(
        "embedded {} texts with {} into {}",
        sentences.len(),
        info.id,
        output.display()
    );
}

fn embed_texts(provider: &OnnxEmbeddingProvider, args: &Args) {
    let texts = if args.texts.is_empty() {
        vec![
            "The cat sits on the mat.".to_string(),
            "A cat is sitting on a mat.".to_string(),
            "Stock markets fell sharply today.".to_string(),
        ]
    } else {
        args.texts.clone()
    };
    let mut request = EmbedRequest::new(texts.clone());
    request.prompt_name = args.prompt.clone();
    request.dimensions = args.dimensions;
    let response = provider.embed_blocking(request).unwrap_or_else(|e| fail(e));
    let info = provider.model_info();
    println!(
        "model: {} (dimension {}, max {} tokens)",
        info.id, response.dimension, info.max_tokens
    );
    for (i, (text, vector)) in texts.iter().zip(&response.embeddings).enumerate() {
        let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        let head: Vec<String> = vector.iter().take(4).map(|v| format!("{v:+.4}")).collect();
        println!(
            "[{i}] dimension {}, norm {norm:.4}, tokens {}, first values [{}]  {text:?}",
            vector.len(),
            response.token_counts[i],
            head.join(", ")
        );
    }
    for (i, vector) in response.embeddings.iter().enumerate().skip(1) {
        println!(
            "similarity([0], [{i}]) = {:.4}",
            cosine(&response.embeddings[0], vector)
        );
    }
}
