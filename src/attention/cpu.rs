//! Blocked CPU attention with an online softmax (flash-style, f32 accumulation).
//!
//! Work items are (segment, key/value head, block of query tokens). An item's
//! rows are the (token, query head) pairs of one GQA group, so every key and
//! value block loaded serves all query heads that share it (one decode token with
//! a group of 7 heads still makes 7 rows). For each key block of [`KEY_BLOCK`]
//! keys: `S = Q·Kᵀ` (K widened and transposed into a padded f32 scratch), mask, online softmax
//! update of the running max `m`, sum `l` and output `O`, then `O += P·V`.
//! Items run in parallel on rayon's pool; each writes its own rows of `out`.

#![allow(clippy::needless_range_loop)] // index loops mirror the math (rows, lanes)

use super::microkernel::{best_isa, Isa, LOG2_E};
use super::{key_end, AttentionArgs, AttnElem};
use crate::{Error, Result};
use rayon::prelude::*;

/// Rows (token × grouped head) per work item: each K/V block converted serves them all.
const ROW_BLOCK: usize = 256;
/// Keys per inner block.
const KEY_BLOCK: usize = 64;

/// Which micro-kernels the CPU path uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuAttnKernel {
    /// The best available (AVX2+FMA when detected, else portable).
    #[default]
    Auto,
    /// Portable loops (compiler-vectorised).
    Portable,
    /// AVX2+FMA intrinsics; an error on a CPU without them.
    Avx2,
}

impl CpuAttnKernel {
    fn resolve(self) -> Result<Isa> {
        match self {
            CpuAttnKernel::Auto => Ok(best_isa()),
            CpuAttnKernel::Portable => Ok(Isa::Portable),
            CpuAttnKernel::Avx2 => {
                #[cfg(target_arch = "x86_64")]
                if best_isa() == Isa::Avx2 {
                    return Ok(Isa::Avx2);
                }
                Err(Error::Unavailable(
                    "AVX2+FMA attention kernel: this CPU lacks avx2 or fma".into(),
                ))
            }
        }
    }
}

/// Varlen attention on the CPU with the best kernels: see [`attention_with`].
pub fn attention<T: AttnElem>(args: &AttentionArgs, q: &[T], k: &[T], v: &[T], out: &mut [T]) -> Result<()> {
    attention_with(args, q, k, v, out, CpuAttnKernel::Auto, None)
}

/// Varlen attention on the CPU: validates `args` against the buffers, then
/// writes every row of `out` (`[Nq, Hq, D]` with `out_row_stride`). `threads`:
/// `Some(1)` runs on the calling thread, `None` uses rayon's pool.
pub fn attention_with<T: AttnElem>(
    args: &AttentionArgs,
    q: &[T],
    k: &[T],
    v: &[T],
    out: &mut [T],
    kernel: CpuAttnKernel,
    threads: Option<usize>,
) -> Result<()> {
    args.validate(q.len(), k.len(), v.len(), out.len())?;
    if threads == Some(0) {
        return Err(Error::invalid("threads = 0: need at least one"));
    }
    let isa = kernel.resolve()?;
    let items = work_items(args);
    let out_ptr = SharedOut(out.as_mut_ptr());
    let run = |item: &Item| {
        let out_ptr = &out_ptr;
        SCRATCH.with(|cell| {
            // A worker runs one item at a time, so the borrow is never contended.
            let mut scratch = cell.borrow_mut();
            scratch.ensure(args.head_dim);
            // SAFETY: items write disjoint (token, head) rows of `out`, whose bounds
            // `validate` checked; `out` is borrowed mutably for the whole call.
            unsafe { run_item(args, isa, item, q, k, v, out_ptr.0, &mut scratch) }
        })
    };
    let serial = threads == Some(1) || items.len() <= 1;
    if serial {
        items.iter().for_each(run);
    } else {
        let go = || items.par_iter().with_max_len(1).for_each(run);
        match threads {
            Some(n) => rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| Error::invalid(format!("cannot start {n} threads: {e}")))?
                .install(go),
            None => go(),
        }
    }
    Ok(())
}

/// Raw output pointer shared by the workers (rows are disjoint per item).
struct SharedOut<T>(*mut T);
// SAFETY: only disjoint elements are written through it, see `attention_with`.
unsafe impl<T: Send> Sync for SharedOut<T> {}

/// Query tokens `t0..t1` of segment `seg` for all query heads of key/value head `kvh`.
#[derive(Clone, Copy, Debug)]
struct Item {
    seg: usize,
    kvh: usize,
    t0: usize,
    t1: usize,
}

fn work_items(args: &AttentionArgs) -> Vec<Item> {
    let tokens_per_item = (ROW_BLOCK / args.group_size()).max(1);
    let mut items = Vec::new();
    for seg in 0..args.num_segments() {
        let sq = args.segment(seg).q_len;
        for kvh in 0..args.num_kv_heads {
            let mut t0 = 0;
            while t0 < sq {
                let t1 = (t0 + tokens_per_item).min(sq);
                items.push(Item { seg, kvh, t0, t1 });
                t0 = t1;
            }
        }
    }
    // Longest items first (causal items near the end of a segment see more keys).
    if args.causal {
        items.sort_by_key(|it| std::cmp::Reverse(it.t1 as i64 - args.segment(it.seg).q_len as i64));
    }
    items
}

/// Per-worker buffers, reused across items.
struct Scratch {
    d: usize,     // head dimension the buffers are sized for
    q: Vec<f32>,  // rows × D, pre-scaled by scale·log2(e)
    kr: Vec<f32>, // KEY_BLOCK × D keys (zero-padded rows)
    kt: Vec<f32>, // D × KEY_BLOCK: kr transposed
    v: Vec<f32>,  // KEY_BLOCK × D (zero-padded rows)
    s: Vec<f32>,  // rows × KEY_BLOCK logits, then probabilities
    o: Vec<f32>,  // rows × D accumulator
    m: Vec<f32>,  // running max per row (base-2 logits)
    l: Vec<f32>,  // running sum per row
}

thread_local! {
    /// Each thread's buffers, kept across items and calls (allocating ~0.3 MB per item
    /// would cost more than a 64-token window's arithmetic).
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::new(0));
}

impl Scratch {
    /// Sizes the buffers for head dimension `d` (no-op when they already fit it).
    fn ensure(&mut self, d: usize) {
        if self.d != d {
            *self = Scratch::new(d);
        }
    }

    fn new(d: usize) -> Self {
        let rows = ROW_BLOCK; // ensure_rows grows it for a GQA group wider than ROW_BLOCK
        Scratch {
            d,
            q: vec![0.0; rows * d],
            kr: vec![0.0; KEY_BLOCK * d],
            kt: vec![0.0; d * KEY_BLOCK],
            v: vec![0.0; KEY_BLOCK * d],
            s: vec![0.0; rows * KEY_BLOCK],
            o: vec![0.0; rows * d],
            m: vec![0.0; rows],
            l: vec![0.0; rows],
        }
    }

    fn ensure_rows(&mut self, rows: usize, d: usize) {
        if self.m.len() < rows {
            self.q.resize(rows * d, 0.0);
            self.s.resize(rows * KEY_BLOCK, 0.0);
            self.o.resize(rows * d, 0.0);
            self.m.resize(rows, 0.0);
            self.l.resize(rows, 0.0);
        }
    }
}

/// Computes one item and writes its rows of `out`.
///
/// # Safety
/// `out` must be valid for the rows validated by `args.validate`, and no other
/// thread may write the rows of this item concurrently.
#[allow(clippy::too_many_arguments)]
unsafe fn run_item<T: AttnElem>(
    args: &AttentionArgs,
    isa: Isa,
    item: &Item,
    q: &[T],
    k: &[T],
    v: &[T],
    out: *mut T,
    sc: &mut Scratch,
) {
    let d = args.head_dim;
    let g = args.group_size();
    let seg = args.segment(item.seg);
    let rows = (item.t1 - item.t0) * g;
    sc.ensure_rows(rows, d);
    let head0 = item.kvh * g;
    let qscale = args.scale * LOG2_E;

    // Row r is token t0 + r / g, query head head0 + r % g.
    for r in 0..rows {
        let (t, h) = (item.t0 + r / g, head0 + r % g);
        let src = &q[(seg.q_start + t) * args.q_row_stride + h * d..][..d];
        for (dst, &x) in sc.q[r * d..(r + 1) * d].iter_mut().zip(src) {
            *dst = x.to_f32() * qscale;
        }
    }
    sc.o[..rows * d].fill(0.0);
    sc.m[..rows].fill(f32::NEG_INFINITY);
    sc.l[..rows].fill(0.0);

    // Keys visible to the last token bound the loop; the first token's bound
    // tells from where a block needs the causal mask.
    let sq = seg.q_len;
    let k_end = key_end(item.t1 - 1, sq, seg.k_len, args.causal);
    let k_unmasked = key_end(item.t0, sq, seg.k_len, args.causal);
    let mut kb = 0;
    while kb < k_end {
        let nb = KEY_BLOCK.min(k_end - kb);
        let nbp = nb.div_ceil(8) * 8;
        // Keys (then transposed) and values of this block in f32, zero-padded to nbp rows.
        for j in 0..nbp {
            let (kdst, vdst) = (&mut sc.kr[j * d..(j + 1) * d], &mut sc.v[j * d..(j + 1) * d]);
            if j < nb {
                let krow = &k[(seg.k_start + kb + j) * args.k_row_stride + item.kvh * d..][..d];
                let vrow = &v[(seg.k_start + kb + j) * args.v_row_stride + item.kvh * d..][..d];
                T::load_f32(krow, kdst);
                T::load_f32(vrow, vdst);
            } else {
                kdst.fill(0.0);
                vdst.fill(0.0);
            }
        }
        isa.transpose(&sc.kr[..nbp * d], nbp, d, &mut sc.kt[..d * nbp]);
        // The next block's rows are strided (one head of each token): ask for them now so
        // they arrive while this block computes.
        for j in kb + nb..(kb + nb + KEY_BLOCK).min(k_end) {
            prefetch(&k[(seg.k_start + j) * args.k_row_stride + item.kvh * d..][..d]);
            prefetch(&v[(seg.k_start + j) * args.v_row_stride + item.kvh * d..][..d]);
        }
        let s = &mut sc.s[..rows * nbp];
        s.fill(0.0);
        isa.gemm_acc(rows, nbp, d, &sc.q, d, &sc.kt, nbp, s, nbp);

        let needs_mask = nb < nbp || kb + nb > k_unmasked;
        for r in 0..rows {
            let srow = &mut s[r * nbp..(r + 1) * nbp];
            if needs_mask {
                let visible = key_end(item.t0 + r / g, sq, seg.k_len, args.causal)
                    .saturating_sub(kb)
                    .min(nb);
                srow[visible..].fill(f32::NEG_INFINITY);
            }
            let (m_new, alpha, sum) = isa.softmax_step(srow, sc.m[r]);
            sc.m[r] = m_new;
            sc.l[r] = sc.l[r] * alpha + sum;
            if alpha != 1.0 {
                for o in &mut sc.o[r * d..(r + 1) * d] {
                    *o *= alpha;
                }
            }
        }
        isa.gemm_acc(rows, d, nbp, s, nbp, &sc.v, d, &mut sc.o, d);
        kb += nb;
    }

    for r in 0..rows {
        let (t, h) = (item.t0 + r / g, head0 + r % g);
        let l = sc.l[r];
        let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
        let dst = out.add((seg.q_start + t) * args.out_row_stride + h * d);
        for c in 0..d {
            dst.add(c).write(T::from_f32(sc.o[r * d + c] * inv));
        }
    }
}

/// Hints that `row` will be read soon (every 64-byte line of it); no-op off x86_64.
#[inline(always)]
fn prefetch<T>(row: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let bytes = std::mem::size_of_val(row);
        let p = row.as_ptr() as *const i8;
        for off in (0..bytes).step_by(64) {
            // SAFETY: a prefetch never faults, and the address lies inside `row`.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.add(off)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}
