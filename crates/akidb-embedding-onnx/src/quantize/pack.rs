//! Block-wise symmetric weight quantisation, bit for bit as ONNX Runtime writes it.
//!
//! [`quantize_matmul_weight`] reproduces MLAS `BlockwiseQuantizer::quantizeAndTranspose`
//! (`onnxruntime/core/mlas/lib/q4_dq.cpp`), which ONNX Runtime's Python
//! `MatMulNBitsQuantizer` calls through `quantize_matmul_{4,8}bits` with no zero points
//! (symmetric). For each column `n` of the `[K, N]` weight and each block of `block_size`
//! rows along K:
//! - `m` is the block's value of largest magnitude (its maximum when `|max| > |min|`, else its
//!   minimum), and the block's scale is `-m / 2^(bits-1)` (in `f32`);
//! - each value becomes `clamp(round(v * (1 / scale) + 2^(bits-1)), 0, 2^bits - 1)`, rounding
//!   half away from zero (`roundf`); a zero scale maps every value to the midpoint;
//! - the quantised column is stored contiguously: `packed[n][block][byte]`, two 4-bit values
//!   per byte (low nibble first), rows past K in the last block left 0.
//!
//! One quirk is reproduced on purpose: with 4 bits and an odd K, the high nibble of the last
//! byte repeats the previous pair's high nibble inside MLAS's thread block of `2 * block_size`
//! rows (MLAS reuses its scratch pair). Dequantisation never reads it, but the bytes match.

/// One quantised weight: `packed` is `[N, blocks, block_size * bits / 8]` bytes, `scales` is
/// `[N, blocks]`, both row-major, as `MatMulNBits` inputs B and scales take them.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedWeight {
    /// The quantised values, `[N, blocks, blob]`.
    pub packed: Vec<u8>,
    /// One scale per column and block, `[N, blocks]`.
    pub scales: Vec<f32>,
    /// Blocks along K: `ceil(K / block_size)`.
    pub blocks: usize,
    /// Bytes per block: `block_size * bits / 8`.
    pub blob_size: usize,
}

/// Quantises a row-major `[k, n]` fp32 weight into `MatMulNBits` layout with `bits` (4 or 8)
/// and `block_size` (a power of two, at least 16). The caller checks those; `weight` must hold
/// `k * n` values.
pub fn quantize_matmul_weight(
    weight: &[f32],
    k: usize,
    n: usize,
    bits: u32,
    block_size: usize,
) -> PackedWeight {
    let blocks = k.div_ceil(block_size);
    let blob_size = block_size * bits as usize / 8;
    let column_bytes = blocks * blob_size;
    let mut packed = vec![0u8; n * column_bytes];
    let mut scales = vec![0f32; n * blocks];
    let mid = (1u32 << (bits - 1)) as f32;
    let max_level = ((1u32 << bits) - 1) as f32;
    let quantize = |v: f32, reciprocal: f32| -> u8 {
        // `as u8` of an in-range float: the clamp keeps it within 0..=max_level.
        (v * reciprocal + mid).round().clamp(0.0, max_level) as u8
    };

    for column in 0..n {
        let value = |row: usize| weight.get(row * n + column).copied().unwrap_or(0.0);
        let column_scales = &mut scales[column * blocks..(column + 1) * blocks];
        for (block, scale) in column_scales.iter_mut().enumerate() {
            let start = block * block_size;
            let end = (start + block_size).min(k);
            let mut min = f32::MAX;
            let mut max = -f32::MAX;
            for row in start..end {
                let v = value(row);
                if v < min {
                    min = v;
                }
                if v > max {
                    max = v;
                }
            }
            let largest = if max.abs() > min.abs() { max } else { min };
            *scale = -largest / mid;
        }
        let reciprocal = |row: usize| {
            let scale = column_scales[row / block_size];
            if scale != 0.0 { 1.0 / scale } else { 0.0 }
        };
        let out = &mut packed[column * column_bytes..(column + 1) * column_bytes];
        if bits == 8 {
            for (row, q) in out.iter_mut().take(k).enumerate() {
                *q = quantize(value(row), reciprocal(row));
            }
        } else {
            // MLAS works in thread blocks of 2 * block_size rows per column, with one scratch
            // pair that is reset only at the start of each thread block.
            let thread_rows = 2 * block_size;
            for thread_start in (0..k).step_by(thread_rows) {
                let thread_end = (thread_start + thread_rows).min(k);
                let mut pair = [0u8; 2];
                for row in (thread_start..thread_end).step_by(2) {
                    for (offset, slot) in pair.iter_mut().enumerate() {
                        let r = row + offset;
                        if r < thread_end {
                            *slot = quantize(value(r), reciprocal(r));
                        }
                    }
                    out[row / 2] = (pair[0] & 0x0f) | (pair[1] << 4);
                }
            }
        }
    }
    PackedWeight {
        packed,
        scales,
        blocks,
        blob_size,
    }
}

/// Quantises the rows of a row-major `[rows, cols]` table along its columns, in blocks of
/// `block_size` (`GatherBlockQuantized` with `quantize_axis` 1, 8 bits, no zero points):
/// symmetric, `scale = max |v| / 127` (positive), `q = clamp(round(v / scale), -127, 127)`,
/// stored as `uint8` with the implied zero point 128; `scales` `[rows, ceil(cols / block_size)]`.
///
/// Not the `MatMulNBits` rule (a signed scale mapping the largest magnitude to -128): on the
/// real EmbeddingGemma that rule cost a 54-token Arabic text 0.994 of cosine, this one 0.9995
/// (`tests/it/real_gemma.rs`), so the table keeps the plain symmetric rule.
pub fn quantize_gather_rows(table: &[f32], cols: usize, block_size: usize) -> (Vec<u8>, Vec<f32>) {
    let rows = table.len() / cols.max(1);
    let blocks = cols.div_ceil(block_size);
    let mut data = vec![0u8; rows * cols];
    let mut scales = vec![0f32; rows * blocks];
    for row in 0..rows {
        let values = &table[row * cols..(row + 1) * cols];
        let out = &mut data[row * cols..(row + 1) * cols];
        for block in 0..blocks {
            let start = block * block_size;
            let end = (start + block_size).min(cols);
            let largest = values[start..end]
                .iter()
                .fold(0f32, |largest, v| largest.max(v.abs()));
            let scale = if largest > 0.0 { largest / 127.0 } else { 1.0 };
            scales[row * blocks + block] = scale;
            for (q, &v) in out[start..end].iter_mut().zip(&values[start..end]) {
                *q = ((v / scale).round().clamp(-127.0, 127.0) + 128.0) as u8;
            }
        }
    }
    (data, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dequantize(w: &PackedWeight, k: usize, n: usize, bits: u32, block: usize) -> Vec<f32> {
        let mut out = vec![0f32; k * n];
        let mid = (1i32 << (bits - 1)) as f32;
        for col in 0..n {
            for row in 0..k {
                let byte_index =
                    col * w.blocks * w.blob_size + if bits == 8 { row } else { row / 2 };
                let byte = w.packed[byte_index];
                let q = if bits == 8 {
                    byte
                } else if row % 2 == 0 {
                    byte & 0x0f
                } else {
                    byte >> 4
                };
                out[row * n + col] = (q as f32 - mid) * w.scales[col * w.blocks + row / block];
            }
        }
        out
    }

    fn weight(k: usize, n: usize) -> Vec<f32> {
        (0..k * n)
            .map(|i| ((i as f32 * 0.37).sin() * 3.0) - 0.2)
            .collect()
    }

    #[test]
    fn eight_bit_round_trip_error_is_within_half_a_step() {
        let (k, n, block) = (96, 5, 32);
        let w = weight(k, n);
        let q = quantize_matmul_weight(&w, k, n, 8, block);
        assert_eq!((q.blocks, q.blob_size), (3, 32));
        assert_eq!(q.packed.len(), n * 3 * 32);
        let back = dequantize(&q, k, n, 8, block);
        for (i, (a, b)) in w.iter().zip(&back).enumerate() {
            let step = q.scales[(i % n) * q.blocks + (i / n) / block].abs();
            assert!((a - b).abs() <= step * 0.5 + 1e-6, "{i}: {a} vs {b}");
        }
    }

    #[test]
    fn the_largest_magnitude_maps_to_the_bottom_level() {
        // Column 0: largest magnitude is negative (-4) → level 0; column 1: positive (4) → 0 too
        // (the scale is negative then).
        let w = [-4.0, 4.0, 1.0, -1.0, 0.0, 0.0];
        let q = quantize_matmul_weight(&w, 3, 2, 8, 16);
        assert_eq!(q.scales, vec![4.0 / 128.0, -4.0 / 128.0]);
        assert_eq!(q.packed[0], 0);
        assert_eq!(q.packed[16], 0);
        assert_eq!(q.packed[1], 160); // 1 / (4/128) + 128
        assert_eq!(q.packed[2], 128);
        assert!(
            q.packed[3..16].iter().all(|&b| b == 0),
            "padding rows stay 0"
        );
    }

    #[test]
    fn four_bit_packs_low_nibble_first_and_keeps_the_odd_k_quirk() {
        let (k, n, block) = (33, 1, 16);
        let w = weight(k, n);
        let q = quantize_matmul_weight(&w, k, n, 4, block);
        assert_eq!((q.blocks, q.blob_size), (3, 8));
        let back = dequantize(&q, k, n, 4, block);
        for (a, b) in w.iter().zip(&back) {
            assert!((a - b).abs() <= 4.0 / 8.0 * 0.5 + 1e-6);
        }
        // Row 32 starts a new thread block (2 * 16 rows): its scratch pair starts at 0.
        assert_eq!(q.packed[16] >> 4, 0);
        let (k, block) = (17, 16);
        let q = quantize_matmul_weight(&weight(k, 1), k, 1, 4, block);
        // Row 16 is inside the first thread block: the high nibble repeats row 15's value.
        assert_eq!(q.packed[8] >> 4, q.packed[7] >> 4);
    }

    #[test]
    fn zero_blocks_map_to_the_midpoint() {
        let q = quantize_matmul_weight(&[0.0; 32], 32, 1, 8, 32);
        assert_eq!(q.scales, vec![0.0]);
        assert!(q.packed.iter().all(|&b| b == 128));
    }

    #[test]
    fn gather_rows_quantise_per_row_block() {
        let table = [1.0, -2.0, 0.5, 0.25, 8.0, 0.0, 0.0, -8.0];
        let (data, scales) = quantize_gather_rows(&table, 4, 16);
        // Row 0: largest magnitude 2 → scale 2/127; row 1: ±8 both exact.
        assert_eq!(scales, vec![2.0 / 127.0, 8.0 / 127.0]);
        assert_eq!(&data[..4], &[192, 1, 160, 144]);
        assert_eq!((data[4], data[7]), (255, 1), "±8 → ±127, stored + 128");
        // An all-zero block keeps a usable scale and stores zeros as 128.
        let (zeros, zero_scales) = quantize_gather_rows(&[0.0; 4], 4, 16);
        assert_eq!((zeros, zero_scales), (vec![128; 4], vec![1.0]));
    }
}
