//! CPU attention (portable and AVX2 kernels) against the naive f64 reference on
//! random inputs: segment lengths 0, 1, 63, 64, 65, 4097, many tiny windows,
//! GQA ratios 1, 4, 7, every head dim (multiples of 8 up to 256), causal and
//! not, decode against a KV cache, strided views, f32/bf16/f16. Outputs are
//! poisoned with NaN first, so an unwritten element fails.

use half::{bf16, f16};
use vlkernels::attention::{attention, attention_reference, attention_with, AttentionArgs, AttnElem, CpuAttnKernel};

/// Deterministic uniform values in [-amp, amp] (splitmix64).
fn random<T: AttnElem>(n: usize, seed: u64, amp: f32) -> Vec<T> {
    let mut rng = vlkernels::rng::SplitMix64::new(seed);
    (0..n)
        .map(|_| T::from_f32((rng.next_unit_f32() * 2.0 - 1.0) * amp))
        .collect()
}

fn cu(lens: &[usize]) -> Vec<usize> {
    let mut c = vec![0];
    for &l in lens {
        c.push(c.last().unwrap() + l);
    }
    c
}

fn kernels() -> Vec<CpuAttnKernel> {
    let mut k = vec![CpuAttnKernel::Portable];
    if attention_with::<f32>(
        &AttentionArgs::new(&[0], &[0], 1, 1, 8),
        &[],
        &[],
        &[],
        &mut [],
        CpuAttnKernel::Avx2,
        Some(1),
    )
    .is_ok()
    {
        k.push(CpuAttnKernel::Avx2);
    } else {
        eprintln!("NOTE: this CPU has no AVX2+FMA; only the portable attention kernel is tested");
    }
    k
}

/// Runs every kernel on `args` and compares each output element with the
/// reference within `tol·(1 + |ref|)`; the output (with its row gaps) starts as NaN.
fn check<T: AttnElem>(args: &AttentionArgs, q: &[T], k: &[T], v: &[T], tol: f64, what: &str) {
    check_threads(args, q, k, v, tol, what, &[Some(1), None])
}

fn check_threads<T: AttnElem>(
    args: &AttentionArgs,
    q: &[T],
    k: &[T],
    v: &[T],
    tol: f64,
    what: &str,
    thread_counts: &[Option<usize>],
) {
    let reference = attention_reference(args, q, k, v).unwrap();
    let (hq, d) = (args.num_q_heads, args.head_dim);
    let nq = args.num_q_tokens();
    let out_len = if nq == 0 {
        0
    } else {
        (nq - 1) * args.out_row_stride + hq * d
    };
    for kernel in kernels() {
        for &threads in thread_counts {
            let mut out = vec![T::from_f32(f32::NAN); out_len];
            attention_with(args, q, k, v, &mut out, kernel, threads).unwrap();
            for t in 0..nq {
                for c in 0..hq * d {
                    let got = out[t * args.out_row_stride + c].to_f32() as f64;
                    let want = reference[t * hq * d + c];
                    assert!(
                        (got - want).abs() <= tol * (1.0 + want.abs()),
                        "{what} {kernel:?} threads {threads:?}: token {t} elem {c}: got {got}, want {want}"
                    );
                }
                // Gaps between rows are not ours to write.
                for c in hq * d..args.out_row_stride.min(out_len - t * args.out_row_stride) {
                    assert!(
                        out[t * args.out_row_stride + c].to_f32().is_nan(),
                        "{what}: gap written"
                    );
                }
            }
        }
    }
}

fn run_case(lens_q: &[usize], lens_k: &[usize], hq: usize, hkv: usize, d: usize, causal: bool, seed: u64) {
    let (cq, ck) = (cu(lens_q), cu(lens_k));
    let (nq, nk) = (*cq.last().unwrap(), *ck.last().unwrap());
    let q = random::<f32>(nq * hq * d, seed, 1.0);
    let k = random::<f32>(nk * hkv * d, seed + 1, 1.0);
    let v = random::<f32>(nk * hkv * d, seed + 2, 1.0);
    let args = AttentionArgs::new(&cq, &ck, hq, hkv, d)
        .with_causal(causal)
        .with_scale(0.4);
    let what = format!("q {lens_q:?} k {lens_k:?} heads {hq}/{hkv} d {d} causal {causal}");
    check(&args, &q, &k, &v, 2e-5, &what);
}

#[test]
fn segment_lengths_around_the_block_size() {
    let lens = [0, 1, 63, 64, 65, 0, 129];
    for causal in [false, true] {
        run_case(&lens, &lens, 2, 2, 72, causal, 1);
        run_case(&lens, &lens, 4, 1, 80, causal, 2);
    }
}

#[test]
fn long_segment_4097() {
    // Small heads keep the f64 reference quick; the pool splits the 4097 rows.
    for causal in [false, true] {
        let c = [0, 4097];
        let (q, k, v) = (
            random::<f32>(4097 * 8, 3, 1.0),
            random::<f32>(4097 * 8, 4, 1.0),
            random::<f32>(4097 * 8, 5, 1.0),
        );
        let args = AttentionArgs::new(&c, &c, 1, 1, 8).with_causal(causal);
        check_threads(&args, &q, &k, &v, 2e-5, "4097", &[None]);
    }
}

#[test]
fn many_tiny_windows() {
    let lens: Vec<usize> = (0..300).map(|i| (i * 7 + 3) % 19).collect();
    run_case(&lens, &lens, 3, 3, 80, false, 4);
    run_case(&lens, &lens, 4, 2, 64, true, 5);
}

#[test]
fn gqa_ratios_1_4_7() {
    for (hq, hkv) in [(2, 2), (8, 2), (7, 1), (14, 2)] {
        for causal in [false, true] {
            run_case(&[37, 70], &[37, 70], hq, hkv, 128, causal, 6);
        }
    }
}

#[test]
fn every_head_dim() {
    for d in (8..=256).step_by(8) {
        run_case(&[1, 9, 66], &[1, 9, 66], 2, 1, d, d % 16 == 0, 7 + d as u64);
    }
}

#[test]
fn decode_against_kv_cache() {
    // 1, 2 and 3 new tokens against caches of 0, 1, 100 and 257 keys, group of 7.
    for causal in [true, false] {
        run_case(&[1, 1, 2, 3], &[0, 1, 100, 257], 7, 1, 128, causal, 8);
        run_case(&[1, 1, 1], &[500, 64, 65], 8, 2, 80, causal, 9);
    }
    // More queries than keys: the first rows see nothing and must be zero.
    run_case(&[5], &[2], 2, 1, 8, true, 10);
}

#[test]
fn kv_cache_with_spare_capacity() {
    // Cache of capacity 96 per sequence, 40 and 95 used, one new token each.
    let (hq, hkv, d) = (4, 2, 64);
    let (cq, ck, used) = (vec![0, 1, 2], vec![0, 96, 192], vec![40, 95]);
    let q = random::<f32>(2 * hq * d, 11, 1.0);
    let mut k = random::<f32>(192 * hkv * d, 12, 1.0);
    let mut v = random::<f32>(192 * hkv * d, 13, 1.0);
    let args = AttentionArgs::new(&cq, &ck, hq, hkv, d)
        .with_causal(true)
        .with_seqused_k(&used);
    // The unused tail of the cache is garbage: it must not matter.
    let mut expect_out = vec![0f32; 2 * hq * d];
    attention(&args, &q, &k, &v, &mut expect_out).unwrap();
    for s in 0..2 {
        for t in ck[s] + used[s]..ck[s + 1] {
            for x in &mut k[t * hkv * d..(t + 1) * hkv * d] {
                *x = f32::NAN;
            }
            for x in &mut v[t * hkv * d..(t + 1) * hkv * d] {
                *x = 1e30;
            }
        }
    }
    check(&args, &q, &k, &v, 2e-5, "seqused_k");
    let mut out = vec![f32::NAN; 2 * hq * d];
    attention(&args, &q, &k, &v, &mut out).unwrap();
    assert_eq!(out, expect_out);
}

#[test]
fn strided_views_of_fused_qkv() {
    // qkv is [N, 3, H, D]; out has a row stride with a gap of 24 elements.
    let (h, d) = (3, 40);
    let lens = [17, 0, 65];
    let c = cu(&lens);
    let n = *c.last().unwrap();
    let qkv = random::<f32>(n * 3 * h * d, 14, 1.0);
    let row = 3 * h * d;
    let hd = h * d;
    let args = AttentionArgs::new(&c, &c, h, h, d).with_row_strides(row, row, row, hd + 24);
    check(&args, &qkv[..], &qkv[hd..], &qkv[2 * hd..], 2e-5, "fused qkv");
}

#[test]
fn half_precision_inputs() {
    let lens = [0, 1, 63, 64, 65];
    let c = cu(&lens);
    let n = *c.last().unwrap();
    let (hq, hkv, d) = (4, 1, 80);
    let args = AttentionArgs::new(&c, &c, hq, hkv, d).with_causal(true);
    // The reference reads the same rounded inputs; the error is the output rounding.
    let (q, k, v) = (
        random::<bf16>(n * hq * d, 15, 2.0),
        random::<bf16>(n * hkv * d, 16, 2.0),
        random::<bf16>(n * hkv * d, 17, 1.0),
    );
    check(&args, &q, &k, &v, 8e-3, "bf16");
    let (q, k, v) = (
        random::<f16>(n * hq * d, 15, 2.0),
        random::<f16>(n * hkv * d, 16, 2.0),
        random::<f16>(n * hkv * d, 17, 1.0),
    );
    check(&args, &q, &k, &v, 1e-3, "f16");
}

#[test]
fn large_logits_stay_finite() {
    // Logits up to ~±400: the online max must keep exp in range.
    let c = cu(&[130]);
    let (q, k, v) = (
        random::<f32>(130 * 64, 18, 10.0),
        random::<f32>(130 * 64, 19, 10.0),
        random::<f32>(130 * 64, 20, 1.0),
    );
    let args = AttentionArgs::new(&c, &c, 1, 1, 64).with_scale(1.0);
    check(&args, &q, &k, &v, 2e-4, "large logits");
}

#[test]
fn bad_arguments_are_errors() {
    let c = [0usize, 4];
    let buf = vec![0f32; 4 * 2 * 8];
    let mut out = vec![0f32; 4 * 2 * 8];
    let err = |args: &AttentionArgs, out: &mut [f32]| attention(args, &buf, &buf, &buf, out).unwrap_err().to_string();
    assert!(err(&AttentionArgs::new(&c, &c, 2, 2, 12), &mut out).contains("head_dim 12"));
    assert!(err(&AttentionArgs::new(&c, &c, 2, 2, 264), &mut out).contains("head_dim 264"));
    assert!(err(&AttentionArgs::new(&c, &c, 3, 2, 8), &mut out).contains("num_q_heads 3"));
    assert!(err(&AttentionArgs::new(&c, &c, 2, 0, 8), &mut out).contains("num_kv_heads 0"));
    assert!(err(&AttentionArgs::new(&[1, 4], &c, 2, 2, 8), &mut out).contains("cu_seqlens_q[0] = 1"));
    assert!(err(&AttentionArgs::new(&[0, 3, 2, 4], &[0, 1, 2, 4], 2, 2, 8), &mut out).contains("decreases"));
    assert!(err(&AttentionArgs::new(&[], &[], 2, 2, 8), &mut out).contains("empty"));
    assert!(err(&AttentionArgs::new(&c, &[0, 2, 4], 2, 2, 8), &mut out).contains("entries"));
    assert!(err(&AttentionArgs::new(&[0, 5], &c, 2, 2, 8), &mut out).contains("q has 64"));
    assert!(err(&AttentionArgs::new(&c, &c, 2, 2, 8), &mut out[1..]).contains("out has 63"));
    assert!(err(&AttentionArgs::new(&c, &c, 2, 2, 8).with_scale(f32::NAN), &mut out).contains("scale"));
    assert!(err(
        &AttentionArgs::new(&c, &c, 2, 2, 8).with_row_strides(8, 16, 16, 16),
        &mut out
    )
    .contains("row stride 8"));
    assert!(err(&AttentionArgs::new(&c, &c, 2, 2, 8).with_seqused_k(&[5]), &mut out).contains("seqused_k[0] = 5"));
    assert!(err(&AttentionArgs::new(&c, &c, 2, 2, 8).with_seqused_k(&[1, 1]), &mut out).contains("seqused_k has 2"));
    let args = AttentionArgs::new(&c, &c, 2, 2, 8);
    assert!(attention_with(&args, &buf, &buf, &buf, &mut out, CpuAttnKernel::Portable, Some(0)).is_err());
}

#[test]
fn flop_count_convention() {
    let c = cu(&[4, 3]);
    let args = AttentionArgs::new(&c, &c, 2, 1, 8);
    assert_eq!(args.flops(), 4.0 * 8.0 * 2.0 * (16.0 + 9.0));
    let causal = args.clone().with_causal(true);
    assert_eq!(causal.flops(), 4.0 * 8.0 * 2.0 * (10.0 + 6.0));
}
