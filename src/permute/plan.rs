//! Planning: validate a permutation problem, canonicalise it (drop size-1
//! axes, fuse axes that are contiguous in both source and destination) and
//! classify it into one of a few execution strategies.

use crate::tensor::{checked_numel, contiguous_strides, validate_perm};
use crate::{Error, Result};

use super::kernels::{self, KernelFamily};
use super::options::{NonTemporal, PermuteOptions};

/// One axis of the canonical problem, in destination (output) order.
/// Strides are in elements; the destination is always row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dim {
    pub extent: usize,
    pub src_stride: usize,
    pub dst_stride: usize,
}

/// The execution strategy chosen for a canonical problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Nothing to do: zero elements.
    Empty,
    /// Source and destination are the same contiguous sequence.
    Copy,
    /// The destination's stride-1 axis is stride-1 in the source too: copy
    /// contiguous runs of `dims.last().extent` elements under a loop nest.
    Runs,
    /// The stride-1 axes differ: blocked transposes of tiles whose rows are
    /// formed from a group of source-contiguous axes (`src_group`) and whose
    /// columns from a group of trailing destination axes (`dst_group`).
    /// Group members are indices into `dims`, innermost first.
    Transpose {
        src_group: Vec<usize>,
        dst_group: Vec<usize>,
        tile_a: usize,
        tile_b: usize,
    },
    /// Short runs whose destination slab (the axes from `split` on, one contiguous
    /// block of the output) is fed by long contiguous stretches of the source: each
    /// slab is gathered in source order into a cache-resident stage, then written
    /// out whole (ViT patchify).
    StagedRuns { split: usize },
    /// A strided source with no stride-1 axis: element gathers under a loop nest.
    Gather,
}

/// Order in which the transpose driver walks the tile blocks of one outer index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum BlockOrder {
    /// Consecutive blocks advance along the destination's stride-1 group.
    #[default]
    DstFastest,
    /// Consecutive blocks advance along the source's stride-1 group.
    SrcFastest,
    /// Streamed transposes only: line bands (see `bands.rs`), each pass
    /// writing one whole line of every destination row straight from the
    /// micro-kernel; the tile sides do not apply. Elsewhere as `SrcFastest`.
    /// The planner picks how the bands are walked.
    Bands,
    /// Line bands, each band walked along the whole source group (16 KiB of
    /// every source row at a time) before the next band. Like `Bands`, as
    /// `SrcFastest` where the plan has no banded form.
    BandsAlong,
    /// Line bands walked across: every band of a 2 KiB chunk of the source
    /// rows before the next chunk, so each destination row is written whole
    /// within a short time.
    BandsAcross,
}

impl BlockOrder {
    /// Whether this order asks for line bands.
    pub fn banded(self) -> bool {
        matches!(
            self,
            BlockOrder::Bands | BlockOrder::BandsAlong | BlockOrder::BandsAcross
        )
    }
}

/// The tunable parameters of a plan (what `vlk tune` searches over).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Tuning {
    /// Transpose tile extent along the source's stride-1 group (elements
    /// per source row piece).
    pub tile: usize,
    /// Tile extent along the destination's stride-1 group (elements per
    /// destination row piece); 0 in caches written before it existed means `tile`.
    #[serde(default)]
    pub tile_b: usize,
    /// Axes join a transpose's source and destination groups until each
    /// group spans at least this many elements (≥ `tile`); larger groups
    /// give longer contiguous streams per outer iteration.
    pub group: usize,
    pub block_order: BlockOrder,
    pub non_temporal: bool,
    pub threads: usize,
}

/// A validated, canonicalised permutation problem, ready to execute many times.
#[derive(Clone, Debug)]
pub struct PermutePlan {
    pub(crate) shape: Vec<usize>,
    pub(crate) perm: Vec<usize>,
    pub(crate) elem_bytes: usize,
    pub(crate) numel: usize,
    /// Smallest source length (in elements) that covers every addressed element.
    pub(crate) src_len: usize,
    pub(crate) dims: Vec<Dim>,
    pub(crate) strategy: Strategy,
    pub(crate) kernel: KernelFamily,
    pub(crate) threads: usize,
    pub(crate) non_temporal: bool,
    pub(crate) tile: usize,
    pub(crate) tile_b: usize,
    pub(crate) group: usize,
    pub(crate) block_order: BlockOrder,
}

/// Element sizes that the engine moves (bytes).
pub const SUPPORTED_ELEM_BYTES: [usize; 5] = [1, 2, 4, 8, 16];

/// Maximum rank accepted.
pub const MAX_RANK: usize = 64;

impl PermutePlan {
    /// Plans `dst = transpose(src.reshape(shape), perm)` for a row-major source.
    pub fn new(shape: &[usize], perm: &[usize], elem_bytes: usize, opts: &PermuteOptions) -> Result<Self> {
        let strides = contiguous_strides(shape);
        Self::new_strided(shape, &strides, perm, elem_bytes, opts)
    }

    /// Plans a permutation of a source view whose axis `i` has extent
    /// `shape[i]` and stride `src_strides[i]` (in elements).
    pub fn new_strided(
        shape: &[usize],
        src_strides: &[usize],
        perm: &[usize],
        elem_bytes: usize,
        opts: &PermuteOptions,
    ) -> Result<Self> {
        if !SUPPORTED_ELEM_BYTES.contains(&elem_bytes) {
            return Err(Error::invalid(format!(
                "element size {elem_bytes} bytes is not one of 1, 2, 4, 8, 16"
            )));
        }
        if shape.len() > MAX_RANK {
            return Err(Error::invalid(format!(
                "rank {} exceeds the maximum of {MAX_RANK}",
                shape.len()
            )));
        }
        if src_strides.len() != shape.len() {
            return Err(Error::ShapeMismatch(format!(
                "{} source strides {src_strides:?} for a shape {shape:?} of rank {}",
                src_strides.len(),
                shape.len()
            )));
        }
        validate_perm(perm, shape.len())?;
        let numel = checked_numel(shape)?;
        numel.checked_mul(elem_bytes).ok_or_else(|| {
            Error::Overflow(format!(
                "byte size of shape {shape:?} × {elem_bytes} bytes overflows usize"
            ))
        })?;
        let src_len = if numel == 0 {
            0
        } else {
            let mut max = 0usize;
            for (&e, &s) in shape.iter().zip(src_strides) {
                let reach = (e - 1).checked_mul(s).and_then(|r| max.checked_add(r)).ok_or_else(|| {
                    Error::Overflow(format!(
                        "source extent of shape {shape:?} with strides {src_strides:?} overflows usize"
                    ))
                })?;
                max = reach;
            }
            max.checked_add(1)
                .and_then(|n| n.checked_mul(elem_bytes).map(|_| n))
                .ok_or_else(|| Error::Overflow(format!("source extent of strides {src_strides:?} overflows usize")))?
        };
        if let Some(0) = opts.threads {
            return Err(Error::invalid("threads = 0: a plan needs at least one thread"));
        }
        let kernel = kernels::resolve(opts.kernel)?;
        let dims = canonicalize(shape, src_strides, perm);
        let bytes = numel * elem_bytes;
        let threads = opts.resolved_threads(bytes);
        let mut non_temporal = match opts.non_temporal {
            NonTemporal::On => true,
            NonTemporal::Off => false,
            // Streaming stores pay off once the output no longer fits in cache.
            NonTemporal::Auto => bytes >= super::options::NON_TEMPORAL_AUTO_BYTES,
        };
        let mut defaults = default_tuning(elem_bytes, non_temporal, threads);
        let line = line_elems(elem_bytes);
        let mut strategy = if numel == 0 {
            Strategy::Empty
        } else {
            classify(&dims, defaults.tile, defaults.tile_b, defaults.group, elem_bytes)
        };
        // The automatic store choice, by strategy. Streaming stores that write
        // part of a line are completed in memory with a read-modify-write, so
        // the layouts that would leave partial lines keep ordinary stores.
        if opts.non_temporal == NonTemporal::Auto {
            let (unaligned_transpose, dst_row_bytes, src_row_elems) = match &strategy {
                Strategy::Transpose {
                    src_group, dst_group, ..
                } => (
                    unaligned_dst_rows(&dims, dst_group, line),
                    dst_group.iter().map(|&g| dims[g].extent).product::<usize>() * elem_bytes,
                    src_group.iter().map(|&g| dims[g].extent).product::<usize>(),
                ),
                _ => (false, 0, 0),
            };
            // Tiles grown along the destination (see `grown_along_destination`)
            // stream from a smaller size: with their source such outputs fill the
            // L3 already, and written in place each pass of a tile leaves a
            // partial line in every one of its many destination rows (alternating
            // runs, 1 thread, 21 MiB: u8 (425,422,117)→(2,0,1) 6.0 → 9.7 GiB/s,
            // bf16 (213,…) 7.5 → 12.1, f32 (223,422,56) 9.5 → 16.3).
            if bytes >= GROWN_STREAM_BYTES
                && grown_along_destination(&strategy, defaults.tile, elem_bytes)
                && (!unaligned_transpose || dst_row_bytes >= STREAM_MIN_UNALIGNED_ROW_BYTES)
            {
                non_temporal = true;
            }
            match strategy {
                // Each slab is gathered in cache and written out whole: streaming
                // measured 0.74–0.96 × memcpy on the Qwen2.5-VL patchify (22 MiB)
                // against 0.60–0.79 with ordinary stores.
                Strategy::StagedRuns { .. } => non_temporal = true,
                // Destination rows that start inside lines: tiles of 512-byte
                // destination pieces walked along the destination. Streamed, each
                // row's partial last line is carried to its next piece and written
                // whole; with ordinary stores the line stays in cache until the
                // neighbouring tile fills it. Source groups that fill a tile keep
                // ordinary stores (alternating runs, 2026-11-24: f64 reversal 10.6 →
                // 13.0 GiB/s on one thread and 18.7–19.2 → 21.0–22.0 on two, f32
                // (3000,5000)→(1,0) 20.5–21.0 → 23.9–27.3 and u8 (7000,9001)→(1,0)
                // 12.7 → 14.4–15.6 on two, bf16 even). Shorter source groups (tiles
                // grown along the destination) stream on two threads, and on one
                // for 8-byte elements (a 43-element f64 group: streamed 1.23× the
                // ordinary speed) or groups of 32 elements and more (u8, bf16 and
                // f32 groups of 37–279 elements at 42 MiB: +5 to +60 %, 13-element
                // ones −15 to −30 %). Short rows keep ordinary stores: their two shared
                // end lines are most of the row (f64 rows of 328 bytes ran at 5.8
                // GiB/s streamed, 10.9 without).
                Strategy::Transpose { .. } if non_temporal && unaligned_transpose => {
                    let short_source = src_row_elems < defaults.tile;
                    non_temporal = dst_row_bytes >= STREAM_MIN_UNALIGNED_ROW_BYTES
                        && short_source
                        && (threads > 1 || elem_bytes >= 8 || src_row_elems >= GROWN_MIN_SOURCE_ELEMS);
                    if non_temporal {
                        defaults.tile = 512;
                    }
                    defaults.tile_b = (512 / elem_bytes).max(8);
                    defaults.block_order = BlockOrder::DstFastest;
                    strategy = classify(&dims, defaults.tile, defaults.tile_b, defaults.group, elem_bytes);
                }
                // Runs are streamed one by one: unless each is whole lines at
                // line-aligned places (an odd-length case measured 0.04 × memcpy).
                Strategy::Runs if non_temporal && !whole_line_runs(&dims, elem_bytes) => non_temporal = false,
                _ => {}
            }
            defaults.non_temporal = non_temporal;
        }
        // Tiles written in place whose destination rows alias in the caches are
        // staged instead (see `dst_rows_alias`), in tiles small enough that the
        // stage stays in L1/L2, walked along the source like streamed tiles
        // (against walking the destination, 1 and 2 threads: 4096² u8 6.1–6.7 →
        // 8.1–8.3 GiB/s, 1–16 MiB f32 and bf16 transposes within −5 % to +10 %).
        if let Strategy::Transpose { src_group, .. } = &strategy {
            if !non_temporal && dst_rows_alias(&dims, src_group, elem_bytes) {
                defaults.tile = ALIASED_TILE;
                defaults.block_order = BlockOrder::SrcFastest;
                strategy = classify(&dims, defaults.tile, defaults.tile_b, defaults.group, elem_bytes);
            }
        }
        // Streamed transposes whose destination rows are whole lines apart run
        // as line bands: no stage, one long stream per source row of the band
        // (1 thread, 2-core EPYC: see BENCHMARKS, "line bands").
        if non_temporal && matches!(strategy, Strategy::Transpose { .. }) && bands_apply(&dims, elem_bytes, kernel) {
            defaults.block_order = BlockOrder::Bands;
            // ... except short destination rows that lie apart (two 6-D reversals
            // of the HPTT suite) where the bands go through an L1 block: there
            // tiles walked along the destination with ordinary stores measured
            // faster, the caches gathering each row's lines
            // ((32,15,15,15,5,112)→(5,4,3,2,1,0), 1 thread: 0.27–0.41 → 0.48–0.52
            // × memcpy in four comparisons, `vlk tune` 1.79×; (32,15,15,15,15,32):
            // 0.36–0.45 → 0.44–0.50, tuner 1.12×). Bands from registers beat
            // both (0.51 → 0.64 for either case, 1 thread, alternating).
            if opts.non_temporal == NonTemporal::Auto
                && !super::bands::from_registers(kernel, elem_bytes)
                && super::bands::short_isolated_rows(&dims, elem_bytes)
            {
                non_temporal = false;
                defaults.non_temporal = false;
                defaults.block_order = BlockOrder::DstFastest;
            }
        }
        let plan = PermutePlan {
            shape: shape.to_vec(),
            perm: perm.to_vec(),
            elem_bytes,
            numel,
            src_len,
            dims,
            strategy,
            kernel,
            threads,
            non_temporal,
            tile: defaults.tile,
            tile_b: defaults.tile_b,
            group: defaults.group,
            block_order: defaults.block_order,
        };
        if opts.tuned {
            return super::tune::apply_cached(plan);
        }
        Ok(plan)
    }

    /// The plan's tunable parameters.
    pub fn tuning(&self) -> Tuning {
        Tuning {
            tile: self.tile,
            tile_b: self.tile_b,
            group: self.group,
            block_order: self.block_order,
            non_temporal: self.non_temporal,
            threads: self.threads,
        }
    }

    /// The same problem with other tunable parameters.
    pub fn with_tuning(&self, t: &Tuning) -> Result<Self> {
        if t.tile < 2 || t.threads == 0 {
            return Err(Error::invalid(format!(
                "tuning {t:?}: tile must be ≥ 2 and threads ≥ 1"
            )));
        }
        let tile_b = if t.tile_b == 0 { t.tile } else { t.tile_b };
        if tile_b < 2 {
            return Err(Error::invalid(format!("tuning {t:?}: tile_b must be ≥ 2")));
        }
        let mut p = self.clone();
        p.tile = t.tile;
        p.tile_b = tile_b;
        p.group = t.group;
        p.block_order = t.block_order;
        p.non_temporal = t.non_temporal;
        p.threads = t.threads;
        if p.numel > 0 {
            p.strategy = classify(&p.dims, t.tile, tile_b, t.group, p.elem_bytes);
        }
        Ok(p)
    }

    /// Number of elements in source (logical) and destination.
    pub fn numel(&self) -> usize {
        self.numel
    }

    /// Element size in bytes.
    pub fn elem_bytes(&self) -> usize {
        self.elem_bytes
    }

    /// Shape of the destination: `shape[perm[i]]`.
    pub fn out_shape(&self) -> Vec<usize> {
        self.perm.iter().map(|&p| self.shape[p]).collect()
    }

    /// The canonical axes (destination order) the executor walks.
    pub fn dims(&self) -> &[Dim] {
        &self.dims
    }

    /// The chosen strategy.
    pub fn strategy(&self) -> &Strategy {
        &self.strategy
    }

    /// The kernel family resolved from the options.
    pub fn kernel(&self) -> KernelFamily {
        self.kernel
    }

    /// Threads the executor will use.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Whether the executor uses non-temporal (streaming) stores where it can.
    pub fn non_temporal(&self) -> bool {
        self.non_temporal
    }

    /// Whether a transpose builds each tile in a staging buffer and then writes
    /// its destination rows out whole: with streaming stores, and with ordinary
    /// stores where destination rows alias in the caches ([`dst_rows_alias`]).
    pub fn staged_tiles(&self) -> bool {
        if self.banded().is_some() || self.strips().is_some() {
            return false;
        }
        match &self.strategy {
            Strategy::Transpose { src_group, .. } => {
                self.non_temporal || dst_rows_alias(&self.dims, src_group, self.elem_bytes)
            }
            _ => false,
        }
    }

    /// The line bands this plan runs as (see `bands.rs`), if it does: a
    /// streamed transpose with a banded order (`Bands`, `BandsAlong`,
    /// `BandsAcross`), a banded form and a kernel that fills lines. (A destination that starts part-way into an element
    /// of its line runs the staged tiles instead.)
    /// Returns the bands with the kernel that fills them.
    pub(crate) fn banded(&self) -> Option<(super::bands::Bands, kernels::TileKernel)> {
        let transpose = matches!(self.strategy, Strategy::Transpose { .. });
        if !(transpose && self.non_temporal && self.block_order.banded()) || self.strips().is_some() {
            return None;
        }
        let kernel = super::bands::band_kernel(self.kernel, self.elem_bytes)?;
        let bands = super::bands::plan_bands(&self.dims, self.elem_bytes, self.block_order)?;
        Some((bands, kernel))
    }

    /// The strips this transpose runs as (see `strips.rs`), if it does: a few
    /// channels interleaved on one side, with a small-extent kernel for them.
    pub(crate) fn strips(&self) -> Option<super::strips::Strips> {
        match &self.strategy {
            Strategy::Transpose {
                src_group, dst_group, ..
            } => super::strips::plan_strips(&self.dims, src_group, dst_group, self.kernel, self.elem_bytes),
            _ => None,
        }
    }

    /// One-line human description (used by the CLI and the tuner).
    pub fn describe(&self) -> String {
        let dims: Vec<String> = self
            .dims
            .iter()
            .map(|d| format!("{}(s{},d{})", d.extent, d.src_stride, d.dst_stride))
            .collect();
        format!(
            "{:?} kernel={} threads={} nt={} staged={} tile={}x{} group={} order={:?} dims=[{}]",
            self.strategy,
            self.kernel.name(),
            self.threads,
            self.non_temporal,
            self.staged_tiles(),
            self.tile,
            self.tile_b,
            self.group,
            self.block_order,
            dims.join(" ")
        ) + &self.banded().map_or(String::new(), |(b, k)| {
            // Straight from registers (the kernel's line band) or through an L1 block.
            let via = if k.band.is_some() { "registers" } else { "l1-block" };
            format!(" {} via={via}", b.describe())
        }) + &self.strips().map_or(String::new(), |s| format!(" {}", s.describe()))
    }
}

/// Destination-order axes without size-1 axes, with neighbours fused where
/// the outer one's source stride equals extent × stride of the inner one.
pub fn canonicalize(shape: &[usize], src_strides: &[usize], perm: &[usize]) -> Vec<Dim> {
    let rank = perm.len();
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let dst_strides = contiguous_strides(&out_shape);
    let mut dims: Vec<Dim> = Vec::with_capacity(rank);
    for i in 0..rank {
        let d = Dim {
            extent: shape[perm[i]],
            src_stride: src_strides[perm[i]],
            dst_stride: dst_strides[i],
        };
        if d.extent == 1 {
            continue;
        }
        dims.push(d);
    }
    // Fuse from the inside out: dims[i] merges into dims[i+1] when contiguous.
    let mut fused: Vec<Dim> = Vec::with_capacity(dims.len());
    for d in dims.into_iter().rev() {
        if let Some(inner) = fused.last_mut() {
            if d.src_stride == inner.extent * inner.src_stride && d.dst_stride == inner.extent * inner.dst_stride {
                inner.extent *= d.extent;
                continue;
            }
        }
        fused.push(d);
    }
    fused.reverse();
    fused
}

/// The untuned plan parameters (chosen from `vlk tune` and probe runs on the
/// HPTT and models suites, 1 thread, 2-core EPYC).
///
/// A tile is 1024 elements along the source's stride-1 group by 256 bytes
/// along the destination's: the source is read as a few long streams, eight
/// rows at a time, and each destination piece is four whole lines. With
/// streaming stores (outputs beyond the caches) the tile is staged (256 KiB,
/// L2) and the walk follows the source; without them it is written in place
/// and the walk follows the destination (`vlk tune` at small sizes picked
/// such long tiles for most HPTT cases; this default measured 0.39–0.41 →
/// 0.46 × memcpy on that suite at 16 MiB, 1 thread).
pub(crate) fn default_tuning(elem_bytes: usize, non_temporal: bool, threads: usize) -> Tuning {
    Tuning {
        tile: 1024,
        tile_b: (256 / elem_bytes).max(8),
        group: 4096,
        block_order: if non_temporal {
            BlockOrder::SrcFastest
        } else {
            BlockOrder::DstFastest
        },
        non_temporal,
        threads,
    }
}

/// Whether `dims` has a banded form whose square micro-kernel fills lines.
pub(crate) fn bands_apply(dims: &[Dim], elem_bytes: usize, kernel: KernelFamily) -> bool {
    super::bands::bands_preferred(dims, elem_bytes) && super::bands::band_kernel(kernel, elem_bytes).is_some()
}

/// Destination rows that start inside cache lines are streamed (with carried
/// partial lines) only when at least this long, so the lines shared at row
/// ends, written with ordinary stores, are a small part of each row.
const STREAM_MIN_UNALIGNED_ROW_BYTES: usize = 4096;

/// Destination rows of a transpose whose byte stride is a multiple of this
/// fall into few cache sets (1 KiB apart: every 16th L2 set), so a tile's
/// rows written in place evict each other's half-written lines.
const ALIAS_STRIDE_BYTES: usize = 1024;

/// Strides that are whole pages put every row in one L1 set and 16 L2 sets;
/// at the shorter multiples of [`ALIAS_STRIDE_BYTES`] staging paid only while the
/// problem sits in cache (at most this many bytes each way).
const ALIAS_PAGE_BYTES: usize = 4096;
const ALIAS_IN_CACHE_BYTES: usize = 8 << 20;

/// Fewer rows than the L1's ways never evict each other.
const ALIAS_MIN_ROWS: usize = 16;

/// The tile extent along the source group when [`dst_rows_alias`]: measured on
/// in-cache f32 transposes with 1–4 KiB destination strides (1 thread, 2-core
/// EPYC), 64- and 128-row staged tiles ran 1.2–2.3× faster than in-place
/// 1024-row tiles, and 1024-row staged tiles in between.
const ALIASED_TILE: usize = 128;

/// Whether consecutive destination rows of a transpose's tile (one per index of
/// the source group) evict each other from the caches when written in place:
/// their byte stride is a multiple of a page, or of [`ALIAS_STRIDE_BYTES`] on a
/// problem that stays in cache. Such tiles are built in a staging buffer and
/// copied out row by row, each destination line written whole once. Measured
/// (1 thread, same runs): 1024² f32 8.6 → 22.5 GiB/s, 512² f32 13–16 → 22,
/// 2048² f32 8.3 → 11.1, 8 × 2048 × 128 → (0,2,1) bf16 12 → 22; and, left in
/// place, 16 × 512² → (0,2,1) f32 (16 MiB, 2 KiB stride) ran at 14 staged 11.
pub(crate) fn dst_rows_alias(dims: &[Dim], src_group: &[usize], elem_bytes: usize) -> bool {
    let rows: usize = src_group.iter().map(|&g| dims[g].extent).product();
    let bytes = dims.iter().map(|d| d.extent).product::<usize>() * elem_bytes;
    let stride = dims[src_group[0]].dst_stride * elem_bytes;
    rows >= ALIAS_MIN_ROWS
        && stride % ALIAS_STRIDE_BYTES == 0
        && (stride % ALIAS_PAGE_BYTES == 0 || bytes <= ALIAS_IN_CACHE_BYTES)
}

/// Outputs from this size stream the staged tiles of [`grown_along_destination`]
/// transposes: with their source they fill the 32 MiB L3 of the machine measured.
const GROWN_STREAM_BYTES: usize = 16 << 20;

/// Shorter source groups are mostly tile edge (under two blocks of the 16-wide
/// u8 and bf16 kernels) and ran slower staged and streamed: (1913,422,13)→(2,0,1) bf16 7.0 →
/// 5.2 GiB/s, f32 (957,422,13) 9.5 → 8.1, against +5 to +65 % from 37 elements up.
const GROWN_MIN_SOURCE_ELEMS: usize = 32;

/// Destination pieces shorter than this are not worth staging a tile for.
const GROWN_MIN_PIECE_BYTES: usize = 256;

/// Whether a transpose's tiles were grown along the destination: a source group
/// of at least [`GROWN_MIN_SOURCE_ELEMS`] but under half of `side_a`, and
/// destination pieces of at least [`GROWN_MIN_PIECE_BYTES`].
fn grown_along_destination(strategy: &Strategy, side_a: usize, elem_bytes: usize) -> bool {
    match strategy {
        Strategy::Transpose { tile_a, tile_b, .. } => {
            *tile_a >= GROWN_MIN_SOURCE_ELEMS && tile_a * 2 < side_a && tile_b * elem_bytes >= GROWN_MIN_PIECE_BYTES
        }
        _ => false,
    }
}

/// A source group shorter than half a tile takes back the axis that continues its
/// chain from the destination group when the destination group keeps at least this
/// many bytes without it.
const HAND_BACK_MIN_DST_BYTES: usize = 512;

/// Elements per 64-byte cache line (at least one).
fn line_elems(elem_bytes: usize) -> usize {
    (64 / elem_bytes).max(1)
}

/// Whether every run of a `Runs` problem is whole cache lines starting on a line.
fn whole_line_runs(dims: &[Dim], elem_bytes: usize) -> bool {
    let line_bytes = line_elems(elem_bytes) * elem_bytes;
    let Some((run, outer)) = dims.split_last() else {
        return true;
    };
    (run.extent * elem_bytes) % line_bytes == 0 && outer.iter().all(|d| (d.dst_stride * elem_bytes) % line_bytes == 0)
}

/// Whether some destination row of a transpose (a fixed index of every axis
/// outside the destination group) may start inside a cache line.
fn unaligned_dst_rows(dims: &[Dim], dst_group: &[usize], line: usize) -> bool {
    dims.iter()
        .enumerate()
        .any(|(i, d)| !dst_group.contains(&i) && d.dst_stride % line != 0)
}

fn classify(dims: &[Dim], side_a: usize, side_b: usize, group: usize, elem_bytes: usize) -> Strategy {
    let Some(last) = dims.last() else {
        // Every axis had extent 1: one element.
        return Strategy::Copy;
    };
    let line = line_elems(elem_bytes);
    if last.src_stride == 1 {
        let bytes = dims.iter().map(|d| d.extent).product::<usize>() * elem_bytes;
        return if dims.len() == 1 {
            Strategy::Copy
        } else if let Some(split) = super::staged_runs::slab_split(dims, elem_bytes, bytes) {
            Strategy::StagedRuns { split }
        } else {
            Strategy::Runs
        };
    }
    let Some(k) = dims.iter().position(|d| d.src_stride == 1) else {
        return Strategy::Gather;
    };
    // Destination group: trailing axes (contiguous in dst), never axis k. It
    // only needs to cover a few tile sides: an axis it took beyond that may
    // be the one that continues the source's chain, which needs it more.
    let mut dst_group = Vec::new();
    let mut prod_b = 1usize;
    let dst_target = group.min(4 * side_b);
    for i in (0..dims.len()).rev() {
        if i == k || prod_b >= dst_target {
            break;
        }
        dst_group.push(i);
        prod_b *= dims[i].extent;
    }
    // Source group: axis k, then axes that continue the source-contiguous chain.
    let mut src_group = vec![k];
    let mut prod_a = dims[k].extent;
    loop {
        while prod_a < group {
            let next = dims
                .iter()
                .enumerate()
                .position(|(i, d)| d.src_stride == prod_a && !dst_group.contains(&i));
            match next {
                Some(i) if !src_group.contains(&i) => {
                    src_group.push(i);
                    prod_a *= dims[i].extent;
                }
                _ => break,
            }
        }
        // A short source group makes every tile read many short source pieces:
        // if the destination group holds the axis that continues the source
        // chain, hand it (and the destination axes outside it) over. Below a
        // cache line (every tile an edge) that pays as long as what the
        // destination group keeps is longer than the source group was (5 × 88 →
        // 135 rather than 5 → 135 × 88); below half a tile, when the destination
        // group keeps pieces of at least 512 bytes ((538,546,189)→(2,1,0) u8:
        // 189 × 538·546 → 189·546 × 538, 1 thread 5.4–5.7 → 9.2–9.5 GiB/s).
        if prod_a * 2 > side_a {
            break;
        }
        let Some(at) = dst_group.iter().position(|&i| dims[i].src_stride == prod_a) else {
            break;
        };
        let kept: usize = dst_group[..at].iter().map(|&i| dims[i].extent).product();
        let hand_back = if prod_a < line {
            kept > prod_a
        } else {
            kept * elem_bytes >= HAND_BACK_MIN_DST_BYTES
        };
        if !hand_back {
            break;
        }
        dst_group.truncate(at);
    }
    // Keep the tile area near side² when one group is short (3 channels,
    // say): the other side grows so each tile still moves a useful amount.
    // Grown sides are whole cache lines (`line` elements), so that pieces of
    // neighbouring tiles never share a destination line: a line written in
    // two visits costs a read-modify-write (streaming stores) or a second
    // read for ownership.
    let area = side_a * side_b;
    let lines = |n: usize| if n > line { n - n % line } else { n };
    let (tile_a, tile_b) = if prod_a < side_a {
        (prod_a, lines((area / prod_a).min(16 * side_b)))
    } else if prod_b < side_b {
        // Short destination rows (CHW→HWC): four sides' worth, not sixteen.
        // Measured on 3- and 4-channel u8, bf16 and f32 interleaves (1 and 2
        // threads, 0.6–63 MiB): 4096-element tiles ran 1.0–1.4× the speed of
        // 16384-element ones, e.g. (3,448,448)→(1,2,0) u8 21 → 27 GiB/s.
        (lines((area / prod_b).min(4 * side_a)), prod_b)
    } else {
        (side_a, side_b)
    };
    Strategy::Transpose {
        src_group,
        dst_group,
        tile_a,
        tile_b,
    }
}
