//! Properties of the library (`akidb-embedding-*`) the service depends on (see
//! docs/reliability.md), guarded here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use akidb_embedding_onnx::batching::plan_runs;

/// Padded tokens of `runs` over `lengths`: each run is padded to its longest text.
fn padded(lengths: &[usize], runs: &[Vec<usize>]) -> usize {
    runs.iter()
        .map(|run| run.len() * run.iter().map(|&i| lengths[i]).max().unwrap_or(0))
        .sum()
}

/// One long text must not pad every short text of its run to its own length: runs packed
/// longest first until full cost the soak's mix 4.3 times its real tokens in merged 32-text
/// batches, capping throughput. `plan_runs` cuts runs by least padded cost; this guards the
/// service's throughput.
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
