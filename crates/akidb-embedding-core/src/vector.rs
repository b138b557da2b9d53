//! Vector post-processing shared by providers: Matryoshka truncation, L2 normalisation and
//! the finiteness check that keeps NaN/Inf away from callers.

use crate::{EmbeddingError, Result};

/// Scales `vector` to unit L2 norm in place. A zero vector stays zero (there is no direction
/// to keep).
pub fn l2_normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|v| *v /= norm);
    }
}

/// Turns a model's raw output vector into the vector a request asked for: keep the first
/// `dimensions` values (Matryoshka), then normalise if asked. Fails when any value is not
/// finite, naming the text's position in the request.
pub fn finish(
    mut vector: Vec<f32>,
    dimensions: usize,
    normalize: bool,
    index: usize,
) -> Result<Vec<f32>> {
    if let Some(position) = vector.iter().position(|v| !v.is_finite()) {
        return Err(EmbeddingError::Inference(format!(
            "the model produced a non-finite value ({}) at position {position} of the vector for text {index}",
            vector[position]
        )));
    }
    if dimensions > vector.len() {
        return Err(EmbeddingError::Inference(format!(
            "the model produced {} values for text {index}, fewer than the {dimensions} requested",
            vector.len()
        )));
    }
    vector.truncate(dimensions);
    if normalize {
        l2_normalize(&mut vector);
    }
    Ok(vector)
}

/// Cosine similarity of two vectors of equal length (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm_a = a.iter().map(|v| v * v).sum::<f32>().sqrt();
    let norm_b = b.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm_a == 0.0 || norm_b == 0.0 {
        0.0
    } else {
        dot / (norm_a * norm_b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_truncates_then_renormalises() {
        let v = finish(vec![3.0, 4.0, 12.0], 2, true, 0).unwrap();
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        let raw = finish(vec![3.0, 4.0, 12.0], 3, false, 0).unwrap();
        assert_eq!(raw, vec![3.0, 4.0, 12.0]);
    }

    #[test]
    fn non_finite_values_are_an_error_naming_the_text() {
        let err = finish(vec![1.0, f32::NAN], 2, true, 7).unwrap_err();
        assert!(err.to_string().contains("text 7"), "{err}");
        assert!(finish(vec![f32::INFINITY], 1, false, 0).is_err());
    }

    #[test]
    fn zero_vector_stays_zero_and_cosine_is_defined() {
        let mut zero = vec![0.0; 4];
        l2_normalize(&mut zero);
        assert_eq!(zero, vec![0.0; 4]);
        assert_eq!(cosine(&zero, &[1.0, 0.0, 0.0, 0.0]), 0.0);
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
    }
}
