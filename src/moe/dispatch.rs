//! Dispatch plan: which assignment goes where in expert-contiguous order.
//!
//! An *assignment* is one (token, slot) pair, numbered `a = t * k + j`. The plan
//! sorts the `T * k` assignments by expert with a stable counting sort, so the
//! order inside an expert is ascending `a` (deterministic, unlike kernels that
//! claim slots with atomics), pads each expert's segment to a block size for
//! block GEMMs, and keeps the inverse map for the weighted scatter back.

use rayon::prelude::*;

use super::router::MAX_EXPERTS;
use crate::{Error, Result};

/// The expert-sorted order of `T * k` routing assignments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DispatchPlan {
    pub num_experts: usize,
    pub top_k: usize,
    pub tokens: usize,
    /// Segment alignment of the padded order (1 = no padding).
    pub block_size: usize,
    /// Assignments per expert, `[E]`.
    pub counts: Vec<u32>,
    /// Start of each expert's segment in `sorted`, `[E + 1]`.
    pub offsets: Vec<usize>,
    /// Assignment index `a = t * k + j` at each sorted position, `[T * k]`.
    pub sorted: Vec<u32>,
    /// Sorted position of each assignment, `[T * k]` (`sorted[inverse[a]] == a`).
    pub inverse: Vec<u32>,
    /// Start of each expert's segment padded to `block_size`, `[E + 1]`.
    pub padded_offsets: Vec<usize>,
    /// `sorted` with each segment padded by [`DispatchPlan::pad_value`], `[padded_offsets[E]]`.
    pub padded_sorted: Vec<u32>,
    /// Expert of each block of the padded order, `[padded_offsets[E] / block_size]`.
    pub block_experts: Vec<u32>,
}

impl DispatchPlan {
    /// Value in the padding slots of `padded_sorted`: `T * k`, one past the last assignment.
    pub fn pad_value(&self) -> u32 {
        (self.tokens * self.top_k) as u32
    }

    /// Token of the assignment at sorted position `p`.
    pub fn token_at(&self, p: usize) -> usize {
        self.sorted[p] as usize / self.top_k
    }
}

fn check(ids: &[u32], num_experts: usize, top_k: usize, block_size: usize) -> Result<usize> {
    if num_experts == 0 || num_experts > MAX_EXPERTS {
        return Err(Error::invalid(format!(
            "num_experts {num_experts} is outside 1..={MAX_EXPERTS}"
        )));
    }
    if top_k == 0 || top_k > num_experts {
        return Err(Error::invalid(format!("top_k {top_k} is outside 1..={num_experts}")));
    }
    if block_size == 0 || block_size > 1 << 16 {
        return Err(Error::invalid(format!("block_size {block_size} is outside 1..=65536")));
    }
    if ids.len() % top_k != 0 {
        return Err(Error::ShapeMismatch(format!(
            "{} expert ids is not a whole number of tokens of top_k {top_k}",
            ids.len()
        )));
    }
    // Padded length is at most T*k + E*(block-1); it and T*k must fit in u32.
    let padded_max = (num_experts as u64) * (block_size as u64 - 1) + ids.len() as u64;
    if padded_max >= u32::MAX as u64 {
        return Err(Error::Overflow(format!(
            "{} assignments (+ padding up to {padded_max}) do not fit 32-bit positions",
            ids.len()
        )));
    }
    if let Some(p) = ids.iter().position(|&e| e as usize >= num_experts) {
        return Err(Error::invalid(format!(
            "expert id {} at token {}, slot {} is not below num_experts {num_experts}",
            ids[p],
            p / top_k,
            p % top_k
        )));
    }
    Ok(ids.len() / top_k)
}

/// Fills the padded fields from `counts`/`sorted`.
fn pad(plan: &mut DispatchPlan) {
    let (e_count, b) = (plan.num_experts, plan.block_size);
    plan.padded_offsets = vec![0; e_count + 1];
    for e in 0..e_count {
        let c = plan.counts[e] as usize;
        plan.padded_offsets[e + 1] = plan.padded_offsets[e] + c.div_ceil(b) * b;
    }
    let pad_value = plan.pad_value();
    let total = plan.padded_offsets[e_count];
    plan.padded_sorted = vec![pad_value; total];
    plan.block_experts = vec![0; total / b];
    for e in 0..e_count {
        let (src, dst) = (plan.offsets[e], plan.padded_offsets[e]);
        let c = plan.counts[e] as usize;
        plan.padded_sorted[dst..dst + c].copy_from_slice(&plan.sorted[src..src + c]);
        plan.block_experts[dst / b..plan.padded_offsets[e + 1] / b].fill(e as u32);
    }
}

/// Scalar reference: for each expert in turn, scan all assignments in order.
pub fn plan_dispatch_reference(
    ids: &[u32],
    num_experts: usize,
    top_k: usize,
    block_size: usize,
) -> Result<DispatchPlan> {
    let tokens = check(ids, num_experts, top_k, block_size)?;
    let n = ids.len();
    let mut plan = DispatchPlan {
        num_experts,
        top_k,
        tokens,
        block_size,
        counts: vec![0; num_experts],
        offsets: vec![0; num_experts + 1],
        sorted: Vec::with_capacity(n),
        inverse: vec![0; n],
        padded_offsets: Vec::new(),
        padded_sorted: Vec::new(),
        block_experts: Vec::new(),
    };
    for e in 0..num_experts {
        for (a, &id) in ids.iter().enumerate() {
            if id as usize == e {
                plan.inverse[a] = plan.sorted.len() as u32;
                plan.sorted.push(a as u32);
                plan.counts[e] += 1;
            }
        }
        plan.offsets[e + 1] = plan.sorted.len();
    }
    pad(&mut plan);
    Ok(plan)
}

/// Fast path: a stable counting sort. Chunks of assignments are counted in
/// parallel; each chunk's start inside every expert segment is the segment
/// start plus the counts of the chunks before it, so scattering chunk by
/// chunk keeps ascending order within an expert.
pub fn plan_dispatch(ids: &[u32], num_experts: usize, top_k: usize, block_size: usize) -> Result<DispatchPlan> {
    let tokens = check(ids, num_experts, top_k, block_size)?;
    let n = ids.len();
    let chunk = 16384.max(n.div_ceil(rayon::current_num_threads().max(1)));
    let hist: Vec<Vec<u32>> = ids
        .par_chunks(chunk.max(1))
        .map(|c| {
            let mut h = vec![0u32; num_experts];
            for &e in c {
                h[e as usize] += 1;
            }
            h
        })
        .collect();
    let mut counts = vec![0u32; num_experts];
    for h in &hist {
        for (c, &v) in counts.iter_mut().zip(h) {
            *c += v;
        }
    }
    let mut offsets = vec![0usize; num_experts + 1];
    for e in 0..num_experts {
        offsets[e + 1] = offsets[e] + counts[e] as usize;
    }
    // Per-chunk write cursors, then each chunk writes its inverse slice.
    let mut cursors = Vec::with_capacity(hist.len());
    let mut running: Vec<usize> = offsets[..num_experts].to_vec();
    for h in &hist {
        cursors.push(running.clone());
        for (r, &v) in running.iter_mut().zip(h) {
            *r += v as usize;
        }
    }
    let mut inverse = vec![0u32; n];
    inverse
        .par_chunks_mut(chunk.max(1))
        .zip(ids.par_chunks(chunk.max(1)))
        .zip(cursors.par_iter_mut())
        .for_each(|((inv, c), cur)| {
            for (slot, &e) in inv.iter_mut().zip(c) {
                *slot = cur[e as usize] as u32;
                cur[e as usize] += 1;
            }
        });
    let mut sorted = vec![0u32; n];
    for (a, &p) in inverse.iter().enumerate() {
        sorted[p as usize] = a as u32;
    }
    let mut plan = DispatchPlan {
        num_experts,
        top_k,
        tokens,
        block_size,
        counts,
        offsets,
        sorted,
        inverse,
        padded_offsets: Vec::new(),
        padded_sorted: Vec::new(),
        block_experts: Vec::new(),
    };
    pad(&mut plan);
    Ok(plan)
}
