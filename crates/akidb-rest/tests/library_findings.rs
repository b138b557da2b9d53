//! Defects of the library (`akidb-embedding-*`) found while hardening the service, kept as
//! ignored tests: each fails today, run them with `--ignored`, and they pass once the library
//! is fixed (then drop the `#[ignore]`). See docs/reliability.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use akidb_embedding_onnx::batching::plan_runs;

/// Padded tokens of `runs` over `lengths`: each run is padded to its longest text.
fn padded(lengths: &[usize], runs: &[Vec<usize>]) -> usize {
    runs.iter()
        .map(|run| run.len() * run.iter().map(|&i| lengths[i]).max().unwrap_or(0))
        .sum()
}

/// `plan_runs` packs texts longest first until the batch size or the token budget is full,
/// so one long text pads every short text of its run to its own length: the soak's mix of
/// texts (60 % short, 30 % medium, 10 % at the 256-token cap) costs 4.3 times its real tokens
/// in merged 32-text batches, which caps the service's throughput on CPU.
#[test]
#[ignore = "known defect: a run's padding is not bounded; one long text pads 31 short ones"]
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
