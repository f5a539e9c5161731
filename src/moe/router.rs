//! Router: logits → softmax (f32) → top-k → optional renormalisation.
//!
//! Selection contract, shared by every path (CPU reference, CPU fast, CUDA):
//! experts are ranked by their logit (softmax is monotonic, so this is the
//! ranking of the exact probabilities), in descending order, and equal logits
//! go to the lower expert index. HF transformers ranks the rounded f32
//! probabilities with `torch.topk`, whose order among equal values is not
//! specified; the two agree whenever the k-th and (k+1)-th logits differ by
//! more than the rounding of `exp` (always, on the random goldens).

use rayon::prelude::*;

use crate::{Error, Result};

/// Largest expert count the router accepts (Qwen3-Next uses 512).
pub const MAX_EXPERTS: usize = 512;
/// Largest number of experts per token.
pub const MAX_TOP_K: usize = 16;

/// How router logits become expert choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    /// Experts per layer, 1..=512 (any value, not only powers of two).
    pub num_experts: usize,
    /// Experts chosen per token, 1..=min(16, num_experts).
    pub top_k: usize,
    /// Divide the k chosen probabilities by their sum (Qwen3's `norm_topk_prob`).
    pub norm_topk_prob: bool,
}

impl RouterConfig {
    /// A validated configuration.
    pub fn new(num_experts: usize, top_k: usize, norm_topk_prob: bool) -> Result<Self> {
        let cfg = RouterConfig {
            num_experts,
            top_k,
            norm_topk_prob,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the expert count and k, naming the bad value.
    pub fn validate(&self) -> Result<()> {
        if self.num_experts == 0 || self.num_experts > MAX_EXPERTS {
            return Err(Error::invalid(format!(
                "num_experts {} is outside 1..={MAX_EXPERTS}",
                self.num_experts
            )));
        }
        if self.top_k == 0 || self.top_k > MAX_TOP_K || self.top_k > self.num_experts {
            return Err(Error::invalid(format!(
                "top_k {} is outside 1..={} (num_experts {}, at most {MAX_TOP_K})",
                self.top_k,
                self.num_experts.min(MAX_TOP_K),
                self.num_experts
            )));
        }
        Ok(())
    }

    /// Number of tokens described by `logits_len` logits, after checking the
    /// caller's output buffers (`ids` and `weights` hold `tokens * top_k`).
    fn check_buffers(&self, logits_len: usize, ids_len: usize, weights_len: usize) -> Result<usize> {
        self.validate()?;
        if logits_len % self.num_experts != 0 {
            return Err(Error::ShapeMismatch(format!(
                "{logits_len} logits is not a whole number of rows of {} experts",
                self.num_experts
            )));
        }
        let tokens = logits_len / self.num_experts;
        let want = tokens
            .checked_mul(self.top_k)
            .ok_or_else(|| Error::Overflow(format!("{tokens} tokens x top_k {}", self.top_k)))?;
        if ids_len != want || weights_len != want {
            return Err(Error::ShapeMismatch(format!(
                "ids has {ids_len} and weights {weights_len} elements; {tokens} tokens x top_k {} needs {want}",
                self.top_k
            )));
        }
        Ok(tokens)
    }
}

fn check_finite(row: &[f32], token: usize) -> Result<()> {
    match row.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(e) => Err(Error::invalid(format!(
            "router logit of token {token}, expert {e} is {} (logits must be finite)",
            row[e]
        ))),
    }
}

/// Scalar reference: full softmax in f64, then k rounds of "largest logit,
/// lowest index first", then renormalisation. `logits` is `[T, E]`; `ids` and
/// `weights` are `[T, k]`, best first.
pub fn route_reference(logits: &[f32], cfg: &RouterConfig, ids: &mut [u32], weights: &mut [f32]) -> Result<()> {
    let tokens = cfg.check_buffers(logits.len(), ids.len(), weights.len())?;
    let (e_count, k) = (cfg.num_experts, cfg.top_k);
    for t in 0..tokens {
        let row = &logits[t * e_count..(t + 1) * e_count];
        check_finite(row, t)?;
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let total: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        let mut taken = vec![false; e_count];
        let mut chosen_sum = 0.0f64;
        for j in 0..k {
            let mut best: Option<usize> = None;
            for e in 0..e_count {
                if !taken[e] && best.is_none_or(|b| row[e] > row[b]) {
                    best = Some(e);
                }
            }
            let b = best.expect("k <= E leaves an untaken expert");
            taken[b] = true;
            let p = (row[b] as f64 - max).exp() / total;
            chosen_sum += p;
            ids[t * k + j] = b as u32;
            weights[t * k + j] = p as f32;
        }
        if cfg.norm_topk_prob {
            for j in 0..k {
                let p = (row[ids[t * k + j] as usize] as f64 - max).exp() / total;
                weights[t * k + j] = (p / chosen_sum) as f32;
            }
        }
    }
    Ok(())
}

/// Fast path: one pass per token keeping the k best in a sorted list, then
/// only the k exponentials when renormalising (the softmax denominator cancels);
/// tokens are split across threads.
pub fn route(logits: &[f32], cfg: &RouterConfig, ids: &mut [u32], weights: &mut [f32]) -> Result<()> {
    let tokens = cfg.check_buffers(logits.len(), ids.len(), weights.len())?;
    if tokens == 0 {
        return Ok(());
    }
    let (e_count, k) = (cfg.num_experts, cfg.top_k);
    // About 64k logits per task keeps small batches on one thread.
    let per_task = (65536 / e_count).max(1);
    logits
        .par_chunks(per_task * e_count)
        .zip(ids.par_chunks_mut(per_task * k))
        .zip(weights.par_chunks_mut(per_task * k))
        .enumerate()
        .try_for_each(|(chunk, ((lg, id), w))| {
            for (i, ((row, id), w)) in lg
                .chunks_exact(e_count)
                .zip(id.chunks_exact_mut(k))
                .zip(w.chunks_exact_mut(k))
                .enumerate()
            {
                if !route_row(row, cfg, id, w) {
                    check_finite(row, chunk * per_task + i)?;
                }
            }
            Ok(())
        })
}

/// Routes one token: `row` has E logits, `ids`/`weights` get k entries.
/// Returns false (outputs unspecified) when a logit is not finite.
fn route_row(row: &[f32], cfg: &RouterConfig, ids: &mut [u32], weights: &mut [f32]) -> bool {
    let k = cfg.top_k;
    let mut best_v = [f32::NEG_INFINITY; MAX_TOP_K];
    let mut best_i = [0u32; MAX_TOP_K];
    let mut filled = 0usize;
    let mut finite = true;
    for (e, &v) in row.iter().enumerate() {
        finite &= v.is_finite();
        // Strict comparisons keep the earlier (lower) index ahead on ties.
        if filled == k && v <= best_v[k - 1] {
            continue;
        }
        let mut pos = if filled < k { filled } else { k - 1 };
        while pos > 0 && v > best_v[pos - 1] {
            best_v[pos] = best_v[pos - 1];
            best_i[pos] = best_i[pos - 1];
            pos -= 1;
        }
        best_v[pos] = v;
        best_i[pos] = e as u32;
        filled = (filled + 1).min(k);
    }
    if !finite {
        return false;
    }
    let max = best_v[0];
    let mut chosen = 0.0f32;
    for j in 0..k {
        let p = (best_v[j] - max).exp();
        weights[j] = p;
        chosen += p;
        ids[j] = best_i[j];
    }
    let denom = if cfg.norm_topk_prob {
        chosen
    } else {
        row.iter().map(|&v| (v - max).exp()).sum::<f32>()
    };
    let inv = 1.0 / denom;
    for w in weights.iter_mut() {
        *w *= inv;
    }
    true
}

/// Reference router projection `logits[t, e] = Σ_d x[t, d] · gate[e, d]` in f64.
pub fn router_logits_reference(x: &[f32], hidden: usize, gate: &[f32], out: &mut [f32]) -> Result<()> {
    let (tokens, experts) = check_projection(x.len(), hidden, gate.len(), out.len())?;
    for t in 0..tokens {
        let xr = &x[t * hidden..(t + 1) * hidden];
        for e in 0..experts {
            let gr = &gate[e * hidden..(e + 1) * hidden];
            let dot: f64 = xr.iter().zip(gr).map(|(&a, &b)| a as f64 * b as f64).sum();
            out[t * experts + e] = dot as f32;
        }
    }
    Ok(())
}

/// Router projection through the GEMM crate (`x [T, H] · gateᵀ`, gate `[E, H]`).
pub fn router_logits(x: &[f32], hidden: usize, gate: &[f32], out: &mut [f32]) -> Result<()> {
    let (tokens, experts) = check_projection(x.len(), hidden, gate.len(), out.len())?;
    let rhs = super::expert::MatRef::new(gate, 0, hidden, experts, 1, hidden)?;
    super::expert::matmul(x, tokens, hidden, &rhs, out, true)
}

fn check_projection(x_len: usize, hidden: usize, gate_len: usize, out_len: usize) -> Result<(usize, usize)> {
    if hidden == 0 {
        return Err(Error::invalid("hidden size 0"));
    }
    if x_len % hidden != 0 || gate_len % hidden != 0 {
        return Err(Error::ShapeMismatch(format!(
            "x has {x_len} and the router weight {gate_len} elements; both must be rows of hidden {hidden}"
        )));
    }
    let (tokens, experts) = (x_len / hidden, gate_len / hidden);
    if experts == 0 || experts > MAX_EXPERTS {
        return Err(Error::invalid(format!(
            "router weight has {experts} rows (experts); need 1..={MAX_EXPERTS}"
        )));
    }
    let want = tokens
        .checked_mul(experts)
        .ok_or_else(|| Error::Overflow(format!("{tokens} tokens x {experts} experts")))?;
    if out_len != want {
        return Err(Error::ShapeMismatch(format!(
            "logits buffer has {out_len} elements; {tokens} tokens x {experts} experts needs {want}"
        )));
    }
    Ok((tokens, experts))
}
