//! Variable-length multi-head attention: `out = softmax(Q·Kᵀ·scale [+ causal mask])·V`
//! per segment and head, with grouped-query heads (each key/value head serves
//! `num_q_heads / num_kv_heads` query heads).
//!
//! One argument struct, [`AttentionArgs`], is shared by the f64 reference
//! ([`attention_reference`]), the blocked CPU path ([`attention`]) and the CUDA path.
//!
//! Layout: `q` is `[Nq, Hq, D]`, `k` and `v` are `[Nk, Hkv, D]`, `out` is `[Nq, Hq, D]`;
//! the token (row) strides may exceed `H·D` (views into a fused qkv tensor).
//! Segment `i` owns query rows `cu_seqlens_q[i]..cu_seqlens_q[i+1]` and key rows
//! `cu_seqlens_k[i]..cu_seqlens_k[i+1]`; `seqused_k` (optional) uses only the first
//! `seqused_k[i]` keys of each key segment (a KV cache with spare capacity).
//! Causal masks are aligned to the bottom right: with `sq` queries and `sk` keys,
//! query `i` sees keys `0..=i + sk - sq`, so one or a few decode tokens see the whole
//! cache and prefill (`sq == sk`) is the usual lower triangle. A query row that sees
//! no key is written as zeros.

mod cpu;
pub mod cuda;
mod microkernel;
mod reference;
pub mod window;

pub use cpu::{attention, attention_with, CpuAttnKernel};
pub use reference::attention_reference;

use crate::{Error, Result};

/// Largest supported head dimension.
pub const MAX_HEAD_DIM: usize = 256;

/// Element types the attention kernels read and write (f32 accumulation inside).
pub use crate::float::FloatElem as AttnElem;

/// Shape and options of one varlen attention call (see the module docs for the layout).
#[derive(Clone, Debug)]
pub struct AttentionArgs<'a> {
    /// Query segment boundaries: starts at 0, non-decreasing, ends at `Nq`.
    pub cu_seqlens_q: &'a [usize],
    /// Key/value segment boundaries: same number of segments, ends at `Nk`.
    pub cu_seqlens_k: &'a [usize],
    /// Keys actually used per segment (≤ the segment's length); `None`: all of them.
    pub seqused_k: Option<&'a [usize]>,
    /// Query heads `Hq` (a multiple of `num_kv_heads`).
    pub num_q_heads: usize,
    /// Key/value heads `Hkv`.
    pub num_kv_heads: usize,
    /// Head dimension `D`: a multiple of 8 in 8..=256.
    pub head_dim: usize,
    /// Logit scale, usually `1/sqrt(D)`.
    pub scale: f32,
    /// Bottom-right aligned causal mask.
    pub causal: bool,
    /// Elements between consecutive tokens of q, k, v and out (at least `H·D`).
    pub q_row_stride: usize,
    pub k_row_stride: usize,
    pub v_row_stride: usize,
    pub out_row_stride: usize,
}

impl<'a> AttentionArgs<'a> {
    /// Non-causal attention with contiguous rows and `scale = 1/sqrt(head_dim)`.
    pub fn new(
        cu_seqlens_q: &'a [usize],
        cu_seqlens_k: &'a [usize],
        num_q_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
    ) -> Self {
        AttentionArgs {
            cu_seqlens_q,
            cu_seqlens_k,
            seqused_k: None,
            num_q_heads,
            num_kv_heads,
            head_dim,
            scale: 1.0 / (head_dim.max(1) as f32).sqrt(),
            causal: false,
            q_row_stride: num_q_heads.saturating_mul(head_dim),
            k_row_stride: num_kv_heads.saturating_mul(head_dim),
            v_row_stride: num_kv_heads.saturating_mul(head_dim),
            out_row_stride: num_q_heads.saturating_mul(head_dim),
        }
    }

    /// Sets the causal flag.
    pub fn with_causal(mut self, causal: bool) -> Self {
        self.causal = causal;
        self
    }

    /// Sets the logit scale.
    pub fn with_scale(mut self, scale: f32) -> Self {
        self.scale = scale;
        self
    }

    /// Uses only the first `seqused_k[i]` keys of key segment `i`.
    pub fn with_seqused_k(mut self, seqused_k: &'a [usize]) -> Self {
        self.seqused_k = Some(seqused_k);
        self
    }

    /// Sets the token strides (elements) of q, k, v and out.
    pub fn with_row_strides(mut self, q: usize, k: usize, v: usize, out: usize) -> Self {
        self.q_row_stride = q;
        self.k_row_stride = k;
        self.v_row_stride = v;
        self.out_row_stride = out;
        self
    }

    /// Number of segments.
    pub fn num_segments(&self) -> usize {
        self.cu_seqlens_q.len().saturating_sub(1)
    }

    /// Query heads per key/value head.
    pub fn group_size(&self) -> usize {
        self.num_q_heads / self.num_kv_heads.max(1)
    }

    /// Query rows `Nq`.
    pub fn num_q_tokens(&self) -> usize {
        self.cu_seqlens_q.last().copied().unwrap_or(0)
    }

    /// Key rows `Nk`.
    pub fn num_k_tokens(&self) -> usize {
        self.cu_seqlens_k.last().copied().unwrap_or(0)
    }

    /// Queries and used keys of segment `i` (call after [`validate`](Self::validate)).
    pub fn segment(&self, i: usize) -> Segment {
        let q0 = self.cu_seqlens_q[i];
        let k0 = self.cu_seqlens_k[i];
        let full_k = self.cu_seqlens_k[i + 1] - k0;
        Segment {
            q_start: q0,
            q_len: self.cu_seqlens_q[i + 1] - q0,
            k_start: k0,
            k_len: self.seqused_k.map_or(full_k, |u| u[i]),
        }
    }

    /// Multiply-add count of QKᵀ plus PV over visible (query, key) pairs, as
    /// FLOPs: `4·D·Hq·pairs` (the usual convention; causal counts about half).
    pub fn flops(&self) -> f64 {
        let mut pairs = 0f64;
        for i in 0..self.num_segments() {
            let s = self.segment(i);
            pairs += visible_pairs(s.q_len, s.k_len, self.causal);
        }
        4.0 * self.head_dim as f64 * self.num_q_heads as f64 * pairs
    }

    /// Checks every field and the buffer lengths (in elements) of q, k, v and out.
    pub fn validate(&self, q_len: usize, k_len: usize, v_len: usize, out_len: usize) -> Result<()> {
        if self.num_kv_heads == 0 || self.num_q_heads == 0 {
            return Err(Error::invalid(format!(
                "num_q_heads {} and num_kv_heads {} must both be positive",
                self.num_q_heads, self.num_kv_heads
            )));
        }
        if self.num_q_heads % self.num_kv_heads != 0 {
            return Err(Error::invalid(format!(
                "num_q_heads {} is not a multiple of num_kv_heads {}",
                self.num_q_heads, self.num_kv_heads
            )));
        }
        let d = self.head_dim;
        if d == 0 || d % 8 != 0 || d > MAX_HEAD_DIM {
            return Err(Error::invalid(format!(
                "head_dim {d}: must be a multiple of 8 in 8..={MAX_HEAD_DIM}"
            )));
        }
        if !self.scale.is_finite() {
            return Err(Error::invalid(format!("scale {} is not finite", self.scale)));
        }
        check_cu("cu_seqlens_q", self.cu_seqlens_q)?;
        check_cu("cu_seqlens_k", self.cu_seqlens_k)?;
        if self.cu_seqlens_q.len() != self.cu_seqlens_k.len() {
            return Err(Error::ShapeMismatch(format!(
                "cu_seqlens_q has {} entries but cu_seqlens_k has {}",
                self.cu_seqlens_q.len(),
                self.cu_seqlens_k.len()
            )));
        }
        if let Some(used) = self.seqused_k {
            if used.len() != self.num_segments() {
                return Err(Error::ShapeMismatch(format!(
                    "seqused_k has {} entries for {} segments",
                    used.len(),
                    self.num_segments()
                )));
            }
            for (i, &u) in used.iter().enumerate() {
                let cap = self.cu_seqlens_k[i + 1] - self.cu_seqlens_k[i];
                if u > cap {
                    return Err(Error::invalid(format!(
                        "seqused_k[{i}] = {u} exceeds key segment {i} of length {cap}"
                    )));
                }
            }
        }
        let hq_d = mul("num_q_heads·head_dim", self.num_q_heads, d)?;
        let hkv_d = mul("num_kv_heads·head_dim", self.num_kv_heads, d)?;
        let nq = self.num_q_tokens();
        let nk = self.num_k_tokens();
        check_buffer("q", q_len, nq, self.q_row_stride, hq_d)?;
        check_buffer("k", k_len, nk, self.k_row_stride, hkv_d)?;
        check_buffer("v", v_len, nk, self.v_row_stride, hkv_d)?;
        check_buffer("out", out_len, nq, self.out_row_stride, hq_d)?;
        Ok(())
    }
}

/// One segment's query and key ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub q_start: usize,
    pub q_len: usize,
    pub k_start: usize,
    pub k_len: usize,
}

/// Number of (query, key) pairs that attend, as f64 (no overflow on large inputs).
fn visible_pairs(sq: usize, sk: usize, causal: bool) -> f64 {
    if !causal {
        return sq as f64 * sk as f64;
    }
    // Query i sees min(sk, max(0, i + sk - sq + 1)) keys.
    (0..sq)
        .map(|i| (i as i64 + sk as i64 - sq as i64 + 1).clamp(0, sk as i64) as f64)
        .sum()
}

/// Last key index (exclusive) visible to query `i` of a segment with `sq` queries
/// and `sk` keys: `sk` without a mask, else `clamp(i + sk - sq + 1, 0, sk)`.
#[inline]
pub(crate) fn key_end(i: usize, sq: usize, sk: usize, causal: bool) -> usize {
    if !causal {
        return sk;
    }
    (i as i64 + sk as i64 - sq as i64 + 1).clamp(0, sk as i64) as usize
}

fn mul(what: &str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| Error::Overflow(format!("{what} = {a}·{b} overflows usize")))
}

fn check_cu(name: &str, cu: &[usize]) -> Result<()> {
    if cu.is_empty() {
        return Err(Error::invalid(format!("{name} is empty; it needs at least [0]")));
    }
    if cu[0] != 0 {
        return Err(Error::invalid(format!("{name}[0] = {} but must be 0", cu[0])));
    }
    for i in 1..cu.len() {
        if cu[i] < cu[i - 1] {
            return Err(Error::invalid(format!(
                "{name} decreases at index {i}: {} after {}",
                cu[i],
                cu[i - 1]
            )));
        }
    }
    Ok(())
}

/// A buffer of `rows` rows of `width` elements, `stride` apart, must hold between
/// `(rows-1)·stride + width` and `rows·stride` elements (so it ends at the last row).
fn check_buffer(name: &str, len: usize, rows: usize, stride: usize, width: usize) -> Result<()> {
    if stride < width {
        return Err(Error::invalid(format!(
            "{name} row stride {stride} is smaller than a row of {width} elements"
        )));
    }
    if rows == 0 {
        if len != 0 {
            return Err(Error::ShapeMismatch(format!("{name} has {len} elements for 0 rows")));
        }
        return Ok(());
    }
    let full = mul(&format!("{name} rows·stride"), rows, stride)?;
    let min = full - (stride - width);
    if len < min || len > full {
        return Err(Error::ShapeMismatch(format!(
            "{name} has {len} elements but {rows} rows of {width} with stride {stride} need {min}..={full}"
        )));
    }
    Ok(())
}
