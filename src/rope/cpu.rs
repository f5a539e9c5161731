//! CPU fast path: per token, one cos/sin table (or one per position row for MHRoPE),
//! then every q and k head of the token is widened to f32, rotated with loops the
//! compiler vectorises, and narrowed back. Tokens are split across rayon threads.

use super::params::{check_call, HeadsLayout, RopeParams, RopePlan};
use crate::{FloatElem, Result};
use rayon::prelude::*;

/// Rotates q and k (separate buffers) in place.
pub fn apply<T: FloatElem>(
    p: &RopeParams,
    positions: &[i64],
    q: &mut [T],
    q_layout: &HeadsLayout,
    k: &mut [T],
    k_layout: &HeadsLayout,
) -> Result<()> {
    apply_with(p, positions, q, q_layout, k, k_layout, true)
}

/// [`apply`], with the AVX2 form allowed or not (tests run both).
pub(crate) fn apply_with<T: FloatElem>(
    p: &RopeParams,
    positions: &[i64],
    q: &mut [T],
    q_layout: &HeadsLayout,
    k: &mut [T],
    k_layout: &HeadsLayout,
    allow_avx2: bool,
) -> Result<()> {
    let plan = check_call(p, positions.len(), q_layout, q.len(), k_layout, k.len(), false)?;
    let (qp, kp) = (RawPtr(q.as_mut_ptr()), RawPtr(k.as_mut_ptr()));
    run(&plan, p.rotary_dim, positions, qp, q_layout, kp, k_layout, allow_avx2);
    Ok(())
}

/// As [`apply`], for q and k views inside one buffer (a fused qkv tensor).
pub fn apply_fused<T: FloatElem>(
    p: &RopeParams,
    positions: &[i64],
    qkv: &mut [T],
    q_layout: &HeadsLayout,
    k_layout: &HeadsLayout,
) -> Result<()> {
    let plan = check_call(p, positions.len(), q_layout, qkv.len(), k_layout, qkv.len(), true)?;
    let ptr = RawPtr(qkv.as_mut_ptr());
    run(&plan, p.rotary_dim, positions, ptr, q_layout, ptr, k_layout, true);
    Ok(())
}

/// A buffer base shared by the threads; every thread writes disjoint rows (checked by
/// `check_call`: rows of a view do not overlap, q and k do not overlap).
#[derive(Clone, Copy)]
struct RawPtr<T>(*mut T);
unsafe impl<T: Send> Send for RawPtr<T> {}
unsafe impl<T: Send> Sync for RawPtr<T> {}

struct Scratch {
    cos: Vec<f32>,
    sin: Vec<f32>,
    row: Vec<f32>,
}

#[allow(clippy::too_many_arguments)]
fn run<T: FloatElem>(
    plan: &RopePlan,
    rotary_dim: usize,
    positions: &[i64],
    q: RawPtr<T>,
    ql: &HeadsLayout,
    k: RawPtr<T>,
    kl: &HeadsLayout,
    allow_avx2: bool,
) {
    let tokens = ql.tokens;
    if tokens == 0 {
        return;
    }
    let tables = if plan.head_axis.is_some() { plan.rows } else { 1 };
    // Enough rows per task that splitting pays off (about 64 KiB of q and k).
    let bytes_per_token = (ql.heads + kl.heads) * rotary_dim * std::mem::size_of::<T>();
    let min_len = (65536 / bytes_per_token.max(1)).max(1);
    #[cfg(target_arch = "x86_64")]
    let avx2 = allow_avx2 && crate::cpu_features().avx2 && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    let _ = allow_avx2;
    (0..tokens).into_par_iter().with_min_len(min_len).for_each_init(
        || Scratch {
            cos: vec![0.0; tables * plan.half],
            sin: vec![0.0; tables * plan.half],
            row: vec![0.0; rotary_dim],
        },
        |s, n| {
            // SAFETY: views were validated to lie inside their buffers and rows of one
            // token never overlap rows of another token or of the other view; the AVX2
            // form runs only where the CPU has AVX2 and FMA.
            unsafe {
                #[cfg(target_arch = "x86_64")]
                if avx2 {
                    return token_avx2(plan, positions, tokens, n, q, ql, k, kl, s);
                }
                token::<T, false>(plan, positions, tokens, n, q, ql, k, kl, s)
            }
        },
    );
}

/// One token: cos/sin tables, then every q and k head.
///
/// # Safety
/// As [`rotate_heads`], for both views.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn token<T: FloatElem, const AVX2: bool>(
    plan: &RopePlan,
    positions: &[i64],
    tokens: usize,
    n: usize,
    q: RawPtr<T>,
    ql: &HeadsLayout,
    k: RawPtr<T>,
    kl: &HeadsLayout,
    s: &mut Scratch,
) {
    fill_tables(plan, positions, tokens, n, s);
    rotate_heads::<T, AVX2>(plan, q, ql, n, false, s);
    rotate_heads::<T, AVX2>(plan, k, kl, n, true, s);
}

/// [`token`] compiled for AVX2 + FMA (the loops vectorise 8 f32 / 4 f64 wide).
///
/// # Safety
/// As [`token`]; the CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn token_avx2<T: FloatElem>(
    plan: &RopePlan,
    positions: &[i64],
    tokens: usize,
    n: usize,
    q: RawPtr<T>,
    ql: &HeadsLayout,
    k: RawPtr<T>,
    kl: &HeadsLayout,
    s: &mut Scratch,
) {
    token::<T, true>(plan, positions, tokens, n, q, ql, k, kl, s)
}

#[inline(always)]
fn fill_tables(plan: &RopePlan, positions: &[i64], tokens: usize, n: usize, s: &mut Scratch) {
    let half = plan.half;
    let per_head = plan.head_axis.is_some();
    for t in 0..s.cos.len() / half {
        // Angles first (into the sin table), then sin/cos over the whole table.
        for j in 0..half {
            let row = if per_head { t } else { plan.pair_axis[j] as usize };
            s.sin[t * half + j] = positions[row * tokens + n] as f32 * plan.freq[j];
        }
    }
    if s.sin.iter().all(|a| a.abs() < 1.0e6) {
        for (sv, cv) in s.sin.iter_mut().zip(s.cos.iter_mut()) {
            let (a, b) = sin_cos_reduced(*sv);
            *sv = a * plan.scale;
            *cv = b * plan.scale;
        }
    } else {
        for (sv, cv) in s.sin.iter_mut().zip(s.cos.iter_mut()) {
            let (a, b) = sin_cos(*sv);
            *sv = a * plan.scale;
            *cv = b * plan.scale;
        }
    }
}

/// sin and cos of an f32 angle, correct to f32 rounding: reduction by π/2 in f64
/// (Cody-Waite, two-part π/2, exact products for |k| < 2^20) and Taylor polynomials on
/// [-π/4, π/4] whose truncation error (< 1e-11) is far below f32 precision. Several
/// times cheaper than libm's sinf + cosf; larger angles go to libm.
pub(crate) fn sin_cos(angle: f32) -> (f32, f32) {
    if (angle as f64).abs() < 1.0e6 {
        sin_cos_reduced(angle)
    } else {
        let (s, c) = (angle as f64).sin_cos();
        (s as f32, c as f32)
    }
}

/// [`sin_cos`] for |angle| < 1e6, without branches so that loops over it vectorise.
#[inline(always)]
fn sin_cos_reduced(angle: f32) -> (f32, f32) {
    const PIO2_HI: f64 = 1.570_796_326_734_125_6; // 33 significant bits
    const PIO2_LO: f64 = 6.077_100_506_506_192e-11; // π/2 - PIO2_HI
                                                    // Round to nearest by adding and removing 1.5 * 2^52 (no SSE4.1 round needed).
    const SHIFTER: f64 = 6_755_399_441_055_744.0;
    let x = angle as f64;
    let kf = (x * std::f64::consts::FRAC_2_PI + SHIFTER) - SHIFTER;
    let r = (x - kf * PIO2_HI) - kf * PIO2_LO;
    let r2 = r * r;
    let s = r + r
        * r2
        * (-1.0 / 6.0
            + r2 * (1.0 / 120.0 + r2 * (-1.0 / 5040.0 + r2 * (1.0 / 362_880.0 + r2 * (-1.0 / 39_916_800.0)))));
    let c = 1.0
        + r2 * (-0.5
            + r2 * (1.0 / 24.0
                + r2 * (-1.0 / 720.0 + r2 * (1.0 / 40320.0 + r2 * (-1.0 / 3_628_800.0 + r2 / 479_001_600.0)))));
    // Quadrant k mod 4: odd swaps sin and cos; the sign bits follow k & 2 and (k + 1) & 2.
    let q = kf as i32 as u64;
    let swap = q & 1 == 1;
    let (s, c) = if swap { (c, s) } else { (s, c) };
    let s = f64::from_bits(s.to_bits() ^ ((q & 2) << 62));
    let c = f64::from_bits(c.to_bits() ^ (((q + 1) & 2) << 62));
    (s as f32, c as f32)
}

/// # Safety
/// Every row of token `n` in `v` must be inside the buffer behind `base` and written by
/// no other thread.
#[inline(always)]
unsafe fn rotate_heads<T: FloatElem, const AVX2: bool>(
    plan: &RopePlan,
    base: RawPtr<T>,
    v: &HeadsLayout,
    n: usize,
    is_key: bool,
    s: &mut Scratch,
) {
    let half = plan.half;
    let r = s.row.len();
    for h in 0..v.heads {
        let g = if is_key { h } else { h / plan.group };
        let t = match &plan.head_axis {
            Some(axes) if axes[g] < 0 => continue,
            Some(axes) => axes[g] as usize,
            None => 0,
        };
        let off = v.offset + n * v.token_stride + h * v.head_stride;
        let row = std::slice::from_raw_parts_mut(base.0.add(off), r);
        let (c, sn) = (&s.cos[t * half..(t + 1) * half], &s.sin[t * half..(t + 1) * half]);
        rotate_row::<T, AVX2>(row, c, sn, plan.gptj, &mut s.row);
    }
}

/// Rotates one head row: f32 in place; f16/bf16 through an f32 scratch row in three short
/// loops (widen, rotate, narrow) that vectorise, where one fused loop over both halves
/// does not.
#[inline(always)]
fn rotate_row<T: FloatElem, const AVX2: bool>(row: &mut [T], c: &[f32], s: &[f32], gptj: bool, scratch: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if AVX2 && !gptj && T::DTYPE == crate::DType::BF16 && c.len() % 8 == 0 {
        // SAFETY: AVX2 is only true inside token_avx2 (CPU checked); the row holds
        // 2 * c.len() bf16 elements (T is bf16: FloatElem is sealed).
        unsafe { rotate_neox_bf16_avx2(row.as_mut_ptr().cast::<u16>(), c, s) };
        return;
    }
    let rotate = |x: &mut [f32]| {
        if gptj {
            rotate_gptj(x, c, s)
        } else {
            rotate_neox(x, c, s)
        }
    };
    if T::DTYPE == crate::DType::F32 {
        // SAFETY: FloatElem is sealed; the only implementor with DTYPE F32 is f32 itself.
        rotate(unsafe { std::slice::from_raw_parts_mut(row.as_mut_ptr().cast::<f32>(), row.len()) });
    } else {
        T::load_f32(row, scratch);
        rotate(scratch);
        T::store_f32(scratch, row);
    }
}

/// Neox rotation of one bf16 row held in registers: 8 pairs per step, widened by a
/// shift, rotated with FMA, narrowed with round-to-nearest-even (NaN kept quiet).
///
/// # Safety
/// The CPU must have AVX2 and FMA; `row` must hold `2 * c.len()` elements and
/// `c.len()` must be a multiple of 8, with `s.len() == c.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rotate_neox_bf16_avx2(row: *mut u16, c: &[f32], s: &[f32]) {
    use std::arch::x86_64::*;
    let half = c.len();
    let widen = |p: *const u16| {
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(_mm_loadu_si128(
            p.cast(),
        ))))
    };
    let narrow = |y: __m256| {
        let u = _mm256_castps_si256(y);
        let hi = _mm256_srli_epi32::<16>(u);
        let bias = _mm256_add_epi32(_mm256_set1_epi32(0x7fff), _mm256_and_si256(hi, _mm256_set1_epi32(1)));
        let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(u, bias));
        let quiet_nan = _mm256_or_si256(hi, _mm256_set1_epi32(0x40));
        let abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fff_ffff));
        let is_nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f80_0000));
        let r = _mm256_blendv_epi8(rounded, quiet_nan, is_nan);
        // Lanes are < 2^16: pack to u16 and gather the two 64-bit halves.
        let packed = _mm256_permute4x64_epi64::<0b1000>(_mm256_packus_epi32(r, r));
        _mm256_castsi256_si128(packed)
    };
    let mut j = 0;
    while j < half {
        let (pa, pb) = (row.add(j), row.add(half + j));
        let (x1, x2) = (widen(pa), widen(pb));
        let cc = _mm256_loadu_ps(c.as_ptr().add(j));
        let ss = _mm256_loadu_ps(s.as_ptr().add(j));
        let y1 = _mm256_fmsub_ps(x1, cc, _mm256_mul_ps(x2, ss));
        let y2 = _mm256_fmadd_ps(x2, cc, _mm256_mul_ps(x1, ss));
        _mm_storeu_si128(pa.cast(), narrow(y1));
        _mm_storeu_si128(pb.cast(), narrow(y2));
        j += 8;
    }
}

#[inline(always)]
fn rotate_neox(x: &mut [f32], c: &[f32], s: &[f32]) {
    let (a, b) = x.split_at_mut(c.len());
    for (((a, b), &c), &s) in a.iter_mut().zip(b.iter_mut()).zip(c).zip(s) {
        let (x1, x2) = (*a, *b);
        *a = x1 * c - x2 * s;
        *b = x2 * c + x1 * s;
    }
}

#[inline(always)]
fn rotate_gptj(x: &mut [f32], c: &[f32], s: &[f32]) {
    for ((pair, &c), &s) in x.chunks_exact_mut(2).zip(c).zip(s) {
        let (x1, x2) = (pair[0], pair[1]);
        pair[0] = x1 * c - x2 * s;
        pair[1] = x2 * c + x1 * s;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sin_cos_is_correct_to_f32_rounding() {
        let mut worst = 0f64;
        let mut x = 0x1234_5678_u64;
        for i in 0..400_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let scale = [1.0, 10.0, 1e3, 1e5, 9.9e5, 3e6][i % 6];
            let a = ((x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * scale as f32;
            let (s, c) = super::sin_cos(a);
            let (ws, wc) = (a as f64).sin_cos();
            worst = worst.max((s as f64 - ws).abs()).max((c as f64 - wc).abs());
        }
        // Half an f32 ulp at 1 is 6e-8: allow one rounding plus the reduction error.
        assert!(worst < 7e-8, "worst abs error {worst:e}");
        for a in [
            0.0f32,
            -0.0,
            1.0,
            -1.0,
            std::f32::consts::FRAC_PI_4,
            1e6,
            -2e7,
            f32::MAX,
        ] {
            let (s, c) = super::sin_cos(a);
            let (ws, wc) = (a as f64).sin_cos();
            assert!((s as f64 - ws).abs() < 7e-8 && (c as f64 - wc).abs() < 7e-8, "{a}");
        }
    }

    /// The portable form (what non-AVX2 and aarch64 machines run) and the AVX2 form
    /// both match the f64 reference.
    #[test]
    fn portable_and_avx2_forms_match_reference() {
        use crate::rope::{reference, HeadsLayout, Pairing, RopeParams, RopeVariant};
        use crate::FloatElem;
        fn case<T: FloatElem>(p: &RopeParams, tol: f64) {
            let (n, hq, hkv, d) = (9, 8, 2, p.head_dim);
            let (ql, kl) = (HeadsLayout::contiguous(n, hq, d), HeadsLayout::contiguous(n, hkv, d));
            let mut x = 0x9E37_79B9_u32;
            let mut rnd = |len: usize| -> Vec<T> {
                (0..len)
                    .map(|_| {
                        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        T::from_f32((x >> 8) as f32 / (1u32 << 23) as f32 - 1.0)
                    })
                    .collect()
            };
            let (q0, k0) = (rnd(n * hq * d), rnd(n * hkv * d));
            let pos: Vec<i64> = (0..p.variant.position_rows() * n)
                .map(|i| (i * 37 % 1000) as i64)
                .collect();
            let (mut qr, mut kr) = (q0.clone(), k0.clone());
            reference(p, &pos, &mut qr, &ql, &mut kr, &kl).unwrap();
            for allow_avx2 in [false, true] {
                let (mut q, mut k) = (q0.clone(), k0.clone());
                super::apply_with(p, &pos, &mut q, &ql, &mut k, &kl, allow_avx2).unwrap();
                for (got, want) in q.iter().chain(&k).zip(qr.iter().chain(&kr)) {
                    let (g, w) = (got.to_f32() as f64, want.to_f32() as f64);
                    assert!(
                        (g - w).abs() <= tol * w.abs().max(0.5),
                        "{p:?} avx2 {allow_avx2}: {g} vs {w}"
                    );
                }
            }
        }
        for variant in [
            RopeVariant::Plain,
            RopeVariant::MultiHead { sections: [1, 1, 0] },
            RopeVariant::Vision2d,
        ] {
            for pairing in [Pairing::Neox, Pairing::GptJ] {
                let p = RopeParams::new(64, variant).with_pairing(pairing).with_rotary_dim(48);
                case::<f32>(&p, 1e-5);
                case::<half::f16>(&p, 2e-3);
                case::<half::bf16>(&p, 1e-2);
            }
        }
    }
}
