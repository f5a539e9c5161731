//! CUDA attention against the f64 CPU reference (bf16: max error ≤ 1.6e-2·(1+|ref|),
//! f16: ≤ 2e-3·(1+|ref|): output rounding plus P rounded to 16 bits before P·V).
//! Runs when a CUDA device is present; prints SKIPPED otherwise, and fails under
//! `VLK_REQUIRE_GPU=1`. Outputs are poisoned with NaN before each launch.

mod common;

use half::{bf16, f16};
use std::sync::Arc;
use vlkernels::attention::cuda::{attention_cuda, CudaAttentionPlan};
use vlkernels::attention::{attention_reference, AttentionArgs, AttnElem};
use vlkernels::cuda::CudaDevice;

fn random<T: AttnElem>(n: usize, seed: u64, amp: f32) -> Vec<T> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            T::from_f32(((x >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * amp)
        })
        .collect()
}

fn cu(lens: &[usize]) -> Vec<usize> {
    let mut c = vec![0];
    for &l in lens {
        c.push(c.last().unwrap() + l);
    }
    c
}

fn tol<T: AttnElem>() -> f64 {
    if T::DTYPE == vlkernels::DType::BF16 {
        1.6e-2
    } else {
        2e-3
    }
}

/// Runs CUDA on contiguous buffers and compares with the reference; returns the max error.
#[allow(clippy::too_many_arguments)]
fn check<T: AttnElem>(
    dev: &Arc<CudaDevice>,
    lens_q: &[usize],
    lens_k: &[usize],
    used: Option<&[usize]>,
    hq: usize,
    hkv: usize,
    d: usize,
    causal: bool,
    splits: Option<usize>,
) -> f64 {
    let (cq, ck) = (cu(lens_q), cu(lens_k));
    let (nq, nk) = (*cq.last().unwrap(), *ck.last().unwrap());
    let seed = (nq * 31 + nk * 7 + d + hq * 1000) as u64;
    let q = random::<T>(nq * hq * d, seed, 2.0);
    let k = random::<T>(nk * hkv * d, seed + 1, 2.0);
    let v = random::<T>(nk * hkv * d, seed + 2, 1.0);
    let mut args = AttentionArgs::new(&cq, &ck, hq, hkv, d).with_causal(causal);
    if let Some(u) = used {
        args = args.with_seqused_k(u);
    }
    let reference = attention_reference(&args, &q, &k, &v).unwrap();
    let (qd, kd, vd) = (
        dev.upload(&q).unwrap(),
        dev.upload(&k).unwrap(),
        dev.upload(&v).unwrap(),
    );
    let mut od = dev.upload(&vec![T::from_f32(f32::NAN); nq * hq * d]).unwrap();
    let plan = CudaAttentionPlan::new(dev, &args, splits).unwrap();
    plan.run(&qd, &kd, &vd, &mut od).unwrap();
    let out = dev.download(&od).unwrap();
    let mut worst = 0f64;
    for (i, (o, r)) in out.iter().zip(&reference).enumerate() {
        let o = o.to_f32() as f64;
        let err = (o - r).abs() / (1.0 + r.abs());
        assert!(
            err <= tol::<T>(),
            "{:?} q {lens_q:?} k {lens_k:?} heads {hq}/{hkv} d {d} causal {causal} splits {}: element {i}: got {o}, want {r}",
            T::DTYPE,
            plan.num_splits()
        );
        worst = worst.max(err);
    }
    worst
}

#[test]
fn gpu_matches_reference_every_head_dim() {
    let Some(dev) = common::gpu_or_skip("gpu_matches_reference_every_head_dim") else {
        return;
    };
    let lens = [0, 1, 63, 64, 65];
    for d in [64, 72, 80, 96, 128] {
        for causal in [false, true] {
            let e1 = check::<bf16>(&dev, &lens, &lens, None, 2, 2, d, causal, None);
            let e2 = check::<f16>(&dev, &lens, &lens, None, 8, 2, d, causal, None);
            eprintln!("d {d} causal {causal}: max error bf16 {e1:.2e}, f16 {e2:.2e}");
        }
    }
}

#[test]
fn gpu_long_segment_and_tiny_windows() {
    let Some(dev) = common::gpu_or_skip("gpu_long_segment_and_tiny_windows") else {
        return;
    };
    for causal in [false, true] {
        let e = check::<bf16>(&dev, &[4097], &[4097], None, 1, 1, 80, causal, None);
        eprintln!("4097 causal {causal}: {e:.2e}");
    }
    let tiny: Vec<usize> = (0..300).map(|i| (i * 7 + 3) % 19).collect();
    let e = check::<bf16>(&dev, &tiny, &tiny, None, 4, 4, 80, false, None);
    eprintln!("300 tiny windows: {e:.2e}");
}

#[test]
fn gpu_gqa_ratios_1_4_7() {
    let Some(dev) = common::gpu_or_skip("gpu_gqa_ratios_1_4_7") else {
        return;
    };
    for (hq, hkv) in [(4, 4), (8, 2), (7, 1), (28, 4)] {
        let e = check::<bf16>(&dev, &[37, 70, 129], &[37, 70, 129], None, hq, hkv, 128, true, None);
        eprintln!("gqa {hq}/{hkv}: {e:.2e}");
    }
}

#[test]
fn gpu_decode_split_kv() {
    let Some(dev) = common::gpu_or_skip("gpu_decode_split_kv") else {
        return;
    };
    for splits in [Some(1), Some(3), Some(8), None] {
        check::<bf16>(&dev, &[1, 1, 2, 3], &[0, 1, 300, 1000], None, 28, 4, 128, true, splits);
        check::<bf16>(
            &dev,
            &[1, 1],
            &[2048, 2048],
            Some(&[1500, 2047]),
            32,
            8,
            128,
            true,
            splits,
        );
        check::<f16>(&dev, &[1], &[777], None, 16, 16, 80, false, splits);
    }
    check::<bf16>(&dev, &[5], &[2], None, 2, 1, 64, true, None);
}

#[test]
fn gpu_strided_fused_qkv() {
    let Some(dev) = common::gpu_or_skip("gpu_strided_fused_qkv") else {
        return;
    };
    let (h, d) = (4, 80);
    let c = cu(&[17, 0, 183]);
    let n = *c.last().unwrap();
    let row = 3 * h * d;
    let qkv = random::<bf16>(n * row, 99, 2.0);
    let out_stride = h * d + 24;
    let args = AttentionArgs::new(&c, &c, h, h, d).with_row_strides(row, row, row, out_stride);
    let reference = attention_reference(&args, &qkv[..], &qkv[h * d..], &qkv[2 * h * d..]).unwrap();
    let qkv_d = dev.upload(&qkv).unwrap();
    let mut od = dev.upload(&vec![bf16::NAN; n * out_stride]).unwrap();
    attention_cuda(
        &dev,
        &args,
        &qkv_d.slice(..),
        &qkv_d.slice(h * d..),
        &qkv_d.slice(2 * h * d..),
        &mut od,
        None,
    )
    .unwrap();
    let out = dev.download(&od).unwrap();
    for t in 0..n {
        for c in 0..out_stride {
            let got = out[t * out_stride + c].to_f32() as f64;
            if c < h * d {
                let want = reference[t * h * d + c];
                assert!(
                    (got - want).abs() <= 1.6e-2 * (1.0 + want.abs()),
                    "token {t} elem {c}: {got} vs {want}"
                );
            } else {
                assert!(got.is_nan(), "row gap written at token {t}");
            }
        }
    }
}

#[test]
fn gpu_rejects_bad_arguments() {
    let Some(dev) = common::gpu_or_skip("gpu_rejects_bad_arguments") else {
        return;
    };
    let c = [0usize, 4];
    let e = CudaAttentionPlan::new(&dev, &AttentionArgs::new(&c, &c, 2, 2, 88), None)
        .err()
        .unwrap();
    assert!(e.to_string().contains("head_dim 88"), "{e}");
    let e = CudaAttentionPlan::new(&dev, &AttentionArgs::new(&c, &c, 2, 2, 64), Some(0))
        .err()
        .unwrap();
    assert!(e.to_string().contains("num_splits 0"), "{e}");
    let plan = CudaAttentionPlan::new(&dev, &AttentionArgs::new(&c, &c, 2, 2, 64), None).unwrap();
    let buf = dev.upload(&vec![0f32; 4 * 2 * 64]).unwrap();
    let mut out = dev.upload(&vec![0f32; 4 * 2 * 64]).unwrap();
    assert!(plan
        .run(&buf, &buf, &buf, &mut out)
        .unwrap_err()
        .to_string()
        .contains("f32"));
    let short = dev.upload(&vec![bf16::ZERO; 4 * 2 * 64 - 1]).unwrap();
    let mut o = dev.upload(&vec![bf16::ZERO; 4 * 2 * 64]).unwrap();
    assert!(plan.run(&short, &short, &short, &mut o).is_err());
}
