//! Criterion benchmark: the `q8` kernel (`akidb_q8_kernel`, the `ai.akidb::MatMulQ8`
//! operator's) on EmbeddingGemma-300m's 168 layer products alone, in the `q8` recipe's shapes
//! and blocks (q 768→768, k and v 768→256, o 768→768, gate and up 768→1152 in blocks of 128,
//! v in 32, down 1152→768 in 16; random weights, which do not change the time), on 1, 6 and
//! 62 rows (a short text, a 50-word one), one thread.
//!
//! `cargo bench --bench q8_kernel`. The same products on ONNX Runtime's `MatMulNBits`:
//! `python3 benches/q8_products.py --rows N --threads 1` (its `recipe` line).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use akidb_q8_kernel::{PackedWeights, QuantisedRows, multiply, supported};
use criterion::{BenchmarkId, Criterion, SamplingMode};

/// One layer's products: (K, N, block size).
const LAYER: [(usize, usize, usize); 7] = [
    (768, 768, 128),
    (768, 256, 128),
    (768, 256, 32),
    (768, 768, 128),
    (768, 1152, 128),
    (768, 1152, 128),
    (1152, 768, 16),
];

fn random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn bench(c: &mut Criterion) {
    let mut state = 0x5eed_u64;
    let weights: Vec<PackedWeights> = (0..24)
        .flat_map(|_| LAYER)
        .map(|(k, n, block)| {
            let b: Vec<u8> = (0..n * k).map(|_| random(&mut state) as u8).collect();
            let scales: Vec<f32> = (0..n * k / block)
                .map(|_| (random(&mut state) % 1000) as f32 * 1e-6)
                .collect();
            PackedWeights::new(&b, &scales, k, n, block).unwrap()
        })
        .collect();
    let serial = |count: usize, f: &(dyn Fn(usize) + Sync)| (0..count).for_each(f);
    let mut group = c.benchmark_group(if supported() {
        "q8_kernel/avx512_vnni"
    } else {
        "q8_kernel/portable"
    });
    group
        .sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for rows in [1, 6, 62] {
        let inputs: Vec<Vec<f32>> = LAYER
            .iter()
            .map(|&(k, _, _)| {
                (0..rows * k)
                    .map(|_| (random(&mut state) % 2001) as f32 * 1e-3 - 1.0)
                    .collect()
            })
            .collect();
        let mut outputs: Vec<Vec<f32>> = weights.iter().map(|w| vec![0.0; rows * w.n()]).collect();
        let mut scratch = QuantisedRows::default();
        group.bench_with_input(BenchmarkId::new("rows", rows), &rows, |b, &rows| {
            b.iter(|| {
                for (i, (w, out)) in weights.iter().zip(outputs.iter_mut()).enumerate() {
                    multiply(
                        w,
                        &inputs[i % LAYER.len()],
                        rows,
                        &mut scratch,
                        out,
                        true,
                        &serial,
                    );
                }
            });
        });
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}
