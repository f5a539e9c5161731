//! Naive f64 reference: for each segment, head and query, `softmax(q·Kᵀ·scale)·V`
//! over the visible keys, written as plainly as possible. Tests and benchmarks trust it.

#![allow(clippy::needless_range_loop)] // index loops mirror the math (rows, lanes)

use super::{key_end, AttentionArgs, AttnElem};
use crate::Result;

/// Computes attention in f64; returns `out` contiguous `[Nq, Hq, D]`.
pub fn attention_reference<T: AttnElem>(args: &AttentionArgs, q: &[T], k: &[T], v: &[T]) -> Result<Vec<f64>> {
    let nq = args.num_q_tokens();
    let (hq, d, g) = (args.num_q_heads, args.head_dim, args.group_size());
    // The reference writes a contiguous output: validate against that.
    let out_len = nq * hq * d;
    let contiguous = AttentionArgs {
        out_row_stride: hq * d,
        ..args.clone()
    };
    contiguous.validate(q.len(), k.len(), v.len(), out_len)?;

    let mut out = vec![0f64; out_len];
    let mut logits = Vec::new();
    for s in 0..args.num_segments() {
        let seg = args.segment(s);
        for h in 0..hq {
            let kvh = h / g;
            for i in 0..seg.q_len {
                let qrow = (seg.q_start + i) * args.q_row_stride + h * d;
                let visible = key_end(i, seg.q_len, seg.k_len, args.causal);
                logits.clear();
                for j in 0..visible {
                    let krow = (seg.k_start + j) * args.k_row_stride + kvh * d;
                    let dot: f64 = (0..d)
                        .map(|c| q[qrow + c].to_f32() as f64 * k[krow + c].to_f32() as f64)
                        .sum();
                    logits.push(dot * args.scale as f64);
                }
                let orow = &mut out[((seg.q_start + i) * hq + h) * d..][..d];
                if visible == 0 {
                    continue; // no key: the row stays zero
                }
                let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut sum = 0f64;
                for l in logits.iter_mut() {
                    *l = (*l - max).exp();
                    sum += *l;
                }
                for (j, &p) in logits.iter().enumerate() {
                    let vrow = (seg.k_start + j) * args.v_row_stride + kvh * d;
                    for c in 0..d {
                        orow[c] += p / sum * v[vrow + c].to_f32() as f64;
                    }
                }
            }
        }
    }
    Ok(out)
}
