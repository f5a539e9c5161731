//! Criterion benchmarks of a handful of permutations (bytes read + written
//! as throughput), each beside a memcpy of the same bytes.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vlkernels::{PermuteOptions, PermutePlan};

fn cases() -> Vec<(&'static str, Vec<usize>, Vec<usize>, usize)> {
    vec![
        ("transpose f32 2048x2048", vec![2048, 2048], vec![1, 0], 4),
        ("hptt (384,384,368)->(1,0,2) f32", vec![384, 384, 368], vec![1, 0, 2], 4),
        (
            "hptt (96,75,75,96)->(3,2,1,0) f32 (scaled)",
            vec![48, 38, 38, 48],
            vec![3, 2, 1, 0],
            4,
        ),
        (
            "patchify qwen2.5-vl f32",
            vec![1, 2, 3, 35, 2, 14, 35, 2, 14],
            vec![0, 3, 6, 4, 7, 2, 1, 5, 8],
            4,
        ),
        ("HWC->CHW u8 912x1368x3", vec![912, 1368, 3], vec![2, 0, 1], 1),
        ("BSHD->BHSD bf16", vec![1, 1024, 32, 128], vec![0, 2, 1, 3], 2),
    ]
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("permute");
    g.sample_size(10);
    for (name, shape, perm, es) in cases() {
        let bytes = shape.iter().product::<usize>() * es;
        let src = vlkernels::buffer::huge_page_buffer(bytes);
        let mut dst = vlkernels::buffer::huge_page_buffer(bytes);
        g.throughput(Throughput::Bytes(2 * bytes as u64));
        let plan = PermutePlan::new(&shape, &perm, es, &PermuteOptions::default()).unwrap();
        g.bench_function(BenchmarkId::new("vlk", name), |b| {
            b.iter(|| plan.execute_bytes(&src, &mut dst).unwrap())
        });
        g.bench_function(BenchmarkId::new("memcpy", name), |b| {
            b.iter(|| dst.copy_from_slice(&src))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
