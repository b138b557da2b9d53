//! From a model run's output to one vector per text.

use akidb_embedding_core::{EmbeddingError, Result};

use crate::Pooling;

/// Pools a run's output. `output` is `sentence_embedding` `[batch, dim]` for
/// [`Pooling::SentenceEmbedding`], else `last_hidden_state` `[batch, seq, dim]`; `mask` is the
/// run's `attention_mask` `[batch, seq]`.
pub fn pool(
    pooling: Pooling,
    output: &[f32],
    shape: &[i64],
    mask: &[i64],
    batch: usize,
    seq: usize,
) -> Result<Vec<Vec<f32>>> {
    let dims: Vec<usize> = shape
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(0))
        .collect();
    match (pooling, dims.as_slice()) {
        (Pooling::SentenceEmbedding, &[rows, dim])
            if rows == batch && output.len() == rows * dim =>
        {
            Ok(output
                .chunks_exact(dim.max(1))
                .map(<[f32]>::to_vec)
                .collect())
        }
        (Pooling::Mean | Pooling::Cls, &[rows, positions, dim])
            if rows == batch
                && positions == seq
                && output.len() == rows * positions * dim
                && mask.len() == rows * positions =>
        {
            Ok((0..rows)
                .map(|row| {
                    let hidden = &output[row * positions * dim..(row + 1) * positions * dim];
                    let row_mask = &mask[row * positions..(row + 1) * positions];
                    match pooling {
                        Pooling::Cls => hidden[..dim].to_vec(),
                        _ => mean(hidden, row_mask, dim),
                    }
                })
                .collect())
        }
        _ => Err(EmbeddingError::Inference(format!(
            "output `{}` has shape {shape:?}, expected [{batch}, {}]",
            pooling.output_name(),
            if pooling == Pooling::SentenceEmbedding {
                "dim".to_string()
            } else {
                format!("{seq}, dim")
            }
        ))),
    }
}

/// Mean of the token vectors whose mask is 1 (sentence-transformers' mean pooling, whose
/// denominator is clamped to 1e-9).
fn mean(hidden: &[f32], mask: &[i64], dim: usize) -> Vec<f32> {
    let mut sum = vec![0.0f32; dim];
    let mut count = 0.0f32;
    for (token, &m) in hidden.chunks_exact(dim).zip(mask) {
        if m != 0 {
            sum.iter_mut().zip(token).for_each(|(s, v)| *s += v);
            count += 1.0;
        }
    }
    let count = count.max(1e-9);
    sum.iter_mut().for_each(|s| *s /= count);
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_ignores_padding() {
        // batch 2, seq 3, dim 2; the second text has one padding position.
        let hidden = [
            1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 10.0, 10.0, 20.0, 20.0, 99.0, 99.0,
        ];
        let mask = [1, 1, 1, 1, 1, 0];
        let pooled = pool(Pooling::Mean, &hidden, &[2, 3, 2], &mask, 2, 3).unwrap();
        assert_eq!(pooled, vec![vec![3.0, 4.0], vec![15.0, 15.0]]);
        let cls = pool(Pooling::Cls, &hidden, &[2, 3, 2], &mask, 2, 3).unwrap();
        assert_eq!(cls, vec![vec![1.0, 2.0], vec![10.0, 10.0]]);
    }

    #[test]
    fn sentence_embedding_passes_through_and_shapes_are_checked() {
        let out = [1.0, 0.0, 0.0, 1.0];
        let rows = pool(Pooling::SentenceEmbedding, &out, &[2, 2], &[], 2, 5).unwrap();
        assert_eq!(rows, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert!(pool(Pooling::SentenceEmbedding, &out, &[4, 1], &[], 2, 5).is_err());
        assert!(pool(Pooling::Mean, &out, &[2, 2], &[1, 1], 2, 1).is_err());
    }
}
