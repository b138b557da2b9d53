//! From a model run's output to one vector per text, on `ndarray` views of ONNX Runtime's
//! output buffer.

use akidb_embedding_core::{EmbeddingError, Result};
use ndarray::{Array1, ArrayView2, ArrayViewD, Axis, Ix2, Ix3};

use crate::Pooling;

/// Pools a run's output. `output` is `sentence_embedding` `[batch, dim]` for
/// [`Pooling::SentenceEmbedding`], else `last_hidden_state` `[batch, seq, dim]`; `mask` is the
/// run's `attention_mask` `[batch, seq]`.
pub fn pool(
    pooling: Pooling,
    output: ArrayViewD<'_, f32>,
    mask: ArrayView2<'_, i64>,
) -> Result<Vec<Vec<f32>>> {
    let (batch, seq) = mask.dim();
    let shape = output.shape().to_vec();
    let wrong_shape = || {
        EmbeddingError::Inference(format!(
            "output `{}` has shape {shape:?}, expected [{batch}, {}]",
            pooling.output_name(),
            if pooling == Pooling::SentenceEmbedding {
                "dim".to_string()
            } else {
                format!("{seq}, dim")
            }
        ))
    };
    match pooling {
        Pooling::SentenceEmbedding => {
            let rows = output
                .into_dimensionality::<Ix2>()
                .ok()
                .filter(|rows| rows.nrows() == batch)
                .ok_or_else(wrong_shape)?;
            Ok(rows.outer_iter().map(|row| row.to_vec()).collect())
        }
        Pooling::Mean | Pooling::Cls => {
            let hidden = output
                .into_dimensionality::<Ix3>()
                .ok()
                .filter(|hidden| hidden.dim().0 == batch && hidden.dim().1 == seq)
                .ok_or_else(wrong_shape)?;
            Ok(hidden
                .outer_iter()
                .zip(mask.outer_iter())
                .map(|(tokens, row_mask)| match pooling {
                    Pooling::Cls => tokens
                        .outer_iter()
                        .next()
                        .map_or_else(Vec::new, |first| first.to_vec()),
                    _ => mean(tokens, row_mask),
                })
                .collect())
        }
    }
}

/// Mean of the token vectors whose mask is 1 (sentence-transformers' mean pooling, whose
/// denominator is clamped to 1e-9).
fn mean(tokens: ArrayView2<'_, f32>, mask: ndarray::ArrayView1<'_, i64>) -> Vec<f32> {
    let mut sum = Array1::<f32>::zeros(tokens.len_of(Axis(1)));
    let mut count = 0.0f32;
    for (token, &m) in tokens.outer_iter().zip(mask) {
        if m != 0 {
            sum += &token;
            count += 1.0;
        }
    }
    sum /= count.max(1e-9);
    sum.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn, arr2};

    fn output(shape: &[usize], values: &[f32]) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(shape), values.to_vec()).unwrap()
    }

    #[test]
    fn mean_ignores_padding() {
        // batch 2, seq 3, dim 2; the second text has one padding position.
        let hidden = output(
            &[2, 3, 2],
            &[
                1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 10.0, 10.0, 20.0, 20.0, 99.0, 99.0,
            ],
        );
        let mask = arr2(&[[1, 1, 1], [1, 1, 0]]);
        let pooled = pool(Pooling::Mean, hidden.view(), mask.view()).unwrap();
        assert_eq!(pooled, vec![vec![3.0, 4.0], vec![15.0, 15.0]]);
        let cls = pool(Pooling::Cls, hidden.view(), mask.view()).unwrap();
        assert_eq!(cls, vec![vec![1.0, 2.0], vec![10.0, 10.0]]);
    }

    #[test]
    fn sentence_embedding_passes_through_and_shapes_are_checked() {
        let out = output(&[2, 2], &[1.0, 0.0, 0.0, 1.0]);
        let mask = arr2(&[[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]);
        let rows = pool(Pooling::SentenceEmbedding, out.view(), mask.view()).unwrap();
        assert_eq!(rows, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        let wrong_rows = output(&[4, 1], &[1.0, 0.0, 0.0, 1.0]);
        assert!(pool(Pooling::SentenceEmbedding, wrong_rows.view(), mask.view()).is_err());
        let err = pool(Pooling::Mean, out.view(), arr2(&[[1], [1]]).view()).unwrap_err();
        assert!(err.to_string().contains("expected [2, 1, dim]"), "{err}");
    }
}
