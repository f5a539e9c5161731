//! The two inner operations of blocked attention, in a portable version and an
//! AVX2+FMA version (chosen at run time; both are tested against the reference):
//!
//! - [`Isa::gemm_acc`]: `C[m×n] += A[m×k]·B[k×n]` on small row-major f32 blocks
//!   (`S = Q·Kᵀ` with K transposed, and `O += P·V`);
//! - [`Isa::softmax_step`]: one online-softmax update of a row of base-2 logits.

#![allow(clippy::needless_range_loop)] // index loops mirror the math (rows, lanes)

/// `log2(e)`: logits are pre-scaled by it so the kernels exponentiate with `exp2`.
pub const LOG2_E: f32 = std::f32::consts::LOG2_E;

/// Instruction set of the micro-kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Isa {
    /// `C[m×n] += A[m×k]·B[k×n]`, leading dimensions in elements; `n % 8 == 0`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn gemm_acc(
        self,
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
    ) {
        debug_assert!(n % 8 == 0);
        if m == 0 || n == 0 {
            return;
        }
        // Bounds the raw-pointer kernel relies on: checked for real, not only in debug.
        assert!(
            a.len() >= (m - 1) * lda + k && (k == 0 || b.len() >= (k - 1) * ldb + n) && c.len() >= (m - 1) * ldc + n
        );
        match self {
            Isa::Portable => gemm_acc_portable(m, n, k, a, lda, b, ldb, c, ldc),
            // SAFETY: Avx2 is only constructed after runtime detection of avx2 and fma;
            // the slice lengths above cover every address the kernel touches.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { avx2::gemm_acc(m, n, k, a.as_ptr(), lda, b.as_ptr(), ldb, c.as_mut_ptr(), ldc) },
        }
    }

    /// `dst[c·rows + r] = src[r·cols + c]`: a row-major `rows × cols` block transposed;
    /// both extents are multiples of 8.
    #[inline]
    pub fn transpose(self, src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
        debug_assert!(rows % 8 == 0 && cols % 8 == 0);
        assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
        match self {
            Isa::Portable => transpose_portable(src, rows, cols, dst),
            // SAFETY: see gemm_acc; lengths checked above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { avx2::transpose(src.as_ptr(), rows, cols, dst.as_mut_ptr()) },
        }
    }

    /// Online-softmax step on one row of base-2 logits `s` (masked entries are
    /// `-inf`): with `m_new = max(m_old, max s)`, replaces `s` by `exp2(s - m_new)`
    /// and returns `(m_new, exp2(m_old - m_new), Σ exp2(s - m_new))`. A row with no
    /// finite logit so far keeps `m = -inf`, becomes zeros and returns a factor of 1.
    #[inline]
    pub fn softmax_step(self, s: &mut [f32], m_old: f32) -> (f32, f32, f32) {
        match self {
            Isa::Portable => softmax_step_portable(s, m_old),
            // SAFETY: see gemm_acc.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { avx2::softmax_step(s, m_old) },
        }
    }
}

/// The best instruction set this CPU runs.
pub fn best_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        return Isa::Avx2;
    }
    Isa::Portable
}

#[allow(clippy::too_many_arguments)]
fn gemm_acc_portable(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    for i in 0..m {
        let crow = &mut c[i * ldc..i * ldc + n];
        for p in 0..k {
            let av = a[i * lda + p];
            let brow = &b[p * ldb..p * ldb + n];
            // Lane-wise loop: the compiler vectorises it.
            for (cv, bv) in crow.iter_mut().zip(brow) {
                *cv += av * bv;
            }
        }
    }
}

fn transpose_portable(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    // 8×8 tiles keep both sides within a few cache lines.
    for r0 in (0..rows).step_by(8) {
        for c0 in (0..cols).step_by(8) {
            for r in r0..r0 + 8 {
                for c in c0..c0 + 8 {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

// Coefficients of 2^f = e^(f·ln2) for |f| ≤ 1/2 (Taylor, degree 7: error < 1e-8).
const EXP2_C: [f32; 8] = [
    1.0,
    std::f32::consts::LN_2,
    0.240_226_5,
    0.055_504_11,
    0.009_618_129,
    0.001_333_355_8,
    0.000_154_035_3,
    0.000_015_252_73,
];

/// `2^t` for `t ≤ 0`; 0 below -126 (where it would be subnormal or -inf).
#[inline(always)]
pub fn exp2_nonpositive(t: f32) -> f32 {
    if t < -126.0 || t.is_nan() {
        return 0.0;
    }
    // Round to nearest (t ≤ 0): truncation of t - 0.5 toward zero.
    let n = (t - 0.5) as i32;
    let f = t - n as f32;
    let mut p = EXP2_C[7];
    for &c in EXP2_C[..7].iter().rev() {
        p = p * f + c;
    }
    p * f32::from_bits(((n + 127) as u32) << 23)
}

fn softmax_step_portable(s: &mut [f32], m_old: f32) -> (f32, f32, f32) {
    let m_new = s.iter().copied().fold(m_old, f32::max);
    if m_new == f32::NEG_INFINITY {
        s.fill(0.0);
        return (m_new, 1.0, 0.0);
    }
    let mut sum = 0f32;
    for x in s.iter_mut() {
        *x = exp2_nonpositive(*x - m_new);
        sum += *x;
    }
    (m_new, exp2_nonpositive(m_old - m_new), sum)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::EXP2_C;
    use std::arch::x86_64::*;

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gemm_acc(
        m: usize,
        n: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        // 6 rows × 16 columns: 12 accumulators + 2 B vectors + 1 broadcast of 16 registers.
        let mut i = 0;
        while i + 6 <= m {
            row_block::<6>(n, k, a.add(i * lda), lda, b, ldb, c.add(i * ldc), ldc);
            i += 6;
        }
        let (a, c) = (a.add(i * lda), c.add(i * ldc));
        match m - i {
            5 => row_block::<5>(n, k, a, lda, b, ldb, c, ldc),
            4 => row_block::<4>(n, k, a, lda, b, ldb, c, ldc),
            3 => row_block::<3>(n, k, a, lda, b, ldb, c, ldc),
            2 => row_block::<2>(n, k, a, lda, b, ldb, c, ldc),
            1 => row_block::<1>(n, k, a, lda, b, ldb, c, ldc),
            _ => {}
        }
    }

    /// MR rows of C, all columns: 16-wide tiles, then one 8-wide tile.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn row_block<const MR: usize>(
        n: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        let mut j = 0;
        while j + 16 <= n {
            tile::<MR, 2>(k, a, lda, b.add(j), ldb, c.add(j), ldc);
            j += 16;
        }
        if j < n {
            tile::<MR, 1>(k, a, lda, b.add(j), ldb, c.add(j), ldc);
        }
    }

    /// C tile of MR rows × 8·NV columns held in registers across the k loop.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const MR: usize, const NV: usize>(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); NV]; MR];
        for r in 0..MR {
            for v in 0..NV {
                acc[r][v] = _mm256_loadu_ps(c.add(r * ldc + 8 * v));
            }
        }
        for p in 0..k {
            let mut bv = [_mm256_setzero_ps(); NV];
            for v in 0..NV {
                bv[v] = _mm256_loadu_ps(b.add(p * ldb + 8 * v));
            }
            for r in 0..MR {
                let av = _mm256_broadcast_ss(&*a.add(r * lda + p));
                for v in 0..NV {
                    acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
                }
            }
        }
        for r in 0..MR {
            for v in 0..NV {
                _mm256_storeu_ps(c.add(r * ldc + 8 * v), acc[r][v]);
            }
        }
    }

    /// Row-major `rows × cols` → `cols × rows`, by 8×8 register transposes.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn transpose(src: *const f32, rows: usize, cols: usize, dst: *mut f32) {
        for r0 in (0..rows).step_by(8) {
            for c0 in (0..cols).step_by(8) {
                let mut v = [_mm256_setzero_ps(); 8];
                for (i, x) in v.iter_mut().enumerate() {
                    *x = _mm256_loadu_ps(src.add((r0 + i) * cols + c0));
                }
                let t0 = _mm256_unpacklo_ps(v[0], v[1]);
                let t1 = _mm256_unpackhi_ps(v[0], v[1]);
                let t2 = _mm256_unpacklo_ps(v[2], v[3]);
                let t3 = _mm256_unpackhi_ps(v[2], v[3]);
                let t4 = _mm256_unpacklo_ps(v[4], v[5]);
                let t5 = _mm256_unpackhi_ps(v[4], v[5]);
                let t6 = _mm256_unpacklo_ps(v[6], v[7]);
                let t7 = _mm256_unpackhi_ps(v[6], v[7]);
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let out = [
                    _mm256_permute2f128_ps::<0x20>(u0, u4),
                    _mm256_permute2f128_ps::<0x20>(u1, u5),
                    _mm256_permute2f128_ps::<0x20>(u2, u6),
                    _mm256_permute2f128_ps::<0x20>(u3, u7),
                    _mm256_permute2f128_ps::<0x31>(u0, u4),
                    _mm256_permute2f128_ps::<0x31>(u1, u5),
                    _mm256_permute2f128_ps::<0x31>(u2, u6),
                    _mm256_permute2f128_ps::<0x31>(u3, u7),
                ];
                for (i, x) in out.iter().enumerate() {
                    _mm256_storeu_ps(dst.add((c0 + i) * rows + r0), *x);
                }
            }
        }
    }

    /// 8 lanes of `2^t`, `t ≤ 0`; lanes below -126 (or NaN) give 0. Same formula as
    /// the portable `exp2_nonpositive`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn exp2_nonpositive(t: __m256) -> __m256 {
        let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(t, _mm256_set1_ps(-126.0));
        let t = _mm256_max_ps(t, _mm256_set1_ps(-126.0));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
        let f = _mm256_sub_ps(t, n);
        let mut p = _mm256_set1_ps(EXP2_C[7]);
        for &c in EXP2_C[..7].iter().rev() {
            p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c));
        }
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)));
        _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(bits)), keep)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hmax(v: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_shuffle_ps::<1>(m, m));
        _mm_cvtss_f32(m)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax_step(s: &mut [f32], m_old: f32) -> (f32, f32, f32) {
        let n = s.len();
        let p = s.as_mut_ptr();
        let mut vmax = _mm256_set1_ps(m_old);
        let mut i = 0;
        while i + 8 <= n {
            vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(p.add(i)));
            i += 8;
        }
        let mut m_new = hmax(vmax);
        for &x in &s[i..] {
            m_new = m_new.max(x);
        }
        if m_new == f32::NEG_INFINITY {
            s.fill(0.0);
            return (m_new, 1.0, 0.0);
        }
        let vm = _mm256_set1_ps(m_new);
        let mut vsum = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            let e = exp2_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), vm));
            _mm256_storeu_ps(p.add(i), e);
            vsum = _mm256_add_ps(vsum, e);
            i += 8;
        }
        let mut sum = hsum(vsum);
        for x in &mut s[i..] {
            *x = super::exp2_nonpositive(*x - m_new);
            sum += *x;
        }
        (m_new, super::exp2_nonpositive(m_old - m_new), sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        if best_isa() != Isa::Portable {
            v.push(best_isa());
        }
        v
    }

    #[test]
    fn transpose_matches_naive() {
        for isa in isas() {
            for (rows, cols) in [(8, 8), (8, 24), (64, 80), (16, 136), (40, 8)] {
                let src: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 7.0).collect();
                let mut dst = vec![f32::NAN; rows * cols];
                isa.transpose(&src, rows, cols, &mut dst);
                for r in 0..rows {
                    for c in 0..cols {
                        assert_eq!(
                            dst[c * rows + r],
                            src[r * cols + c],
                            "{isa:?} {rows}x{cols} at ({r},{c})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn exp2_is_accurate_and_zero_below_range() {
        for i in 0..=2000 {
            let t = -(i as f32) * 0.0631;
            let want = (t as f64).exp2();
            let got = exp2_nonpositive(t) as f64;
            // Below -126 the result is flushed to 0 by design.
            let slack = if t < -126.0 { 1.2e-38 } else { 0.0 };
            assert!((got - want).abs() <= 2e-7 * want + slack, "2^{t}: {got} vs {want}");
        }
        assert_eq!(exp2_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp2_nonpositive(-127.0), 0.0);
        for isa in isas() {
            let mut row = vec![0.0, -1.0, f32::NEG_INFINITY, -3.5, -200.0, -0.25, -7.0, -1.5, -2.0];
            let (m, alpha, sum) = isa.softmax_step(&mut row, f32::NEG_INFINITY);
            assert_eq!((m, alpha), (0.0, 0.0), "{isa:?}");
            let want: Vec<f64> = [0.0f64, -1.0, f64::NEG_INFINITY, -3.5, -200.0, -0.25, -7.0, -1.5, -2.0]
                .iter()
                .map(|x| x.exp2())
                .collect();
            for (g, w) in row.iter().zip(&want) {
                assert!((*g as f64 - w).abs() <= 1e-6 * w.max(1e-30), "{isa:?}: {g} vs {w}");
            }
            assert!((sum as f64 - want.iter().sum::<f64>()).abs() < 1e-5, "{isa:?}");
        }
    }
}
