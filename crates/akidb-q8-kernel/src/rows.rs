//! Row kernels: the steps of multi-query attention around its two GEMMs (each head's RMSNorm
//! and rotary embedding in one pass, [`norm_rotate_rows`]; the attention bias with the
//! softmax, [`bias_softmax_rows`]) and a residual's norms ([`norm_add_norm_rows`]: a norm, the
//! residual sum, and the sum's norm).
//!
//! They compute what the operators they stand for compute:
//! - the norm as ONNX Runtime's `SimplifiedLayerNormalization` computes it,
//!   `y = x / sqrt(Σx² / H + ε) · w` in fp32, but with the squares summed in 64 lanes (value
//!   `i` in lane `i % 64`, the lanes added pairwise): ONNX Runtime sums them in order, one
//!   addition waiting on the last (about 1 ns a value on a 768-wide row);
//! - the rotation as `com.microsoft::RotaryEmbedding`, halves not interleaved:
//!   `y[i] = x[i]·cos − x[i + H/2]·sin`, `y[i + H/2] = x[i]·sin + x[i + H/2]·cos`;
//! - the softmax as ONNX Runtime's: the row's maximum subtracted, `exp`, the sum, then each
//!   value times `1 / sum`. `exp` is a polynomial (below) within 2 ulp of the exact value, as
//!   MLAS's is; the sum runs over 16 lanes, value `i` in lane `i % 16`, so that masked keys
//!   after a row's last (a padded batch's) leave its result unchanged to the bit.
//!
//! On CPUs with AVX-512F the same code is compiled for it (16 lanes); elsewhere for the
//! baseline. Both give the same results: the code fixes the order of every sum.

/// Lanes of the softmax's partial sums and maxima (one AVX-512 register of `f32`).
const LANES: usize = 16;

/// Lanes of a norm's sum of squares: four AVX-512 registers, four independent chains of
/// additions.
const NORM_LANES: usize = 64;

/// The settings of [`norm_rotate_rows`].
#[derive(Debug, Clone, Copy)]
pub struct NormRotate<'a> {
    /// Values per head (`H`, even).
    pub head_size: usize,
    /// Heads per position: rows of one position.
    pub heads: usize,
    /// Positions per sequence: row `r` is at position `(r / heads) % positions`.
    pub positions: usize,
    /// The norm's weight, `H` values.
    pub weight: &'a [f32],
    /// The norm's ε.
    pub epsilon: f32,
    /// Cosines, `[P, H/2]`, row `p` for position `p`.
    pub cos: &'a [f32],
    /// Sines, laid out as `cos`.
    pub sin: &'a [f32],
}

/// Normalises and rotates the rows `first_row ..` of `[rows, H]` `x` into `out` (as many
/// whole rows as `out` holds; `x` holds the same rows). The caller checks the shapes: `x`
/// and `out` whole rows, the weight `H` values and the tables `(P, H/2)` with every row's
/// position below `P`.
pub fn norm_rotate_rows(x: &[f32], out: &mut [f32], first_row: usize, p: &NormRotate<'_>) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: the CPU has AVX-512F (checked above), the one feature the function enables.
        unsafe { avx512::norm_rotate_rows(x, out, first_row, p) };
        return;
    }
    norm_rotate_body(x, out, first_row, p);
}

/// The settings of [`norm_add_norm_rows`].
#[derive(Debug, Clone, Copy)]
pub struct NormAddNorm<'a> {
    /// The first norm's weight (`D` values: the row length).
    pub first_weight: &'a [f32],
    /// The first norm's ε.
    pub first_epsilon: f32,
    /// The second norm's weight.
    pub second_weight: &'a [f32],
    /// The second norm's ε.
    pub second_epsilon: f32,
}

/// For each row of `[rows, D]` `x` and `residual` (`D` the weights' length): `sum = residual
/// + rmsnorm(x)·w₁` and `out = rmsnorm(sum)·w₂`, as `SimplifiedLayerNormalization`
/// followed by `SkipSimplifiedLayerNormalization` compute them. `out` and `sum` hold the same
/// whole rows as `x` and `residual`.
pub fn norm_add_norm_rows(
    x: &[f32],
    residual: &[f32],
    out: &mut [f32],
    sum: &mut [f32],
    p: &NormAddNorm<'_>,
) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: the CPU has AVX-512F (checked above), the one feature the function enables.
        unsafe { avx512::norm_add_norm_rows(x, residual, out, sum, p) };
        return;
    }
    norm_add_norm_body(x, residual, out, sum, p);
}

/// `softmax(scores[r] + bias(r))` for each row `r` of the `[rows, width]` `scores` into
/// `out` (same length, whole rows; `bias(r)` `width` values), `r` counted from
/// `first_row`.
pub fn bias_softmax_rows<'b>(
    scores: &[f32],
    out: &mut [f32],
    width: usize,
    first_row: usize,
    bias: &(dyn Fn(usize) -> &'b [f32] + Sync),
) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: the CPU has AVX-512F (checked above), the one feature the function enables.
        unsafe { avx512::bias_softmax_rows(scores, out, width, first_row, bias) };
        return;
    }
    bias_softmax_body(scores, out, width, first_row, bias);
}

#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{NormAddNorm, NormRotate};

    #[target_feature(enable = "avx512f")]
    pub(super) fn norm_add_norm_rows(
        x: &[f32],
        residual: &[f32],
        out: &mut [f32],
        sum: &mut [f32],
        p: &NormAddNorm<'_>,
    ) {
        super::norm_add_norm_body(x, residual, out, sum, p);
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn norm_rotate_rows(
        x: &[f32],
        out: &mut [f32],
        first_row: usize,
        p: &NormRotate<'_>,
    ) {
        super::norm_rotate_body(x, out, first_row, p);
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn bias_softmax_rows<'b>(
        scores: &[f32],
        out: &mut [f32],
        width: usize,
        first_row: usize,
        bias: &(dyn Fn(usize) -> &'b [f32] + Sync),
    ) {
        super::bias_softmax_body(scores, out, width, first_row, bias);
    }
}

/// `y = x / sqrt(Σx² / D + ε) · w`, the squares summed by [`sum_of_squares`].
#[inline(always)]
fn rms_norm(x: &[f32], weight: &[f32], epsilon: f32, y: &mut [f32]) {
    let rms = (sum_of_squares(x) / x.len() as f32 + epsilon).sqrt();
    for ((y, v), w) in y.iter_mut().zip(x).zip(weight) {
        *y = v / rms * w;
    }
}

/// `Σx²` with value `i` in lane `i % NORM_LANES`, the lanes then added pairwise in a fixed
/// order: the same bits from every build, and independent sums a vector unit runs side by
/// side (a sum in order waits on each addition: 768 of them per row of EmbeddingGemma).
#[inline(always)]
fn sum_of_squares(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; NORM_LANES];
    let mut chunks = x.chunks_exact(NORM_LANES);
    for chunk in &mut chunks {
        for (s, v) in lanes.iter_mut().zip(chunk) {
            *s += v * v;
        }
    }
    for (s, v) in lanes.iter_mut().zip(chunks.remainder()) {
        *s += v * v;
    }
    let mut width = NORM_LANES;
    while width > 1 {
        width /= 2;
        let (low, high) = lanes.split_at_mut(width);
        for (a, b) in low.iter_mut().zip(high.iter()) {
            *a += b;
        }
    }
    lanes[0]
}

#[inline(always)]
fn norm_add_norm_body(
    x: &[f32],
    residual: &[f32],
    out: &mut [f32],
    sum: &mut [f32],
    p: &NormAddNorm<'_>,
) {
    let d = p.first_weight.len();
    if d == 0 {
        return;
    }
    let rows = x
        .chunks_exact(d)
        .zip(residual.chunks_exact(d))
        .zip(out.chunks_exact_mut(d).zip(sum.chunks_exact_mut(d)));
    for ((x, residual), (out, sum)) in rows {
        // The first norm into `out`, the sum from it, the second norm back into `out`.
        rms_norm(x, p.first_weight, p.first_epsilon, out);
        for ((s, r), n) in sum.iter_mut().zip(residual).zip(out.iter()) {
            *s = r + n;
        }
        rms_norm(sum, p.second_weight, p.second_epsilon, out);
    }
}

#[inline(always)]
fn norm_rotate_body(x: &[f32], out: &mut [f32], first_row: usize, p: &NormRotate<'_>) {
    let h = p.head_size;
    let half = h / 2;
    if h == 0 {
        return;
    }
    let heads = p.heads.max(1);
    let positions = p.positions.max(1);
    if p.weight.len() != h {
        return;
    }
    let (weight_low, weight_high) = p.weight.split_at(half);
    for (i, (row, y)) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)).enumerate() {
        // The norm and the rotation in one pass over the row: each value is normalised as
        // `rms_norm` does it (`x / rms · w`), then rotated with its partner.
        let rms = (sum_of_squares(row) / h as f32 + p.epsilon).sqrt();
        let position = ((first_row + i) / heads) % positions;
        let cos = &p.cos[position * half..][..half];
        let sin = &p.sin[position * half..][..half];
        let (x_low, x_high) = row.split_at(half);
        let (y_low, y_high) = y.split_at_mut(half);
        for j in 0..half {
            let real = x_low[j] / rms * weight_low[j];
            let imaginary = x_high[j] / rms * weight_high[j];
            y_low[j] = real * cos[j] - imaginary * sin[j];
            y_high[j] = real * sin[j] + imaginary * cos[j];
        }
    }
}

#[inline(always)]
fn bias_softmax_body<'b>(
    scores: &[f32],
    out: &mut [f32],
    width: usize,
    first_row: usize,
    bias: &(dyn Fn(usize) -> &'b [f32] + Sync),
) {
    if width == 0 {
        return;
    }
    for (i, (row, y)) in scores
        .chunks_exact(width)
        .zip(out.chunks_exact_mut(width))
        .enumerate()
    {
        for ((y, s), b) in y.iter_mut().zip(row).zip(bias(first_row + i)) {
            *y = s + b;
        }
        let mut maxima = [f32::NEG_INFINITY; LANES];
        let mut chunks = y.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (m, v) in maxima.iter_mut().zip(chunk) {
                // A comparison and a select, where `f32::max`'s NaN rule kept the compiler
                // from vectorising the loop; a NaN score is passed over either way.
                *m = if *v > *m { *v } else { *m };
            }
        }
        let mut maximum = chunks
            .remainder()
            .iter()
            .fold(f32::NEG_INFINITY, |m, v| m.max(*v));
        for m in maxima {
            maximum = maximum.max(m);
        }
        let mut sums = [0.0f32; LANES];
        let mut chunks = y.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            for (s, v) in sums.iter_mut().zip(chunk.iter_mut()) {
                *v = exp(*v - maximum);
                *s += *v;
            }
        }
        // The tail goes into the lanes by index too: every value lands in lane `i % 16`
        // whatever the row's length, so the keys a padded batch adds (exp 0) leave the sum
        // of a text's row exactly as it is alone.
        for (s, v) in sums.iter_mut().zip(chunks.into_remainder()) {
            *v = exp(*v - maximum);
            *s += *v;
        }
        let mut sum = 0.0f32;
        for s in sums {
            sum += s;
        }
        let scale = 1.0 / sum;
        for v in y.iter_mut() {
            *v *= scale;
        }
    }
}

/// `e^x` in `f32` without branches (so that it vectorises): `x = n·ln 2 + r` with `n` the
/// nearest integer to `x·log2 e` and `r` in `[−ln 2 / 2, ln 2 / 2]` (ln 2 split in two so
/// that `r` is exact), `e^r` by Cephes' degree-6 polynomial, `2^n` made in the exponent bits.
/// Below −87.33 (where `e^x` leaves the normal range, the masked scores of an attention bias
/// among them) it is 0; above 88 it saturates at `e^88`.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    const LOWEST: f32 = -87.336_55;
    const HIGHEST: f32 = 88.0;
    let clamped = x.clamp(LOWEST, HIGHEST);
    let n = (clamped * LOG2E + 0.5).floor();
    let r = clamped - n * LN2_HIGH - n * LN2_LOW;
    let mut p = 1.987_569_2e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // n is a whole number in [−126, 127], so `n + 127 + 2²³` is exact and its low mantissa
    // bits are `n + 127`: shifted into the exponent field they make 2^n, a normal float. (A
    // float-to-integer cast would do the same, but Rust's saturating cast does not vectorise:
    // it left the softmax at 1.5 ns a value.)
    let two_n = f32::from_bits((n + (127.0 + 8_388_608.0)).to_bits() << 23);
    if x < LOWEST { 0.0 } else { er * two_n }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_norm_rotate(x: &[f32], p: &NormRotate<'_>, position: usize) -> Vec<f32> {
        let h = p.head_size;
        let mean: f64 = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / h as f64;
        let rms = (mean + p.epsilon as f64).sqrt();
        let y: Vec<f64> = x
            .iter()
            .zip(p.weight)
            .map(|(v, w)| *v as f64 / rms * *w as f64)
            .collect();
        let half = h / 2;
        let mut out = vec![0.0f32; h];
        for i in 0..half {
            let (c, s) = (
                p.cos[position * half + i] as f64,
                p.sin[position * half + i] as f64,
            );
            out[i] = (y[i] * c - y[i + half] * s) as f32;
            out[i + half] = (y[i] * s + y[i + half] * c) as f32;
        }
        out
    }

    /// A deterministic spread of values in about [-scale, scale].
    fn values(count: usize, seed: u32, scale: f32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..count)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_exact_value_and_zero_below_the_normal_range() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let exact = (x as f64).exp();
            let got = exp(x) as f64;
            let ulp = (exact as f32).abs() as f64 * f32::EPSILON as f64;
            worst = worst.max((got - exact).abs() / ulp);
            x += 0.013;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(-3.4e38), 0.0);
        assert!(exp(1e9).is_finite());
    }

    #[test]
    fn sum_of_squares_is_close_to_float64_and_runs_its_lanes_in_a_fixed_order() {
        for len in [1, 5, 63, 64, 65, 127, 256, 768, 1000] {
            let x = values(len, len as u32, 40.0);
            let exact: f64 = x.iter().map(|v| (*v as f64).powi(2)).sum();
            let got = sum_of_squares(&x) as f64;
            assert!(
                (got - exact).abs() <= 4.0 * f32::EPSILON as f64 * exact,
                "{len} values: {got} against {exact}"
            );
            // Value i in lane i % 64, the lanes added pairwise: the order the code fixes.
            let mut lanes = [0.0f32; NORM_LANES];
            for (i, v) in x.iter().enumerate() {
                lanes[i % NORM_LANES] += v * v;
            }
            let mut width = NORM_LANES;
            while width > 1 {
                width /= 2;
                for i in 0..width {
                    lanes[i] += lanes[i + width];
                }
            }
            assert_eq!(sum_of_squares(&x), lanes[0], "{len} values");
        }
    }

    #[test]
    fn norm_rotate_matches_a_float64_reference_at_each_rows_position() {
        let (h, heads, positions, tables) = (64, 3, 5, 8);
        let weight = values(h, 1, 2.0);
        let cos = values(tables * h / 2, 2, 1.0);
        let sin = values(tables * h / 2, 3, 1.0);
        let p = NormRotate {
            head_size: h,
            heads,
            positions,
            weight: &weight,
            epsilon: 1e-6,
            cos: &cos,
            sin: &sin,
        };
        let rows = 2 * positions * heads;
        let x = values(rows * h, 4, 30.0);
        let mut whole = vec![0.0; rows * h];
        norm_rotate_rows(&x, &mut whole, 0, &p);
        // In two parts from an odd row: each row's position comes from its own index.
        let mut parts = vec![0.0; rows * h];
        let (a, b) = parts.split_at_mut(7 * h);
        norm_rotate_rows(&x[..7 * h], a, 0, &p);
        norm_rotate_rows(&x[7 * h..], b, 7, &p);
        assert_eq!(whole, parts);
        let portable = {
            let mut out = vec![0.0; rows * h];
            norm_rotate_body(&x, &mut out, 0, &p);
            out
        };
        assert_eq!(whole, portable, "the AVX-512 build and the baseline differ");
        for r in 0..rows {
            let want = reference_norm_rotate(&x[r * h..][..h], &p, (r / heads) % positions);
            for (got, want) in whole[r * h..][..h].iter().zip(&want) {
                assert!(
                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "row {r}: {got} against {want}"
                );
            }
        }
    }

    #[test]
    fn norm_add_norm_matches_a_float64_reference() {
        let d = 96;
        let (w1, w2) = (values(d, 5, 2.0), values(d, 6, 2.0));
        let p = NormAddNorm {
            first_weight: &w1,
            first_epsilon: 1e-6,
            second_weight: &w2,
            second_epsilon: 1e-5,
        };
        let rows = 5;
        let (x, residual) = (values(rows * d, 7, 50.0), values(rows * d, 8, 200.0));
        let (mut out, mut sum) = (vec![0.0; rows * d], vec![0.0; rows * d]);
        norm_add_norm_rows(&x, &residual, &mut out, &mut sum, &p);
        let (mut out2, mut sum2) = (vec![0.0; rows * d], vec![0.0; rows * d]);
        norm_add_norm_body(&x, &residual, &mut out2, &mut sum2, &p);
        assert_eq!(
            (&out, &sum),
            (&out2, &sum2),
            "the AVX-512 build and the baseline differ"
        );
        let norm = |v: &[f64], w: &[f32], eps: f64| -> Vec<f64> {
            let rms = (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64 + eps).sqrt();
            v.iter().zip(w).map(|(x, w)| x / rms * *w as f64).collect()
        };
        for r in 0..rows {
            let xr: Vec<f64> = x[r * d..][..d].iter().map(|v| *v as f64).collect();
            let s: Vec<f64> = norm(&xr, &w1, 1e-6)
                .iter()
                .zip(&residual[r * d..][..d])
                .map(|(n, r)| n + *r as f64)
                .collect();
            let want = norm(&s, &w2, 1e-5);
            for i in 0..d {
                assert!((sum[r * d + i] as f64 - s[i]).abs() <= 1e-5 * (1.0 + s[i].abs()));
                assert!((out[r * d + i] as f64 - want[i]).abs() <= 1e-5 * (1.0 + want[i].abs()));
            }
        }
    }

    #[test]
    fn bias_softmax_matches_a_float64_reference_and_masked_keys_get_nothing() {
        for width in [1, 5, 16, 37, 532] {
            let rows = 6;
            let scores = values(rows * width, width as u32, 20.0);
            let mut bias = vec![0.0f32; 2 * width];
            // Row set 1 masks every other key, as a padding or window bias does.
            for (i, b) in bias[width..].iter_mut().enumerate() {
                if i % 2 == 1 {
                    *b = f32::MIN;
                }
            }
            let bias_of = |r: usize| &bias[(r % 2) * width..][..width];
            let mut out = vec![0.0; rows * width];
            bias_softmax_rows(&scores, &mut out, width, 0, &bias_of);
            let mut portable = vec![0.0; rows * width];
            bias_softmax_body(&scores, &mut portable, width, 0, &bias_of);
            assert_eq!(out, portable, "the AVX-512 build and the baseline differ");
            for r in 0..rows {
                let row: Vec<f64> = scores[r * width..][..width]
                    .iter()
                    .zip(bias_of(r))
                    .map(|(s, b)| (*s + *b) as f64)
                    .collect();
                let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
                for (l, (got, v)) in out[r * width..][..width].iter().zip(&row).enumerate() {
                    let want = (v - max).exp() / sum;
                    assert!(
                        (*got as f64 - want).abs() <= 1e-6 * (1.0 + want),
                        "width {width} row {r} key {l}: {got} against {want}"
                    );
                    if r % 2 == 1 && l % 2 == 1 {
                        assert_eq!(*got, 0.0, "a masked key got weight");
                    }
                }
            }
        }
    }

    #[test]
    fn masked_keys_after_the_last_leave_a_softmax_row_unchanged_to_the_bit() {
        for width in [3, 15, 16, 17, 33, 100] {
            let scores = values(width, width as u32 + 7, 10.0);
            let none = vec![0.0f32; width];
            let mut alone = vec![0.0; width];
            bias_softmax_rows(&scores, &mut alone, width, 0, &|_| &none);
            for padded_width in [width + 1, width + 15, 48.max(width + 1), 2 * width + 5] {
                let mut padded_scores = scores.clone();
                padded_scores.resize(padded_width, 1.0);
                let mut bias = vec![0.0f32; padded_width];
                bias[width..].fill(f32::MIN);
                let mut padded = vec![0.0; padded_width];
                bias_softmax_rows(&padded_scores, &mut padded, padded_width, 0, &|_| &bias);
                assert_eq!(
                    &padded[..width],
                    &alone[..],
                    "{width} keys padded to {padded_width}"
                );
                assert!(padded[width..].iter().all(|p| *p == 0.0));
            }
        }
    }
}
