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
    let plan = check_call(p, positions.len(), q_layout, q.len(), k_layout, k.len(), false)?;
    run(
        &plan,
        p.rotary_dim,
        positions,
        RawPtr(q.as_mut_ptr()),
        q_layout,
        RawPtr(k.as_mut_ptr()),
        k_layout,
    );
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
    run(&plan, p.rotary_dim, positions, ptr, q_layout, ptr, k_layout);
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

fn run<T: FloatElem>(
    plan: &RopePlan,
    rotary_dim: usize,
    positions: &[i64],
    q: RawPtr<T>,
    ql: &HeadsLayout,
    k: RawPtr<T>,
    kl: &HeadsLayout,
) {
    let tokens = ql.tokens;
    if tokens == 0 {
        return;
    }
    let tables = if plan.head_axis.is_some() { plan.rows } else { 1 };
    // Enough rows per task that splitting pays off (about 64 KiB of q and k).
    let bytes_per_token = (ql.heads + kl.heads) * rotary_dim * std::mem::size_of::<T>();
    let min_len = (65536 / bytes_per_token.max(1)).max(1);
    (0..tokens).into_par_iter().with_min_len(min_len).for_each_init(
        || Scratch {
            cos: vec![0.0; tables * plan.half],
            sin: vec![0.0; tables * plan.half],
            row: vec![0.0; rotary_dim],
        },
        |s, n| {
            fill_tables(plan, positions, tokens, n, s);
            // SAFETY: views were validated to lie inside their buffers and rows of one
            // token never overlap rows of another token or of the other view.
            unsafe {
                rotate_heads(plan, q, ql, n, false, s);
                rotate_heads(plan, k, kl, n, true, s);
            }
        },
    );
}

fn fill_tables(plan: &RopePlan, positions: &[i64], tokens: usize, n: usize, s: &mut Scratch) {
    let half = plan.half;
    let per_head = plan.head_axis.is_some();
    for t in 0..s.cos.len() / half {
        for j in 0..half {
            let row = if per_head { t } else { plan.pair_axis[j] as usize };
            let angle = positions[row * tokens + n] as f32 * plan.freq[j];
            let (sv, cv) = angle.sin_cos();
            s.cos[t * half + j] = cv * plan.scale;
            s.sin[t * half + j] = sv * plan.scale;
        }
    }
}

/// # Safety
/// Every row of token `n` in `v` must be inside the buffer behind `base` and written by
/// no other thread.
unsafe fn rotate_heads<T: FloatElem>(
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
        T::load_f32(row, &mut s.row);
        if plan.gptj {
            rotate_gptj(&mut s.row, c, sn);
        } else {
            rotate_neox(&mut s.row, c, sn);
        }
        T::store_f32(&s.row, row);
    }
}

fn rotate_neox(x: &mut [f32], c: &[f32], s: &[f32]) {
    let (a, b) = x.split_at_mut(c.len());
    for (((a, b), &c), &s) in a.iter_mut().zip(b.iter_mut()).zip(c).zip(s) {
        let (x1, x2) = (*a, *b);
        *a = x1 * c - x2 * s;
        *b = x2 * c + x1 * s;
    }
}

fn rotate_gptj(x: &mut [f32], c: &[f32], s: &[f32]) {
    for ((pair, &c), &s) in x.chunks_exact_mut(2).zip(c).zip(s) {
        let (x1, x2) = (pair[0], pair[1]);
        pair[0] = x1 * c - x2 * s;
        pair[1] = x2 * c + x1 * s;
    }
}
