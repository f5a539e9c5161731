//! The autotuner: measures candidate plans (tile size, block order,
//! non-temporal stores, thread count) for a problem and keeps the fastest in
//! a JSON cache that [`tuned_plan`] consults.
//!
//! Cache location: `$VLK_TUNE_CACHE` if set, else
//! `$XDG_CACHE_HOME/vlkernels/permute-tune.json`, else
//! `$HOME/.cache/vlkernels/permute-tune.json`. Entries are keyed by the
//! canonical problem (so equivalent shapes share one), the element size,
//! the kernel family and the thread count asked for.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::plan::{BlockOrder, PermutePlan, Strategy, Tuning};
use super::PermuteOptions;
use crate::{Error, Result};

/// One tuned problem.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TuneEntry {
    /// A readable name of the problem that was tuned (shape and permutation).
    pub problem: String,
    pub tuning: Tuning,
    /// GiB/s (read + written) of the chosen and of the default plan when tuned.
    pub gibs: f64,
    pub default_gibs: f64,
}

/// The tuning cache file's content.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TuneCache {
    pub entries: BTreeMap<String, TuneEntry>,
}

/// Where the cache lives (see the module docs).
pub fn cache_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("VLK_TUNE_CACHE") {
        return Ok(PathBuf::from(p));
    }
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(x) => PathBuf::from(x),
        None => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".cache"),
            None => {
                return Err(Error::Unavailable(
                    "no VLK_TUNE_CACHE, XDG_CACHE_HOME or HOME to place the tuning cache".into(),
                ))
            }
        },
    };
    Ok(base.join("vlkernels").join("permute-tune.json"))
}

impl TuneCache {
    /// Loads the cache; a missing file is an empty cache.
    pub fn load() -> Result<Self> {
        let path = cache_path()?;
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                Error::Format(format!(
                    "tuning cache {}: {e} (delete it to start afresh)",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TuneCache::default()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Writes the cache (creating its directory).
    pub fn save(&self) -> Result<PathBuf> {
        let path = cache_path()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Format(e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
        Ok(path)
    }
}

/// The cache key of a plan: canonical axes, element size, kernel family, threads asked for.
pub fn key(plan: &PermutePlan, threads_asked: usize) -> String {
    let dims: Vec<String> = plan
        .dims()
        .iter()
        .map(|d| format!("{}:{}", d.extent, d.src_stride))
        .collect();
    format!(
        "{}|e{}|t{}|{}",
        plan.kernel().name(),
        plan.elem_bytes(),
        threads_asked,
        dims.join(",")
    )
}

/// A plan with the cached tuning applied when the cache has this problem
/// (the same as `PermutePlan::new` with `opts.tuned = true`).
pub fn tuned_plan(shape: &[usize], perm: &[usize], elem_bytes: usize, opts: &PermuteOptions) -> Result<PermutePlan> {
    PermutePlan::new(shape, perm, elem_bytes, &opts.clone().with_tuned(true))
}

/// Applies the cached tuning of `plan`'s problem, if any.
pub(crate) fn apply_cached(plan: PermutePlan) -> Result<PermutePlan> {
    let cache = TuneCache::load()?;
    match cache.entries.get(&key(&plan, plan.threads())) {
        Some(e) => plan.with_tuning(&e.tuning),
        None => Ok(plan),
    }
}

/// The candidates tried for a plan: square and long tile shapes and block
/// orders for transposes, line bands where the transpose has them, streaming
/// stores on/off, and thread counts up to the maximum.
pub fn candidates(plan: &PermutePlan) -> Vec<Tuning> {
    let base = plan.tuning();
    let max_threads = base.threads.max(1);
    let mut threads = vec![max_threads];
    let mut t = max_threads / 2;
    while t >= 1 && threads.len() < 3 {
        threads.push(t);
        t /= 2;
    }
    // Channel strips ignore tiles, orders and store choice: only the thread count.
    if plan.strips().is_some() {
        return threads.into_iter().map(|threads| Tuning { threads, ..base }).collect();
    }
    let transposes = matches!(plan.strategy(), Strategy::Transpose { .. });
    let tiles: Vec<usize> = if transposes {
        [8usize, 16, 32, 64, 128]
            .into_iter()
            .filter(|&t| t * plan.elem_bytes() <= 512)
            .collect()
    } else {
        vec![base.tile]
    };
    let groups: Vec<usize> = if transposes { vec![1, 4, 32] } else { vec![1] };
    let orders: &[BlockOrder] = if transposes {
        &[BlockOrder::DstFastest, BlockOrder::SrcFastest]
    } else {
        &[BlockOrder::DstFastest]
    };
    let nts: &[bool] = &[false, true];
    // (tile along the source's stride-1 group, tile along the destination's, group)
    let mut shapes: Vec<(usize, usize, usize)> = Vec::new();
    for &tile in &tiles {
        for &g in &groups {
            shapes.push((tile, tile, tile * g));
        }
    }
    if transposes {
        // Long source pieces by a few destination lines, staged in L1/L2
        // (512 × 512 bytes: the all-2 reversal's best, 1.10× its default plan).
        for ta in [256usize, 512, 1024, 2048, 4096] {
            for tb_bytes in [128usize, 256, 512] {
                let tb = (tb_bytes / plan.elem_bytes()).max(8);
                if ta * tb * plan.elem_bytes() <= 1 << 20 {
                    shapes.push((ta, tb, ta.max(4096)));
                }
            }
        }
    }
    let mut out = Vec::new();
    // Line bands ignore the tile sides: each walk once per thread count, where
    // the plan has a banded form and the family a kernel that fills lines
    // (otherwise they would re-time the `SrcFastest` tiles).
    let es = plan.elem_bytes();
    let banded = super::bands::plan_bands(plan.dims(), es, BlockOrder::Bands).is_some()
        && super::bands::band_kernel(plan.kernel(), es).is_some();
    if transposes && banded {
        for &th in &threads {
            for block_order in [BlockOrder::BandsAlong, BlockOrder::BandsAcross] {
                out.push(Tuning {
                    block_order,
                    non_temporal: true,
                    threads: th,
                    ..base
                });
            }
        }
    }
    for &th in &threads {
        for &(tile, tile_b, group) in &shapes {
            for &block_order in orders {
                for &nt in nts {
                    out.push(Tuning {
                        tile,
                        tile_b,
                        group,
                        block_order,
                        non_temporal: nt,
                        threads: th,
                    });
                }
            }
        }
    }
    out
}

/// Interleaved re-timings of the search's winner against the default plan.
const CONFIRM_ROUNDS: usize = 5;
/// How much faster (median of those rounds) the winner must be to replace the default.
const CONFIRM_MARGIN: f64 = 0.03;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median time in seconds of `reps` runs of `plan`.
fn time_plan(plan: &PermutePlan, src: &[u8], dst: &mut [u8], reps: usize) -> Result<f64> {
    plan.execute_bytes(src, dst)?;
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let s = Instant::now();
        plan.execute_bytes(src, dst)?;
        t.push(s.elapsed().as_secs_f64());
    }
    Ok(median(t))
}

/// Measures every candidate for the problem, confirms the fastest against the
/// default in interleaved re-timings, stores the choice in `cache` and returns
/// it. `progress(i, n)` is called after each candidate.
pub fn tune_problem(
    shape: &[usize],
    perm: &[usize],
    elem_bytes: usize,
    opts: &PermuteOptions,
    reps: usize,
    cache: &mut TuneCache,
    mut progress: impl FnMut(usize, usize),
) -> Result<TuneEntry> {
    let plan = PermutePlan::new(shape, perm, elem_bytes, &opts.clone().with_tuned(false))?;
    let bytes = plan.numel() * elem_bytes;
    let mut src = crate::buffer::huge_page_buffer(bytes);
    src.iter_mut().enumerate().for_each(|(i, x)| *x = i as u8);
    let mut dst = crate::buffer::huge_page_buffer(bytes);
    let gibs = |secs: f64| 2.0 * bytes as f64 / secs / (1u64 << 30) as f64;
    let default_time = time_plan(&plan, &src, &mut dst, reps)?;
    let cands = candidates(&plan);
    let mut best = (default_time, plan.tuning());
    for (i, c) in cands.iter().enumerate() {
        let t = time_plan(&plan.with_tuning(c)?, &src, &mut dst, reps)?;
        if t < best.0 {
            best = (t, *c);
        }
        progress(i + 1, cands.len());
    }
    // The fastest of many noisy timings is partly luck: re-time the winner and the
    // default interleaved and keep the winner only if it is still clearly faster.
    // A candidate equal to the default may also win by luck: that is one plan,
    // so it keeps the default's own figure.
    let (mut default_time, mut best_time, mut tuning) = (default_time, default_time, plan.tuning());
    if best.1 != plan.tuning() {
        let winner = plan.with_tuning(&best.1)?;
        let (mut td, mut tw) = (Vec::new(), Vec::new());
        for _ in 0..CONFIRM_ROUNDS {
            td.push(time_plan(&plan, &src, &mut dst, reps)?);
            tw.push(time_plan(&winner, &src, &mut dst, reps)?);
        }
        (default_time, best_time) = (median(td), median(tw));
        if best_time <= default_time * (1.0 - CONFIRM_MARGIN) {
            tuning = best.1;
        } else {
            best_time = default_time;
        }
    }
    let entry = TuneEntry {
        problem: format!("shape {shape:?} perm {perm:?} {elem_bytes}-byte"),
        tuning,
        gibs: gibs(best_time),
        default_gibs: gibs(default_time),
    };
    cache.entries.insert(key(&plan, plan.threads()), entry.clone());
    Ok(entry)
}
