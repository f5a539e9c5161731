//! Cases shared by the CPU and CUDA RoPE tests: random data in strided buffers with
//! sentinel gaps, and the error measure with its stated tolerances.
#![allow(dead_code)]

use vlkernels::rope::{HeadsLayout, RopeParams, RopeVariant};
use vlkernels::FloatElem;

/// Deterministic uniform values in [-1, 1) (splitmix64).
pub fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = vlkernels::rng::SplitMix64::new(seed);
    (0..n)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        .collect()
}

/// Value left in every element no view covers; must survive every call bit for bit.
pub const SENTINEL: f32 = -7.25;

/// How q and k sit in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Two contiguous `[N, H, D]` buffers.
    Separate,
    /// Views of one fused `[N, Hq + 2 Hkv, D]` qkv buffer.
    Fused,
    /// Separate buffers with padded head and token strides and an odd offset.
    Padded,
}

pub struct Case<T> {
    pub q: Vec<T>,
    pub k: Vec<T>,
    pub ql: HeadsLayout,
    pub kl: HeadsLayout,
    pub fused: bool,
}

impl<T: FloatElem> Case<T> {
    pub fn new(n: usize, hq: usize, hkv: usize, d: usize, placement: Placement, seed: u64) -> Self {
        let (ql, kl, qlen, klen) = match placement {
            Placement::Separate => {
                let (ql, kl) = (HeadsLayout::contiguous(n, hq, d), HeadsLayout::contiguous(n, hkv, d));
                (ql, kl, n * hq * d, n * hkv * d)
            }
            Placement::Fused => {
                let (ql, kl) = HeadsLayout::fused_qkv(n, hq, hkv, d);
                let len = n * (hq + 2 * hkv) * d;
                (ql, kl, len, len)
            }
            Placement::Padded => {
                let view = |h: usize| HeadsLayout {
                    tokens: n,
                    heads: h,
                    offset: 3,
                    token_stride: h * (d + 5) + 7,
                    head_stride: d + 5,
                };
                let (ql, kl) = (view(hq), view(hkv));
                (ql, kl, 3 + n * ql.token_stride, 3 + n * kl.token_stride)
            }
        };
        let fill = |len: usize, l: &HeadsLayout, l2: Option<&HeadsLayout>, seed: u64| {
            let mut buf = vec![T::from_f32(SENTINEL); len];
            let vals = uniform(len, seed);
            for v in std::iter::once(l).chain(l2) {
                for t in 0..v.tokens {
                    for h in 0..v.heads {
                        let o = v.offset + t * v.token_stride + h * v.head_stride;
                        for e in o..o + d {
                            buf[e] = T::from_f32(vals[e]);
                        }
                    }
                }
            }
            buf
        };
        if placement == Placement::Fused {
            Case {
                q: fill(qlen, &ql, Some(&kl), seed),
                k: Vec::new(),
                ql,
                kl,
                fused: true,
            }
        } else {
            Case {
                q: fill(qlen, &ql, None, seed),
                k: fill(klen, &kl, None, seed ^ 0xABCD),
                ql,
                kl,
                fused: false,
            }
        }
    }

    pub fn clone_case(&self) -> Self {
        Case {
            q: self.q.clone(),
            k: self.k.clone(),
            ql: self.ql,
            kl: self.kl,
            fused: self.fused,
        }
    }

    pub fn reference(&mut self, p: &RopeParams, pos: &[i64]) -> vlkernels::Result<()> {
        if self.fused {
            vlkernels::rope::reference_fused(p, pos, &mut self.q, &self.ql, &self.kl)
        } else {
            vlkernels::rope::reference(p, pos, &mut self.q, &self.ql, &mut self.k, &self.kl)
        }
    }

    pub fn apply(&mut self, p: &RopeParams, pos: &[i64]) -> vlkernels::Result<()> {
        if self.fused {
            vlkernels::rope::apply_fused(p, pos, &mut self.q, &self.ql, &self.kl)
        } else {
            vlkernels::rope::apply(p, pos, &mut self.q, &self.ql, &mut self.k, &self.kl)
        }
    }
}

/// Tolerance of a fast path against the f64 reference, for the error of [`max_error`]:
/// f32 1e-5; f16 2e-3 (an f16 ulp is 4.9e-4 relative); bf16 1e-2 (a bf16 ulp is 3.9e-3).
pub fn tolerance<T: FloatElem>() -> f64 {
    match T::DTYPE {
        vlkernels::DType::F32 => 1e-5,
        vlkernels::DType::F16 => 2e-3,
        _ => 1e-2,
    }
}

/// Largest error of `got` against `want`, each element's |difference| divided by
/// max(|want|, 0.5) (inputs lie in [-1, 1), so this is relative error for large outputs
/// and absolute error near zero, where a rotation's output may cancel). Elements that
/// hold the sentinel in `input` lie outside every view: both buffers must still hold it
/// bit for bit.
pub fn max_error<T: FloatElem>(got: &[T], want: &[T], input: &[T]) -> f64 {
    assert_eq!(got.len(), want.len());
    let mut worst = 0f64;
    for (i, ((g, w), x)) in got.iter().zip(want).zip(input).enumerate() {
        if x.to_f32() == SENTINEL {
            assert_eq!(
                g.to_f32().to_bits(),
                SENTINEL.to_bits(),
                "element {i} outside the views was written"
            );
            assert_eq!(
                w.to_f32().to_bits(),
                SENTINEL.to_bits(),
                "reference wrote element {i} outside the views"
            );
            continue;
        }
        let (g, w) = (g.to_f32() as f64, w.to_f32() as f64);
        assert!(g.is_finite(), "element {i} is {g}");
        worst = worst.max((g - w).abs() / w.abs().max(0.5));
    }
    worst
}

/// Positions: `rows x n` values in `0..limit`, or one row repeated when `equal_rows`.
pub fn positions(rows: usize, n: usize, limit: i64, equal_rows: bool, seed: u64) -> Vec<i64> {
    let u = uniform(rows * n, seed);
    let mut p: Vec<i64> = u.iter().map(|v| ((v + 1.0) * 0.5 * limit as f32) as i64).collect();
    if equal_rows {
        for r in 1..rows {
            for i in 0..n {
                p[r * n + i] = p[i];
            }
        }
    }
    p
}

/// The variants at head dim `d`, rotary dim `r`, for `hkv` KV heads.
pub fn variants(r: usize, hkv: usize) -> Vec<RopeVariant> {
    let half = r / 2;
    let s_t = half - 2 * (half / 3);
    let mh = [hkv / 2, hkv / 4, hkv - hkv / 2 - hkv / 4 - usize::from(hkv > 2)];
    let mut v = vec![
        RopeVariant::Plain,
        RopeVariant::Sectioned {
            sections: [s_t, half / 3, half / 3],
        },
        RopeVariant::Interleaved {
            sections: [s_t, half / 3, half / 3],
        },
        RopeVariant::MultiHead { sections: mh },
    ];
    if r % 4 == 0 {
        v.push(RopeVariant::Vision2d);
    }
    v
}

/// Equal-rows versions of the 3-row variants that must equal plain RoPE bit for bit
/// (MHRoPE sections cover every KV head).
pub fn equal_row_variants(r: usize, hkv: usize) -> Vec<RopeVariant> {
    let half = r / 2;
    let s_t = half - 2 * (half / 3);
    vec![
        RopeVariant::Sectioned {
            sections: [s_t, half / 3, half / 3],
        },
        RopeVariant::Interleaved {
            sections: [s_t, half / 3, half / 3],
        },
        RopeVariant::MultiHead {
            sections: [hkv - hkv / 2, hkv / 2, 0],
        },
    ]
}
