//! RoPE family on a CUDA device against the CPU f64 reference (f32 error < 1e-5,
//! f16 < 2e-3, bf16 < 1e-2, as measured by rope_common::max_error). Every test prints
//! loudly and returns when no device is present; with VLK_REQUIRE_GPU=1 it fails.

mod common;
mod rope_common;

use half::{bf16, f16};
use rope_common::*;
use std::sync::Arc;
use vlkernels::cuda::CudaDevice;
use vlkernels::rope::{CudaRope, HeadsLayout, Pairing, RopeParams, RopeVariant};
use vlkernels::FloatElem;

/// Runs the case on the device and returns (q, k) as downloaded.
fn run_cuda<T: FloatElem>(dev: &Arc<CudaDevice>, p: &RopeParams, case: &Case<T>, pos: &[i64]) -> (Vec<T>, Vec<T>) {
    let rope = CudaRope::new(dev, p, case.ql.heads, case.kl.heads).unwrap();
    let pos_d = dev.upload(pos).unwrap();
    let mut q = dev.upload(&case.q).unwrap();
    if case.fused {
        rope.apply_fused(&pos_d, &mut q, &case.ql, &case.kl).unwrap();
        (dev.download(&q).unwrap(), Vec::new())
    } else {
        let mut k = dev.upload(&case.k).unwrap();
        rope.apply(&pos_d, &mut q, &case.ql, &mut k, &case.kl).unwrap();
        (dev.download(&q).unwrap(), dev.download(&k).unwrap())
    }
}

fn cuda_vs_reference<T: FloatElem>(dev: &Arc<CudaDevice>) -> usize {
    let mut cases = 0;
    let mut worst = 0f64;
    for (hq, hkv) in [(28, 4), (32, 8), (16, 16)] {
        for (d, r) in [(128, 128), (256, 64), (80, 76)] {
            for variant in variants(r, hkv) {
                for pairing in [Pairing::Neox, Pairing::GptJ] {
                    let p = RopeParams::new(d, variant)
                        .with_rotary_dim(r)
                        .with_theta(1e6)
                        .with_pairing(pairing)
                        .with_attention_scaling(if pairing == Pairing::GptJ { 1.25 } else { 1.0 });
                    for placement in [Placement::Separate, Placement::Fused, Placement::Padded] {
                        // Large N only where it adds coverage: the CPU reference is slow.
                        let ns: &[usize] = if placement == Placement::Fused && pairing == Pairing::Neox {
                            &[0, 1, 7, 131]
                        } else {
                            &[1, 7]
                        };
                        for &n in ns {
                            let seed = (n * 7 + hq) as u64;
                            let case = Case::<T>::new(n, hq, hkv, d, placement, seed);
                            let pos = positions(p.variant.position_rows(), n, 9000, false, seed ^ 3);
                            let mut want = case.clone_case();
                            want.reference(&p, &pos).unwrap();
                            let (q, k) = run_cuda(dev, &p, &case, &pos);
                            let err = max_error(&q, &want.q, &case.q).max(max_error(&k, &want.k, &case.k));
                            assert!(
                                err <= tolerance::<T>(),
                                "{} {p:?} n={n} heads {hq}/{hkv} {placement:?}: error {err:e}",
                                T::DTYPE
                            );
                            worst = worst.max(err);
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "{}: {cases} cases, worst error {worst:e} (tolerance {:e})",
        T::DTYPE,
        tolerance::<T>()
    );
    cases
}

#[test]
fn cuda_matches_reference() {
    let Some(dev) = common::gpu_or_skip("cuda_matches_reference") else {
        return;
    };
    let (_, loader) = dev.module("rope").unwrap();
    eprintln!("{dev:?}, rope module loaded via {loader:?}");
    let n = cuda_vs_reference::<f32>(&dev) + cuda_vs_reference::<f16>(&dev) + cuda_vs_reference::<bf16>(&dev);
    assert!(n > 500);
}

#[test]
fn cuda_equal_rows_equal_plain_bitwise() {
    let Some(dev) = common::gpu_or_skip("cuda_equal_rows_equal_plain_bitwise") else {
        return;
    };
    for (hq, hkv, d, r) in [(28, 4, 128, 128), (32, 8, 128, 64)] {
        let n = 257;
        let pos3 = positions(3, n, 30000, true, 11);
        let plain = RopeParams::new(d, RopeVariant::Plain)
            .with_rotary_dim(r)
            .with_theta(5e6);
        let case = Case::<bf16>::new(n, hq, hkv, d, Placement::Fused, 4);
        let (want, _) = run_cuda(&dev, &plain, &case, &pos3[..n]);
        for variant in equal_row_variants(r, hkv) {
            let p = RopeParams {
                variant,
                ..plain.clone()
            };
            let (got, _) = run_cuda(&dev, &p, &case, &pos3);
            assert!(got == want, "{variant:?} differs from plain RoPE on the GPU");
        }
    }
}

#[test]
fn cuda_qwen3_5_partial_interleaved() {
    let Some(dev) = common::gpu_or_skip("cuda_qwen3_5_partial_interleaved") else {
        return;
    };
    let p = RopeParams::new(256, RopeVariant::Interleaved { sections: [11, 11, 10] })
        .with_rotary_dim(64)
        .with_theta(1e7);
    let case = Case::<bf16>::new(301, 16, 2, 256, Placement::Fused, 5);
    let pos = positions(3, 301, 50000, false, 6);
    let mut want = case.clone_case();
    want.reference(&p, &pos).unwrap();
    let (q, _) = run_cuda(&dev, &p, &case, &pos);
    let err = max_error(&q, &want.q, &case.q);
    assert!(err <= tolerance::<bf16>(), "error {err:e}");
}

#[test]
fn cuda_rejects_bad_arguments() {
    let Some(dev) = common::gpu_or_skip("cuda_rejects_bad_arguments") else {
        return;
    };
    let p = RopeParams::qwen3_vl();
    let rope = CudaRope::new(&dev, &p, 32, 8).unwrap();
    let (ql, kl) = HeadsLayout::fused_qkv(4, 32, 8, 128);
    let mut qkv = dev.alloc_zeros::<bf16>(4 * 48 * 128).unwrap();
    let pos = dev.upload(&[0i64; 12]).unwrap();
    let short_pos = dev.upload(&[0i64; 4]).unwrap();
    let e = rope
        .apply_fused(&short_pos, &mut qkv, &ql, &kl)
        .unwrap_err()
        .to_string();
    assert!(e.contains("positions has 4 values"), "{e}");
    let (ql2, kl2) = HeadsLayout::fused_qkv(4, 28, 4, 128);
    let e = rope.apply_fused(&pos, &mut qkv, &ql2, &kl2).unwrap_err().to_string();
    assert!(e.contains("prepared for 32 / 8"), "{e}");
    let mut small = dev.alloc_zeros::<bf16>(100).unwrap();
    let e = rope.apply_fused(&pos, &mut small, &ql, &kl).unwrap_err().to_string();
    assert!(e.contains("buffer holds 100"), "{e}");
    let big = RopeParams::new(1024, RopeVariant::Plain);
    let e = CudaRope::new(&dev, &big, 1, 1).err().unwrap().to_string();
    assert!(e.contains("rotary_dim 1024"), "{e}");
    rope.apply_fused(&pos, &mut qkv, &ql, &kl).unwrap();
    dev.synchronize().unwrap();
}
