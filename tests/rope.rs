//! RoPE family on the CPU: the fast path against the f64 reference (random data, strided
//! and fused views, partial rotary, both pairings, N = 0, 1 and primes), bit-exact
//! equalities between variants, and argument validation.

mod rope_common;

use half::{bf16, f16};
use proptest::prelude::*;
use rope_common::*;
use vlkernels::rope::{HeadsLayout, Pairing, RopeParams, RopeVariant};
use vlkernels::FloatElem;

fn check_fast_vs_reference<T: FloatElem>(
    p: &RopeParams,
    n: usize,
    hq: usize,
    hkv: usize,
    placement: Placement,
    seed: u64,
) {
    let mut fast = Case::<T>::new(n, hq, hkv, p.head_dim, placement, seed);
    let input = fast.clone_case();
    let mut reference = fast.clone_case();
    let pos = positions(p.variant.position_rows(), n, 9000, false, seed ^ 7);
    reference.reference(p, &pos).unwrap();
    fast.apply(p, &pos).unwrap();
    let err = max_error(&fast.q, &reference.q, &input.q).max(max_error(&fast.k, &reference.k, &input.k));
    assert!(
        err <= tolerance::<T>(),
        "{} {:?} n={n} heads {hq}/{hkv} {placement:?}: error {err:e} > {:e}",
        T::DTYPE,
        p,
        tolerance::<T>()
    );
}

fn all_variants_all_placements<T: FloatElem>() {
    for (hq, hkv) in [(28, 4), (32, 8), (4, 4)] {
        for (d, r) in [(128, 128), (64, 32), (80, 76)] {
            for variant in variants(r, hkv) {
                for pairing in [Pairing::Neox, Pairing::GptJ] {
                    let p = RopeParams::new(d, variant)
                        .with_rotary_dim(r)
                        .with_theta(1e6)
                        .with_pairing(pairing)
                        .with_attention_scaling(if pairing == Pairing::GptJ { 1.25 } else { 1.0 });
                    for (i, placement) in [Placement::Separate, Placement::Fused, Placement::Padded]
                        .into_iter()
                        .enumerate()
                    {
                        for n in [0, 1, 7] {
                            check_fast_vs_reference::<T>(&p, n, hq, hkv, placement, (n * 31 + i) as u64);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn fast_matches_reference_f32() {
    all_variants_all_placements::<f32>();
}

#[test]
fn fast_matches_reference_f16() {
    all_variants_all_placements::<f16>();
}

#[test]
fn fast_matches_reference_bf16() {
    all_variants_all_placements::<bf16>();
}

#[test]
fn many_tokens_split_across_threads() {
    // Enough tokens that rayon splits the work; Qwen2.5-VL-7B and Qwen3-VL-8B shapes.
    check_fast_vs_reference::<bf16>(&RopeParams::qwen2_5_vl(), 613, 28, 4, Placement::Fused, 3);
    check_fast_vs_reference::<f32>(&RopeParams::qwen3_vl(), 509, 32, 8, Placement::Separate, 4);
}

#[test]
fn qwen3_5_partial_interleaved() {
    // Qwen3.5: R = 64 of D = 256, MRoPE-I sections [11, 11, 10] (θ here is a test value).
    let p = RopeParams::new(256, RopeVariant::Interleaved { sections: [11, 11, 10] })
        .with_rotary_dim(64)
        .with_theta(1e7);
    for placement in [Placement::Separate, Placement::Fused, Placement::Padded] {
        check_fast_vs_reference::<bf16>(&p, 37, 16, 2, placement, 8);
        check_fast_vs_reference::<f32>(&p, 37, 16, 2, placement, 9);
    }
}

#[test]
fn inv_freq_override_and_scaling_are_used() {
    let inv: Vec<f32> = (0..16).map(|i| 0.5f32.powi(i)).collect();
    let p = RopeParams::new(32, RopeVariant::Plain)
        .with_inv_freq(inv.clone())
        .with_attention_scaling(0.75);
    assert_eq!(p.inv_freq(), inv);
    check_fast_vs_reference::<f32>(&p, 11, 4, 2, Placement::Padded, 9);
    // Pair 0 of a head at position 1 turns by exactly inv[0] = 1 radian, scaled by 0.75.
    let (ql, kl) = (HeadsLayout::contiguous(1, 1, 32), HeadsLayout::contiguous(1, 1, 32));
    let mut q = vec![0f32; 32];
    q[0] = 1.0;
    let mut k = q.clone();
    vlkernels::rope::apply(&p, &[1], &mut q, &ql, &mut k, &kl).unwrap();
    assert!((q[0] - 0.75 * 1f32.cos()).abs() < 1e-6 && (q[16] - 0.75 * 1f32.sin()).abs() < 1e-6);
}

/// With equal position rows, sectioned, interleaved and multi-head RoPE are plain RoPE.
fn equal_rows_equal_plain<T: FloatElem>() {
    for (hq, hkv, d, r) in [(28, 4, 128, 128), (32, 8, 128, 64), (6, 6, 64, 64)] {
        let n = 13;
        let pos3 = positions(3, n, 20000, true, 5);
        let plain = RopeParams::new(d, RopeVariant::Plain)
            .with_rotary_dim(r)
            .with_theta(5e6);
        let mut want_ref = Case::<T>::new(n, hq, hkv, d, Placement::Fused, 1);
        let mut want_fast = want_ref.clone_case();
        want_ref.reference(&plain, &pos3[..n]).unwrap();
        want_fast.apply(&plain, &pos3[..n]).unwrap();
        for variant in equal_row_variants(r, hkv) {
            let p = RopeParams {
                variant,
                ..plain.clone()
            };
            let mut got_ref = Case::<T>::new(n, hq, hkv, d, Placement::Fused, 1);
            let mut got_fast = got_ref.clone_case();
            got_ref.reference(&p, &pos3).unwrap();
            got_fast.apply(&p, &pos3).unwrap();
            assert!(got_ref.q == want_ref.q, "{variant:?} reference differs from plain RoPE");
            assert!(
                got_fast.q == want_fast.q,
                "{variant:?} fast path differs from plain RoPE"
            );
        }
    }
}

#[test]
fn equal_rows_equal_plain_bitwise() {
    equal_rows_equal_plain::<f32>();
    equal_rows_equal_plain::<bf16>();
    equal_rows_equal_plain::<f16>();
}

#[test]
fn mhrope_leaves_heads_beyond_the_sections_untouched() {
    let p = RopeParams::new(64, RopeVariant::MultiHead { sections: [1, 1, 1] });
    let mut c = Case::<f32>::new(5, 8, 4, 64, Placement::Separate, 2);
    let before = c.clone_case();
    c.apply(&p, &positions(3, 5, 100, false, 1)).unwrap();
    for t in 0..5 {
        for h in 0..8 {
            let row = |b: &[f32]| b[(t * 8 + h) * 64..(t * 8 + h + 1) * 64].to_vec();
            assert_eq!(row(&c.q) == row(&before.q), h / 2 == 3, "token {t} q head {h}");
        }
        let krow = |b: &[f32]| b[(t * 4 + 3) * 64..(t * 4 + 4) * 64].to_vec();
        assert_eq!(krow(&c.k), krow(&before.k));
    }
}

#[test]
fn vision2d_uses_row_then_column_positions() {
    // Column position 0: the second half of the pairs must not move.
    let p = RopeParams::new(16, RopeVariant::Vision2d);
    let l = HeadsLayout::contiguous(1, 1, 16);
    let mut q: Vec<f32> = uniform(16, 3);
    let orig = q.clone();
    let mut k = q.clone();
    vlkernels::rope::apply(&p, &[5, 0], &mut q, &l, &mut k, &l).unwrap();
    for j in 0..8 {
        let moved = q[j] != orig[j] || q[j + 8] != orig[j + 8];
        assert_eq!(moved, j < 4, "pair {j}");
    }
}

#[test]
fn bad_arguments_are_named() {
    let p = RopeParams::qwen2_5_vl();
    let (ql, kl) = HeadsLayout::fused_qkv(4, 28, 4, 128);
    let mut qkv = vec![bf16::ZERO; 4 * 36 * 128];
    let e = vlkernels::rope::apply_fused(&p, &[0; 4], &mut qkv, &ql, &kl)
        .unwrap_err()
        .to_string();
    assert!(e.contains("positions has 4 values, expected 3 x 4"), "{e}");
    let e = vlkernels::rope::apply_fused(&p, &[0; 12], &mut qkv[..17919], &ql, &kl)
        .unwrap_err()
        .to_string();
    assert!(e.contains("buffer holds"), "{e}");
    let e = vlkernels::rope::apply_fused(&p, &[0; 12], &mut qkv, &ql, &ql)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("kv must be at least 1 and divide q") || e.contains("overlap"),
        "{e}"
    );
    let k_over = HeadsLayout { offset: 27 * 128, ..kl };
    let e = vlkernels::rope::apply_fused(&p, &[0; 12], &mut qkv, &ql, &k_over)
        .unwrap_err()
        .to_string();
    assert!(e.contains("overlap"), "{e}");
    let short = HeadsLayout { tokens: 3, ..kl };
    let e = vlkernels::rope::apply_fused(&p, &[0; 12], &mut qkv, &ql, &short)
        .unwrap_err()
        .to_string();
    assert!(e.contains("q has 4 tokens but k has 3"), "{e}");
    let bad = RopeParams::qwen2_5_vl().with_rotary_dim(64);
    let e = vlkernels::rope::reference_fused(&bad, &[0; 12], &mut qkv, &ql, &kl)
        .unwrap_err()
        .to_string();
    assert!(e.contains("sections [16, 24, 24] must sum to rotary_dim/2 = 32"), "{e}");
    let huge = HeadsLayout {
        token_stride: usize::MAX / 2,
        ..ql
    };
    let e = vlkernels::rope::apply_fused(&p, &[0; 12], &mut qkv, &huge, &kl)
        .unwrap_err()
        .to_string();
    assert!(e.contains("overflow") || e.contains("extent"), "{e}");
}

fn dims() -> impl Strategy<Value = (usize, usize)> {
    prop_oneof![
        Just((128, 128)),
        Just((128, 64)),
        Just((64, 48)),
        Just((256, 64)),
        Just((40, 20))
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn prop_fast_matches_reference(
        heads in prop_oneof![Just((28usize, 4usize)), Just((32, 8)), Just((8, 8)), Just((3, 1))],
        (d, r) in dims(),
        variant_idx in 0usize..5,
        gptj in any::<bool>(),
        n in prop_oneof![Just(0usize), Just(1), Just(2), Just(5), Just(17)],
        placement in prop_oneof![Just(Placement::Separate), Just(Placement::Fused), Just(Placement::Padded)],
        dtype in 0usize..3,
        theta in prop_oneof![Just(1e4), Just(1e6), Just(5e6)],
        seed in any::<u64>(),
    ) {
        let vs = variants(r, heads.1);
        let variant = vs[variant_idx % vs.len()];
        let p = RopeParams::new(d, variant)
            .with_rotary_dim(r)
            .with_theta(theta)
            .with_pairing(if gptj { Pairing::GptJ } else { Pairing::Neox });
        match dtype {
            0 => check_fast_vs_reference::<f32>(&p, n, heads.0, heads.1, placement, seed),
            1 => check_fast_vs_reference::<f16>(&p, n, heads.0, heads.1, placement, seed),
            _ => check_fast_vs_reference::<bf16>(&p, n, heads.0, heads.1, placement, seed),
        }
    }
}

#[test]
fn readme_example() -> vlkernels::Result<()> {
    use vlkernels::rope::{self, positions::*};
    let params = RopeParams::qwen3_vl();
    let segs = [Segment::Text(5), Segment::Image { t: 1, h: 4, w: 4 }, Segment::Text(3)];
    let pos = mrope_positions(&segs, &MropeOptions::qwen3_vl())?;
    let (q, k) = HeadsLayout::fused_qkv(pos.tokens, 32, 8, 128);
    let mut qkv = vec![half::bf16::ONE; pos.tokens * 48 * 128];
    rope::apply_fused(&params, &pos.ids, &mut qkv, &q, &k)?;
    assert_eq!(pos.tokens, 12);
    assert!(qkv[11 * 48 * 128] != half::bf16::ONE);
    Ok(())
}
