//! A small semantic search: embeds a handful of documents with the `document` prompt and ranks
//! them for each query embedded with the `query` prompt (EmbeddingGemma's task prompts; for a
//! model without prompts, such as MiniLM, both are empty, as in sentence-transformers).
//! ```text
//! cargo run --release --example semantic_search -- [--model <id or folder>] ["your query" ...]
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::sync::Arc;

use akidb_embedding_core::{EmbedRequest, EmbeddingProvider, vector::cosine};
use akidb_embedding_onnx::OnnxEmbeddingProvider;

const DOCUMENTS: &[&str] = &[
    "The train station is two blocks north of the museum.",
    "Our bakery opens at seven and sells sourdough until noon.",
    "Vector databases index embeddings for fast nearest-neighbour search.",
    "The museum is closed on Mondays for maintenance.",
    "Rust's ownership rules prevent data races at compile time.",
    "Heavy rain is expected across the coast this weekend.",
];

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let model = match args.iter().position(|a| a == "--model") {
        Some(i) if i + 1 < args.len() => {
            let model = args.remove(i + 1);
            args.remove(i);
            model
        }
        _ => "sentence-transformers/all-MiniLM-L6-v2".to_string(),
    };
    let queries = if args.is_empty() {
        vec![
            "Where is the nearest train station?".to_string(),
            "How do I search vectors quickly?".to_string(),
            "Will it rain on Saturday?".to_string(),
        ]
    } else {
        args
    };

    let provider: Arc<dyn EmbeddingProvider> = Arc::new(
        OnnxEmbeddingProvider::load(
            akidb_embeddings::install::load_options(&model).with_intra_threads(2),
        )
        .unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(1)
        }),
    );
    let documents = provider
        .embed(EmbedRequest::new(DOCUMENTS.iter().copied()).with_prompt("document"))
        .await
        .unwrap();
    let queries_embedded = provider
        .embed(EmbedRequest::new(queries.clone()).with_prompt("query"))
        .await
        .unwrap();
    println!(
        "model: {} ({} dimensions)\n",
        provider.model_info().id,
        documents.dimension
    );
    for (query, query_vector) in queries.iter().zip(&queries_embedded.embeddings) {
        let mut ranked: Vec<(f32, &str)> = documents
            .embeddings
            .iter()
            .zip(DOCUMENTS)
            .map(|(doc, text)| (cosine(query_vector, doc), *text))
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        println!("query: {query}");
        for (score, text) in ranked.iter().take(3) {
            println!("  {score:.3}  {text}");
        }
        println!();
    }
}
