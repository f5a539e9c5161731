//! The whole sparse MoE block: router, top-k, experts, weighted sum, and the
//! optional sigmoid-gated shared expert (Qwen3-Next).

use rayon::prelude::*;

use super::dispatch::{plan_dispatch, DispatchPlan};
use super::expert::{expert_ffn, expert_ffn_reference, matmul, MatRef};
use super::router::{route, route_reference, router_logits, router_logits_reference, RouterConfig};
use super::tokens::{permute_tokens, unpermute_tokens};
use super::weights::MoeWeights;
use crate::{Error, Result};

/// Everything the block computes, for checks against HF transformers.
#[derive(Clone, Debug)]
pub struct MoeOutput {
    /// `[T, hidden]`.
    pub out: Vec<f32>,
    /// `[T, E]`.
    pub logits: Vec<f32>,
    /// `[T, k]`, best first.
    pub ids: Vec<u32>,
    /// `[T, k]`.
    pub weights: Vec<f32>,
}

fn check(x: &[f32], w: &MoeWeights, cfg: &RouterConfig) -> Result<usize> {
    cfg.validate()?;
    if cfg.num_experts != w.num_experts {
        return Err(Error::ShapeMismatch(format!(
            "router config has {} experts, the weights {}",
            cfg.num_experts, w.num_experts
        )));
    }
    if x.len() % w.hidden != 0 {
        return Err(Error::ShapeMismatch(format!(
            "x has {} elements, not a whole number of rows of hidden {}",
            x.len(),
            w.hidden
        )));
    }
    Ok(x.len() / w.hidden)
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// Reference block: f64 router, then each token runs its k experts directly.
pub fn moe_block_reference(x: &[f32], w: &MoeWeights, cfg: &RouterConfig) -> Result<MoeOutput> {
    let tokens = check(x, w, cfg)?;
    let (h, e, k) = (w.hidden, w.num_experts, cfg.top_k);
    let mut logits = vec![0f32; tokens * e];
    router_logits_reference(x, h, &w.router, &mut logits)?;
    let mut ids = vec![0u32; tokens * k];
    let mut weights = vec![0f32; tokens * k];
    route_reference(&logits, cfg, &mut ids, &mut weights)?;
    let mut out = vec![0f32; tokens * h];
    let mut y = vec![0f32; h];
    let shared = w.shared_expert()?;
    for t in 0..tokens {
        let xr = &x[t * h..(t + 1) * h];
        let mut acc = vec![0f64; h];
        for j in 0..k {
            expert_ffn_reference(xr, &w.expert(ids[t * k + j] as usize)?, &mut y)?;
            for (a, &v) in acc.iter_mut().zip(&y) {
                *a += weights[t * k + j] as f64 * v as f64;
            }
        }
        if let (Some(se), Some(sw)) = (&shared, &w.shared) {
            expert_ffn_reference(xr, se, &mut y)?;
            let g = sigmoid(xr.iter().zip(&sw.gate).map(|(&a, &b)| a as f64 * b as f64).sum());
            for (a, &v) in acc.iter_mut().zip(&y) {
                *a += g * v as f64;
            }
        }
        for (o, a) in out[t * h..(t + 1) * h].iter_mut().zip(acc) {
            *o = a as f32;
        }
    }
    Ok(MoeOutput {
        out,
        logits,
        ids,
        weights,
    })
}

/// Fast block: GEMM router, threaded top-k, stable dispatch plan, gather,
/// one GEMM pair per expert segment (experts run in parallel), weighted
/// scatter-sum, then the shared expert on all tokens.
pub fn moe_block(x: &[f32], w: &MoeWeights, cfg: &RouterConfig) -> Result<MoeOutput> {
    let tokens = check(x, w, cfg)?;
    let (h, e, k) = (w.hidden, w.num_experts, cfg.top_k);
    let mut logits = vec![0f32; tokens * e];
    router_logits(x, h, &w.router, &mut logits)?;
    let mut ids = vec![0u32; tokens * k];
    let mut weights = vec![0f32; tokens * k];
    route(&logits, cfg, &mut ids, &mut weights)?;
    let plan = plan_dispatch(&ids, e, k, 1)?;
    let mut xs = vec![0f32; tokens * k * h];
    permute_tokens(x, h, &plan, &mut xs)?;
    let ys = run_experts(&xs, w, &plan)?;
    let mut out = vec![0f32; tokens * h];
    unpermute_tokens(&ys, h, &plan, &weights, &mut out)?;
    add_shared_expert(x, w, &mut out)?;
    Ok(MoeOutput {
        out,
        logits,
        ids,
        weights,
    })
}

/// Expert FFNs over the sorted rows `xs [T * k, H]`, one task per non-empty
/// expert segment; returns `ys [T * k, H]` in the same order.
pub fn run_experts(xs: &[f32], w: &MoeWeights, plan: &DispatchPlan) -> Result<Vec<f32>> {
    let h = w.hidden;
    if plan.num_experts != w.num_experts || xs.len() != plan.sorted.len() * h {
        return Err(Error::ShapeMismatch(format!(
            "plan for {} experts and {} rows; weights have {} experts, xs {} elements (hidden {h})",
            plan.num_experts,
            plan.sorted.len(),
            w.num_experts,
            xs.len()
        )));
    }
    let mut ys = vec![0f32; xs.len()];
    // Split ys into one disjoint slice per expert segment.
    let mut segments = Vec::new();
    let mut rest = ys.as_mut_slice();
    for ex in 0..plan.num_experts {
        let rows = plan.counts[ex] as usize;
        let (seg, tail) = rest.split_at_mut(rows * h);
        rest = tail;
        if rows > 0 {
            segments.push((ex, seg));
        }
    }
    // Few segments with many rows each: let the GEMM thread inside instead.
    let inner_threads = segments.len() < rayon::current_num_threads();
    segments.into_par_iter().try_for_each(|(ex, seg)| {
        let start = plan.offsets[ex] * h;
        expert_ffn(&xs[start..start + seg.len()], &w.expert(ex)?, seg, inner_threads)
    })?;
    Ok(ys)
}

/// `out += sigmoid(x · shared_gate) * shared_mlp(x)` when the block has one.
fn add_shared_expert(x: &[f32], w: &MoeWeights, out: &mut [f32]) -> Result<()> {
    let (Some(se), Some(sw)) = (w.shared_expert()?, &w.shared) else {
        return Ok(());
    };
    let h = w.hidden;
    let tokens = x.len() / h;
    let mut y = vec![0f32; x.len()];
    expert_ffn(x, &se, &mut y, true)?;
    let gate_col = MatRef::new(&sw.gate, 0, h, 1, 1, 1)?;
    let mut g = vec![0f32; tokens];
    matmul(x, tokens, h, &gate_col, &mut g, true)?;
    out.par_chunks_mut(h)
        .zip(y.par_chunks(h))
        .zip(g.par_iter())
        .for_each(|((o, yr), &gv)| {
            let s = 1.0 / (1.0 + (-gv).exp());
            for (a, &b) in o.iter_mut().zip(yr) {
                *a += s * b;
            }
        });
    Ok(())
}
