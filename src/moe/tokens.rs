//! Token permutation for expert execution: gather rows into expert-contiguous
//! order `[T * k, H]`, and the weighted scatter-sum back to `[T, H]`.

use rayon::prelude::*;

use super::dispatch::DispatchPlan;
use crate::{Error, Result};

fn check_permute(x_len: usize, out_len: usize, hidden: usize, plan: &DispatchPlan) -> Result<()> {
    let rows = plan.sorted.len();
    let want_x = plan.tokens.checked_mul(hidden);
    let want_out = rows.checked_mul(hidden);
    if want_x != Some(x_len) || want_out != Some(out_len) {
        return Err(Error::ShapeMismatch(format!(
            "x has {x_len} elements (need {} tokens x hidden {hidden}), out {out_len} (need {rows} rows x {hidden})",
            plan.tokens
        )));
    }
    Ok(())
}

/// Reference gather: `out[p] = x[token of sorted[p]]`.
pub fn permute_tokens_reference<T: Copy>(x: &[T], hidden: usize, plan: &DispatchPlan, out: &mut [T]) -> Result<()> {
    check_permute(x.len(), out.len(), hidden, plan)?;
    for p in 0..plan.sorted.len() {
        let t = plan.token_at(p);
        for d in 0..hidden {
            out[p * hidden + d] = x[t * hidden + d];
        }
    }
    Ok(())
}

/// Gather with whole-row copies split across threads.
pub fn permute_tokens<T: Copy + Send + Sync>(x: &[T], hidden: usize, plan: &DispatchPlan, out: &mut [T]) -> Result<()> {
    check_permute(x.len(), out.len(), hidden, plan)?;
    if hidden == 0 {
        return Ok(());
    }
    let rows_per_task = (16384 / hidden).max(1);
    out.par_chunks_mut(rows_per_task * hidden)
        .enumerate()
        .for_each(|(c, block)| {
            for (i, row) in block.chunks_exact_mut(hidden).enumerate() {
                let t = plan.token_at(c * rows_per_task + i);
                row.copy_from_slice(&x[t * hidden..(t + 1) * hidden]);
            }
        });
    Ok(())
}

fn check_unpermute(y_len: usize, w_len: usize, out_len: usize, hidden: usize, plan: &DispatchPlan) -> Result<()> {
    let rows = plan.sorted.len();
    if rows.checked_mul(hidden) != Some(y_len) || w_len != rows || plan.tokens.checked_mul(hidden) != Some(out_len) {
        return Err(Error::ShapeMismatch(format!(
            "expert output has {y_len} elements (need {rows} x hidden {hidden}), weights {w_len} (need {rows}), \
             out {out_len} (need {} tokens x {hidden})",
            plan.tokens
        )));
    }
    Ok(())
}

/// Reference weighted scatter-sum: `out[t] = Σ_j weights[t, j] · y[inverse[t * k + j]]`, f64.
pub fn unpermute_tokens_reference(
    y: &[f32],
    hidden: usize,
    plan: &DispatchPlan,
    weights: &[f32],
    out: &mut [f32],
) -> Result<()> {
    check_unpermute(y.len(), weights.len(), out.len(), hidden, plan)?;
    let k = plan.top_k;
    for t in 0..plan.tokens {
        for d in 0..hidden {
            let mut acc = 0f64;
            for j in 0..k {
                let p = plan.inverse[t * k + j] as usize;
                acc += weights[t * k + j] as f64 * y[p * hidden + d] as f64;
            }
            out[t * hidden + d] = acc as f32;
        }
    }
    Ok(())
}

/// Weighted scatter-sum, one output row per token (no atomics: each token
/// reads its k rows in slot order, so the sum order is fixed).
pub fn unpermute_tokens(y: &[f32], hidden: usize, plan: &DispatchPlan, weights: &[f32], out: &mut [f32]) -> Result<()> {
    check_unpermute(y.len(), weights.len(), out.len(), hidden, plan)?;
    if hidden == 0 {
        return Ok(());
    }
    let k = plan.top_k;
    let rows_per_task = (16384 / hidden).max(1);
    out.par_chunks_mut(rows_per_task * hidden)
        .enumerate()
        .for_each(|(c, block)| {
            for (i, row) in block.chunks_exact_mut(hidden).enumerate() {
                let t = c * rows_per_task + i;
                row.fill(0.0);
                for j in 0..k {
                    let p = plan.inverse[t * k + j] as usize;
                    let w = weights[t * k + j];
                    for (o, &v) in row.iter_mut().zip(&y[p * hidden..(p + 1) * hidden]) {
                        *o += w * v;
                    }
                }
            }
        });
    Ok(())
}
