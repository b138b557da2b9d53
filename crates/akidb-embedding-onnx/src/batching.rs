//! Splitting a request into model runs: texts sorted by length so each run pads little, at
//! most `max_batch_size` texts and `max_batch_tokens` padded tokens per run (which also bounds
//! the memory ONNX Runtime's arena keeps after its largest run).

/// Groups text positions into runs. `lengths[i]` is the token count of text `i`. Every position
/// appears in exactly one run; a run holds at least one text even if that text alone exceeds
/// the token budget.
pub fn plan_runs(
    lengths: &[usize],
    max_batch_size: usize,
    max_batch_tokens: usize,
) -> Vec<Vec<usize>> {
    let max_batch_size = max_batch_size.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    // Longest first: the first text of a run fixes its padded length.
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let mut runs: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut padded_length = 0;
    for index in order {
        let fits = current.len() < max_batch_size
            && (current.len() + 1) * padded_length.max(lengths[index]) <= max_batch_tokens;
        if !current.is_empty() && !fits {
            runs.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            padded_length = lengths[index];
        }
        current.push(index);
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_lands_in_one_run_within_limits() {
        let lengths = [5, 300, 7, 120, 6, 2048, 9, 64];
        let runs = plan_runs(&lengths, 3, 1024);
        let mut seen: Vec<usize> = runs.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for run in &runs {
            assert!(run.len() <= 3);
            let longest = run.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(run.len() == 1 || run.len() * longest <= 1024, "{run:?}");
        }
        // Longest first: the over-budget text runs alone, then texts of similar length share.
        assert_eq!(runs, vec![vec![5], vec![1, 3, 7], vec![6, 2, 4], vec![0]]);
    }

    #[test]
    fn similar_lengths_are_grouped() {
        let lengths = [10, 200, 11, 201, 12, 202];
        let runs = plan_runs(&lengths, 3, 10_000);
        assert_eq!(runs, vec![vec![5, 3, 1], vec![4, 2, 0]]);
        assert!(plan_runs(&[], 32, 100).is_empty());
    }
}
