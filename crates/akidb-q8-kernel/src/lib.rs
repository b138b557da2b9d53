//! The `q8` weight product: `Y = X · dequant(B)` for 8-bit weights in blocks along K, as
//! ONNX Runtime's `com.microsoft::MatMulNBits` defines it for 8 bits, no zero points and
//! accuracy level 4: `B` is `uint8` `[N, K / block, block]` with the implied zero point 128
//! and one `f32` scale per column and block (`scales` `[N, K / block]`); each row of `X` is
//! quantised per block of K to `int8` with the scale `max |x| / 127` (rounded half to even)
//! before the integer products.
//!
//! How it is computed:
//! - [`PackedWeights::new`] repacks the weights once into tiles of 16 columns by 4 rows of K
//!   (64 bytes: one operand of `vpdpbusd`), the two tiles of a pair interleaved so that the
//!   kernel reads forward through memory, and the scales into `[N / 16, blocks, 16]`;
//! - [`multiply`] quantises the rows, then multiplies each pair of tiles (32 columns) by up
//!   to 6 rows at a time: 12 integer and 12 float accumulators in registers, one
//!   `vpdpbusd` per tile, row and 4 rows of K, the block's scales applied once per block.
//!   The pairs (and the rows' quantisation) are shared out by the caller's `parallel`.
//!
//! Where the CPU lacks AVX-512 VNNI ([`supported`]), a portable loop does the same arithmetic
//! in the same order: its results equal the SIMD kernel's bit for bit (tested), slowly.
//!
//! The crate also holds the row kernels of multi-query attention and the norms around it ([`rows`]): each
//! head's norm and rotation, and the bias with the softmax.
//!
//! This is the workspace's one crate with `unsafe` code: the intrinsics' loads and stores go
//! through raw pointers, and the pool's threads write disjoint parts of one output.

pub mod rows;

/// Columns per tile: one 512-bit register of `int32` sums.
const TILE: usize = 16;
/// Columns per step of the kernel: two tiles.
const PAIR: usize = 2 * TILE;
/// Rows of `X` per step of the kernel.
const ROWS: usize = 6;

/// Whether this CPU runs the AVX-512 VNNI kernel (else [`multiply`] must be given
/// `simd = false`).
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the kernel takes weights of these settings: 8 bits, blocks of a multiple of 16
/// that divide K, and N a multiple of 32.
pub fn fits(k: usize, n: usize, bits: usize, block_size: usize) -> bool {
    bits == 8
        && block_size >= 16
        && block_size.is_multiple_of(TILE)
        && k > 0
        && k.is_multiple_of(block_size)
        && n > 0
        && n.is_multiple_of(PAIR)
}

/// Where column `tile · 16 + lane`'s 4 bytes of rows `4 · quad ..` sit in
/// [`PackedWeights`]' values (`quads`: K / 4).
fn value_offset(quads: usize, tile: usize, quad: usize, lane: usize) -> usize {
    ((tile / 2 * quads + quad) * 2 + tile % 2) * 64 + lane * 4
}

/// Weights repacked for the kernel.
#[derive(Debug)]
pub struct PackedWeights {
    k: usize,
    n: usize,
    block: usize,
    blocks: usize,
    /// `[N / 32, K / 4, 2, 16, 4]`: for each pair of tiles, each group of 4 rows of K, each
    /// tile, the 16 columns' 4 bytes: the kernel reads one pair as one forward stream.
    values: Vec<u8>,
    /// `[N / 16, blocks, 16]`.
    scales: Vec<f32>,
}

impl PackedWeights {
    /// K: the rows of the weight, the length of an input row.
    pub fn k(&self) -> usize {
        self.k
    }

    /// N: the columns of the weight, the length of an output row.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Repacks `MatMulNBits` inputs `b` (`[N, K / block, block]` bytes) and `scales`
    /// (`[N, K / block]`).
    pub fn new(b: &[u8], scales: &[f32], k: usize, n: usize, block: usize) -> Result<Self, String> {
        if !fits(k, n, 8, block) {
            return Err(format!(
                "MatMulQ8 takes 8-bit weights with K ({k}) a multiple of the block size ({block}, a multiple of 16) and N ({n}) a multiple of 32"
            ));
        }
        let blocks = k / block;
        if b.len() != n * k {
            return Err(format!(
                "MatMulQ8: the weights hold {} bytes, not N × K = {}",
                b.len(),
                n * k
            ));
        }
        if scales.len() != n * blocks {
            return Err(format!(
                "MatMulQ8: {} scales, not N × K / block_size = {}",
                scales.len(),
                n * blocks
            ));
        }
        let quads = k / 4;
        let mut values = vec![0u8; n * k];
        let mut packed_scales = vec![0f32; n * blocks];
        for column in 0..n {
            let (tile, lane) = (column / TILE, column % TILE);
            let source = &b[column * k..(column + 1) * k];
            for (quad, chunk) in source.chunks_exact(4).enumerate() {
                let at = value_offset(quads, tile, quad, lane);
                values[at..at + 4].copy_from_slice(chunk);
            }
            for block_index in 0..blocks {
                packed_scales[(tile * blocks + block_index) * TILE + lane] =
                    scales[column * blocks + block_index];
            }
        }
        Ok(Self {
            k,
            n,
            block,
            blocks,
            values,
            scales: packed_scales,
        })
    }
}

/// The scratch [`multiply`] quantises the rows into (kept between calls to reuse its
/// memory). `X` quantised per row and block: values `[rows, K]`, scales and `128 × Σ values`
/// (the zero point's share of each block's sum) `[rows, blocks]`.
#[derive(Debug, Default)]
pub struct QuantisedRows {
    values: Vec<i8>,
    scales: Vec<f32>,
    offsets: Vec<i32>,
}

impl QuantisedRows {
    fn resize(&mut self, rows: usize, k: usize, blocks: usize) {
        self.values.resize(rows * k, 0);
        self.scales.resize(rows * blocks, 0.0);
        self.offsets.resize(rows * blocks, 0);
    }
}

/// Quantises one row block: returns the scale and `128 × Σ q`.
fn quantise_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let largest = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = largest / 127.0;
    let reciprocal = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    let mut sum = 0i32;
    for (out, v) in q.iter_mut().zip(x) {
        // In range by construction: |v · reciprocal| <= 127.
        let level = (v * reciprocal).round_ties_even() as i32;
        *out = level as i8;
        sum += level;
    }
    (scale, sum * 128)
}

/// Where [`quantise_rows`] writes: the buffers of a [`QuantisedRows`] sized for every row.
struct RowsOut {
    values: *mut i8,
    scales: *mut f32,
    offsets: *mut i32,
}

/// Quantises rows `rows` of `x` (`[.., K]`) into `out`.
///
/// # Safety
/// `out`'s buffers hold at least `rows.end` rows; no other thread touches these rows.
unsafe fn quantise_rows(
    x: &[f32],
    k: usize,
    block: usize,
    rows: std::ops::Range<usize>,
    out: &RowsOut,
    simd: bool,
) {
    let blocks = k / block;
    for row in rows {
        // SAFETY: the caller's contract: these rows are in the buffers and only ours.
        let (values, scales, offsets) = unsafe {
            (
                std::slice::from_raw_parts_mut(out.values.add(row * k), k),
                std::slice::from_raw_parts_mut(out.scales.add(row * blocks), blocks),
                std::slice::from_raw_parts_mut(out.offsets.add(row * blocks), blocks),
            )
        };
        let source = &x[row * k..(row + 1) * k];
        for (index, (xs, qs)) in source
            .chunks_exact(block)
            .zip(values.chunks_exact_mut(block))
            .enumerate()
        {
            let (scale, offset) = {
                #[cfg(target_arch = "x86_64")]
                if simd {
                    // SAFETY: `simd` only where `supported` (the caller's contract); the
                    // block is a multiple of 16 values (`fits`).
                    unsafe { vnni::quantise_block(xs, qs) }
                } else {
                    quantise_block(xs, qs)
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    let _ = simd;
                    quantise_block(xs, qs)
                }
            };
            scales[index] = scale;
            offsets[index] = offset;
        }
    }
}

/// Pointers handed to the pool's threads, each of which writes a disjoint part.
struct Shared<T>(T);
// SAFETY: every user writes only its own rows or columns (see the callers).
unsafe impl<T> Sync for Shared<T> {}
// SAFETY: as above.
unsafe impl<T> Send for Shared<T> {}

impl<T> Shared<T> {
    /// The pointers (a method, so that closures capture the wrapper, not its field).
    fn get(&self) -> &T {
        &self.0
    }
}

/// Computes the 32 columns of pair `pair` for every row of `x` into `out` (`[rows, N]`).
///
/// # Safety
/// `out` holds `rows × N` floats and no other thread writes these columns; `simd` only where
/// [`supported`].
unsafe fn pair_product(
    weights: &PackedWeights,
    x: &QuantisedRows,
    rows: usize,
    pair: usize,
    out: *mut f32,
    simd: bool,
) {
    let mut row = 0;
    while row < rows {
        let count = (rows - row).min(ROWS);
        // SAFETY: forwarded from the caller.
        unsafe {
            #[cfg(target_arch = "x86_64")]
            if simd {
                match count {
                    1 => vnni::pair::<1>(weights, x, row, pair, out),
                    2 => vnni::pair::<2>(weights, x, row, pair, out),
                    3 => vnni::pair::<3>(weights, x, row, pair, out),
                    4 => vnni::pair::<4>(weights, x, row, pair, out),
                    5 => vnni::pair::<5>(weights, x, row, pair, out),
                    _ => vnni::pair::<6>(weights, x, row, pair, out),
                }
                row += count;
                continue;
            }
            let _ = simd;
            portable_pair(weights, x, row..row + count, pair, out);
        }
        row += count;
    }
}

/// The kernel's arithmetic in plain Rust, step for step (integer sums per block, then one
/// fused multiply-add per block), so its results equal the SIMD kernel's bit for bit.
///
/// # Safety
/// As [`pair_product`].
unsafe fn portable_pair(
    weights: &PackedWeights,
    x: &QuantisedRows,
    rows: std::ops::Range<usize>,
    pair: usize,
    out: *mut f32,
) {
    let quads = weights.k / 4;
    let quads_per_block = weights.block / 4;
    for row in rows {
        for column in pair * PAIR..(pair + 1) * PAIR {
            let (tile, lane) = (column / TILE, column % TILE);
            let mut total = 0f32;
            for block in 0..weights.blocks {
                let mut sum = 0i32;
                for quad in block * quads_per_block..(block + 1) * quads_per_block {
                    let at = value_offset(quads, tile, quad, lane);
                    for j in 0..4 {
                        let w = i32::from(weights.values[at + j]);
                        let v = i32::from(x.values[row * weights.k + quad * 4 + j]);
                        sum += w * v;
                    }
                }
                let index = row * weights.blocks + block;
                let scale =
                    weights.scales[(tile * weights.blocks + block) * TILE + lane] * x.scales[index];
                total = ((sum - x.offsets[index]) as f32).mul_add(scale, total);
            }
            // SAFETY: in bounds, and this column is ours (the caller's contract).
            unsafe { *out.add(row * weights.n + column) = total };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{PackedWeights, QuantisedRows, TILE};

    /// [`super::quantise_block`] in AVX-512: the same scale, levels and sum (the product
    /// rounds to the nearest even level, as `round_ties_even` does).
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BW; `x` and `q` hold the same multiple of 16 values.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantise_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
        debug_assert!(x.len() == q.len() && x.len().is_multiple_of(16));
        let mut largest = _mm512_setzero_ps();
        for chunk in x.chunks_exact(16) {
            // SAFETY: 16 floats.
            let v = unsafe { _mm512_loadu_ps(chunk.as_ptr()) };
            largest = _mm512_max_ps(largest, _mm512_abs_ps(v));
        }
        let scale = _mm512_reduce_max_ps(largest) / 127.0;
        let reciprocal = _mm512_set1_ps(if scale != 0.0 { 1.0 / scale } else { 0.0 });
        let mut sums = _mm512_setzero_si512();
        for (chunk, out) in x.chunks_exact(16).zip(q.chunks_exact_mut(16)) {
            // SAFETY: 16 floats in, 16 bytes out.
            unsafe {
                let v = _mm512_mul_ps(_mm512_loadu_ps(chunk.as_ptr()), reciprocal);
                let levels = _mm512_cvtps_epi32(v);
                sums = _mm512_add_epi32(sums, levels);
                _mm_storeu_si128(out.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(levels));
            }
        }
        (scale, _mm512_reduce_add_epi32(sums) * 128)
    }

    /// `MR` rows from `row0` times the two tiles of pair `pair`.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and VNNI; `x` holds rows `row0..row0 + MR`; `out` holds
    /// `[rows, N]` floats.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn pair<const MR: usize>(
        weights: &PackedWeights,
        x: &QuantisedRows,
        row0: usize,
        pair: usize,
        out: *mut f32,
    ) {
        let k = weights.k;
        let quads = k / 4;
        let quads_per_block = weights.block / 4;
        let blocks = weights.blocks;
        let tile0 = 2 * pair;
        // SAFETY: every offset below stays inside the buffers sized by `PackedWeights::new`
        // (pair < N / 32, quad < K / 4, block < K / block_size) and `QuantisedRows::resize`
        // (rows row0..row0 + MR), and inside `out` per the contract.
        unsafe {
            let w0 = weights.values.as_ptr().add(pair * quads * 128);
            let w1 = w0.add(64);
            let s0 = weights.scales.as_ptr().add(tile0 * blocks * TILE);
            let s1 = s0.add(blocks * TILE);
            let xq = x.values.as_ptr().add(row0 * k);
            let mut totals = [[_mm512_setzero_ps(); 2]; MR];
            for block in 0..blocks {
                let mut sums = [[_mm512_setzero_si512(); 2]; MR];
                for quad in block * quads_per_block..(block + 1) * quads_per_block {
                    let a0 = _mm512_loadu_si512(w0.add(quad * 128).cast());
                    let a1 = _mm512_loadu_si512(w1.add(quad * 128).cast());
                    for (r, sum) in sums.iter_mut().enumerate() {
                        let v = xq.add(r * k + quad * 4).cast::<i32>().read_unaligned();
                        let v = _mm512_set1_epi32(v);
                        sum[0] = _mm512_dpbusd_epi32(sum[0], a0, v);
                        sum[1] = _mm512_dpbusd_epi32(sum[1], a1, v);
                    }
                }
                let ws0 = _mm512_loadu_ps(s0.add(block * TILE));
                let ws1 = _mm512_loadu_ps(s1.add(block * TILE));
                for (r, (sum, total)) in sums.iter().zip(totals.iter_mut()).enumerate() {
                    let index = (row0 + r) * blocks + block;
                    let offset = _mm512_set1_epi32(*x.offsets.get_unchecked(index));
                    let xs = _mm512_set1_ps(*x.scales.get_unchecked(index));
                    let v0 = _mm512_cvtepi32_ps(_mm512_sub_epi32(sum[0], offset));
                    let v1 = _mm512_cvtepi32_ps(_mm512_sub_epi32(sum[1], offset));
                    total[0] = _mm512_fmadd_ps(v0, _mm512_mul_ps(ws0, xs), total[0]);
                    total[1] = _mm512_fmadd_ps(v1, _mm512_mul_ps(ws1, xs), total[1]);
                }
            }
            for (r, total) in totals.iter().enumerate() {
                let o = out.add((row0 + r) * weights.n + tile0 * TILE);
                _mm512_storeu_ps(o, total[0]);
                _mm512_storeu_ps(o.add(TILE), total[1]);
            }
        }
    }
}

/// How [`multiply`] shares out work: `parallel(count, f)` runs `f(i)` for every `i < count`.
pub type Parallel<'a> = &'a dyn Fn(usize, &(dyn Fn(usize) + Sync));

/// `out = x · weights` for `rows` rows of `x` (`[rows, K]`), `out` `[rows, N]`.
///
/// `parallel(count, f)` must run `f(i)` once for every `i < count`, on any threads, and
/// return when all have run. `simd` selects the AVX-512 VNNI kernel and may be true only
/// where [`supported`] is; the portable loop gives the same bits.
///
/// # Panics
/// If `x` or `out` does not hold `rows` rows.
pub fn multiply(
    weights: &PackedWeights,
    x: &[f32],
    rows: usize,
    scratch: &mut QuantisedRows,
    out: &mut [f32],
    simd: bool,
    parallel: Parallel<'_>,
) {
    let k = weights.k;
    assert_eq!(x.len(), rows * k, "x holds {rows} rows of K = {k}");
    assert_eq!(out.len(), rows * weights.n, "out holds {rows} rows of N");
    let simd = simd && supported();
    scratch.resize(rows, k, weights.blocks);
    // Quantise the rows: in chunks over the pool once there are enough of them.
    const CHUNK: usize = 16;
    let buffers = Shared(RowsOut {
        values: scratch.values.as_mut_ptr(),
        scales: scratch.scales.as_mut_ptr(),
        offsets: scratch.offsets.as_mut_ptr(),
    });
    let quantise = |chunk: usize| {
        let start = chunk * CHUNK;
        let end = (start + CHUNK).min(rows);
        // SAFETY: chunks are disjoint rows; `scratch` was sized for `rows`.
        unsafe { quantise_rows(x, k, weights.block, start..end, buffers.get(), simd) };
    };
    let chunks = rows.div_ceil(CHUNK);
    if chunks > 1 {
        parallel(chunks, &quantise);
    } else {
        quantise(0);
    }
    let scratch: &QuantisedRows = scratch;
    let target = Shared(out.as_mut_ptr());
    let product = |pair: usize| {
        // SAFETY: each pair writes its own 32 columns of `out` (`[rows, N]`); the CPU check
        // is `simd`'s (set from `supported`).
        unsafe { pair_product(weights, scratch, rows, pair, *target.get(), simd) };
    };
    parallel(weights.n / PAIR, &product);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serial(count: usize, f: &(dyn Fn(usize) + Sync)) {
        (0..count).for_each(f);
    }

    fn threads(count: usize, f: &(dyn Fn(usize) + Sync)) {
        std::thread::scope(|s| {
            let half = count / 2;
            s.spawn(move || (half..count).for_each(f));
            (0..half).for_each(f);
        });
    }

    struct Case {
        b: Vec<u8>,
        scales: Vec<f32>,
        x: Vec<f32>,
        k: usize,
        n: usize,
        block: usize,
        rows: usize,
    }

    fn case(k: usize, n: usize, block: usize, rows: usize, seed: u64) -> Case {
        let mut state = seed;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let b = (0..n * k).map(|_| (next() % 256) as u8).collect();
        let scales = (0..n * (k / block))
            .map(|_| (next() % 2001) as f32 * 1e-5 - 0.01)
            .collect();
        let mut x: Vec<f32> = (0..rows * k)
            .map(|_| (next() % 20001) as f32 * 1e-3 - 10.0)
            .collect();
        // An all-zero block (zero scale) and an outlier.
        x[..block].fill(0.0);
        x[rows * k - 1] = 300.0;
        Case {
            b,
            scales,
            x,
            k,
            n,
            block,
            rows,
        }
    }

    /// `MatMulNBits`' definition: dequantised weights times the rows quantised per block.
    fn reference(c: &Case) -> Vec<f64> {
        let blocks = c.k / c.block;
        let mut out = vec![0f64; c.rows * c.n];
        for row in 0..c.rows {
            let mut q = vec![0i8; c.k];
            let x = &c.x[row * c.k..(row + 1) * c.k];
            let s: Vec<f32> = x
                .chunks_exact(c.block)
                .zip(q.chunks_exact_mut(c.block))
                .map(|(xs, qs)| quantise_block(xs, qs).0)
                .collect();
            for col in 0..c.n {
                let mut total = 0f64;
                for (kk, level) in q.iter().enumerate() {
                    let b = kk / c.block;
                    let w = (f64::from(c.b[col * c.k + kk]) - 128.0)
                        * f64::from(c.scales[col * blocks + b]);
                    total += w * f64::from(*level) * f64::from(s[b]);
                }
                out[row * c.n + col] = total;
            }
        }
        out
    }

    fn run(c: &Case, simd: bool, parallel: Parallel<'_>) -> Vec<f32> {
        let weights = PackedWeights::new(&c.b, &c.scales, c.k, c.n, c.block).unwrap();
        let mut out = vec![f32::NAN; c.rows * c.n];
        let mut scratch = QuantisedRows::default();
        multiply(
            &weights,
            &c.x,
            c.rows,
            &mut scratch,
            &mut out,
            simd,
            parallel,
        );
        out
    }

    #[test]
    fn products_match_the_definition_for_every_row_count_and_block() {
        for (k, n, block) in [(64, 32, 16), (128, 64, 32), (256, 96, 128), (1152, 32, 16)] {
            for rows in [1, 2, 5, 6, 7, 13, 17, 40] {
                let c = case(k, n, block, rows, (k * 1000 + rows) as u64);
                let expected = reference(&c);
                let got = run(&c, false, &serial);
                let largest = expected.iter().fold(0f64, |m, v| m.max(v.abs()));
                for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                    assert!(
                        (f64::from(*g) - e).abs() <= 1e-5 * largest.max(1.0),
                        "k {k} n {n} block {block} rows {rows} [{i}]: {g} vs {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_simd_kernel_equals_the_portable_one_bit_for_bit_on_any_threads() {
        // Without AVX-512 VNNI, `simd = true` runs the portable loop: the same bits either way.
        for (k, n, block) in [(768, 256, 32), (1152, 64, 16), (768, 96, 128)] {
            for rows in [1, 6, 7, 12, 19, 64] {
                let c = case(k, n, block, rows, rows as u64 + 7);
                let portable = run(&c, false, &serial);
                assert_eq!(run(&c, true, &serial), portable, "k {k} rows {rows}");
                assert_eq!(run(&c, true, &threads), portable, "k {k} rows {rows}");
            }
        }
    }

    #[test]
    fn shapes_the_kernel_cannot_take_are_refused() {
        assert!(fits(768, 256, 8, 32));
        assert!(!fits(768, 256, 4, 32), "4 bits");
        assert!(!fits(768, 240, 8, 32), "N not a multiple of 32");
        assert!(!fits(760, 256, 8, 32), "K not a multiple of the block");
        assert!(!fits(768, 256, 8, 8), "blocks under 16");
        assert!(!fits(768, 256, 8, 24), "blocks not a multiple of 16");
        let err = PackedWeights::new(&[0; 10], &[0.0; 2], 64, 32, 32).unwrap_err();
        assert!(err.contains("2048"), "{err}");
        let err = PackedWeights::new(&[0; 2048], &[0.0; 3], 64, 32, 32).unwrap_err();
        assert!(err.contains("scales"), "{err}");
    }
}
