//! Properties of the library (`akidb-embedding-*`) the service depends on, found broken while
//! hardening the service (see docs/reliability.md), kept here as guards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use akidb_embedding_onnx::batching::plan_runs;

/// Padded tokens of `runs` over `lengths`: each run is padded to its longest text.
fn padded(lengths: &[usize], runs: &[Vec<usize>]) -> usize {
    runs.iter()
        .map(|run| run.len() * run.iter().map(|&i| lengths[i]).max().unwrap_or(0))
        .sum()
}

/// Found by the soak: `plan_runs` packed texts longest first until the batch was full, so
/// one long text padded every short text of its run to its own length (the soak's mix cost
/// 4.3 times its real tokens in merged 32-text batches, capping throughput). Fixed in the
/// library (runs cut by least padded cost); this guards the service's throughput.
#[test]
fn one_long_text_does_not_pad_a_whole_run() {
    let mut lengths = vec![256];
    lengths.extend([12; 31]);
    let runs = plan_runs(&lengths, 32, 16_384);
    let real: usize = lengths.iter().sum();
    let padded = padded(&lengths, &runs);
    assert!(
        padded <= 2 * real,
        "{padded} padded tokens for {real} real ones: runs {runs:?}"
    );
}
