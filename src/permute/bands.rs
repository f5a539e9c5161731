//! Line bands: streamed transposes that write one whole cache line of every
//! destination row per pass, straight from the micro-kernel.
//!
//! A band is the `64 / es` source rows that fill one line of each destination
//! row. The band reads those rows front to back along the whole source group
//! (a few long streams, like a copy's). Where the family's square kernel has a
//! line band (`TileKernel::band`, generated for AVX2 at 2-, 4-, 8- and 16-byte
//! elements) it transposes each step in registers and streams every
//! destination line whole, its pieces back to back, in one call per chunk.
//! Otherwise the kernel transposes each step of `na` elements into a
//! one-line-wide scratch block in L1 and the block's `na` lines are streamed
//! out at once, each line completed by two back-to-back 32-byte streaming
//! stores: the same traffic, but measured 0.52 × memcpy against 0.67 for the
//! register path over the 35 banded HPTT cases (geomeans, 1 thread, the two
//! alternating in one process). Where the band's source rows lie at equal
//! steps the band takes its strided form (`TileKernel::band_strided`), which
//! loads no offset tables, a run of the source group's first axis per call
//! (destination rows at equal steps): 7264² f32 0.68–0.72 → 0.70–0.83 ×
//! memcpy (1 thread, old and new binaries alternating, four runs each).
//! Nothing is staged in L2 and no destination
//! line is written in two visits (half-lines streamed apart measured 4.6
//! GiB/s against 20 for whole lines, 7264² f32, 1 thread).
//!
//! Bands need destination rows whose starts all share one offset inside a
//! line (every axis outside the destination group a whole number of lines
//! apart); the first band then ends where the rows' second lines start.
//! The rows before that and a short last band are strips written in place.
//!
//! The bands are walked along (each band over the whole source group, in
//! 16 KiB chunks of its rows) or across (every band of a 2 KiB chunk before
//! the next chunk, so each destination row is finished within a short time);
//! [`walk_across`] picks, and `vlk tune` tries both.

use super::exec::{at_equal_steps, group_offsets, parallel, split_groups, tile, EdgeScratch, Odometer, Ptrs};
use super::kernels::{self, KernelFamily, TileKernel};
use super::plan::{BlockOrder, Dim};

/// Source bytes per row that one work item reads when the bands are walked
/// along: the band's streams run this long before the walk moves on.
const CHUNK_BYTES: usize = 16 << 10;

/// Source groups shorter than this many bytes stay with the tiled path: their
/// rows are mostly edges of the square kernel.
const MIN_SOURCE_ROW_BYTES: usize = 256;

/// The axes of a banded transpose (indices into `dims`, innermost first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bands {
    /// The source's stride-1 axis and the axes that continue its chain.
    pub src_group: Vec<usize>,
    /// The trailing destination axes outside the source group.
    pub dst_group: Vec<usize>,
    /// Elements of the source group one work item covers (a whole number of
    /// any square kernel's `na`).
    pub chunk: usize,
    /// Lines of each destination row one band writes (see [`lines_per_band`]).
    pub lines: usize,
    /// Whether each band prefetches the next band's source rows (the next
    /// item's, where one band and one chunk make an item).
    pub prefetch: bool,
    /// Whether the walk finishes every band of a chunk before the next chunk
    /// (see [`walk_across`]).
    pub across: bool,
}

impl Bands {
    /// One-line description for `PermutePlan::describe`.
    pub fn describe(&self) -> String {
        format!(
            "bands(src_group={:?} dst_group={:?} chunk={} lines={} prefetch={} across={})",
            self.src_group, self.dst_group, self.chunk, self.lines, self.prefetch, self.across
        )
    }
}

/// Elements per 64-byte line.
fn line(es: usize) -> usize {
    (64 / es).max(1)
}

/// The banded form of a transpose, if it has one: a source group of at least
/// [`MIN_SOURCE_ROW_BYTES`], a destination group of at least one line, and
/// destination rows a whole number of lines apart.
///
/// `walk` picks how the bands are walked: `BandsAlong`, `BandsAcross`, or
/// (any other order) the planner's choice, [`walk_across`].
pub(crate) fn plan_bands(dims: &[Dim], es: usize, walk: BlockOrder) -> Option<Bands> {
    let last = dims.len().checked_sub(1)?;
    if dims[last].src_stride == 1 {
        return None;
    }
    let k = dims.iter().position(|d| d.src_stride == 1)?;
    // The source group takes the whole chain: long rows are what bands read
    // well. The destination's stride-1 axis stays with the destination.
    let mut src_group = vec![k];
    let mut prod_a = dims[k].extent;
    while let Some(i) = dims
        .iter()
        .enumerate()
        .position(|(i, d)| d.src_stride == prod_a && i != last && !src_group.contains(&i))
    {
        src_group.push(i);
        prod_a *= dims[i].extent;
    }
    let dst_group: Vec<usize> = (0..dims.len()).rev().take_while(|i| !src_group.contains(i)).collect();
    let count_b: usize = dst_group.iter().map(|&g| dims[g].extent).product();
    let rows_whole_lines = (0..dims.len())
        .filter(|i| !dst_group.contains(i))
        .all(|i| (dims[i].dst_stride * es) % 64 == 0);
    if prod_a * es < MIN_SOURCE_ROW_BYTES || count_b < line(es) || !rows_whole_lines {
        return None;
    }
    let across = match walk {
        BlockOrder::BandsAlong => false,
        BlockOrder::BandsAcross => true,
        _ => walk_across(dims, &src_group, prod_a, count_b, es),
    };
    // A power of two of at least 128 elements: whole square kernels (na ≤ 16).
    let chunk = if across { ACROSS_CHUNK_BYTES } else { CHUNK_BYTES } / es;
    let step_a = es * dims[src_group[0]].dst_stride;
    let lines = lines_per_band(step_a, prod_a.min(chunk), count_b, es);
    let prefetch = prod_a * es <= PREFETCH_MAX_ROW_BYTES && lines <= PREFETCH_MAX_LINES;
    Some(Bands {
        src_group,
        dst_group,
        chunk,
        lines,
        prefetch,
        across,
    })
}

/// Whether the bands are walked across (every band of a short chunk before
/// the next chunk, so that each destination row is written whole within a
/// short time) rather than along (each band over the whole source group).
/// Across pays where consecutive source elements land in destination rows
/// that are not neighbours, the rows are long enough to gain (at least 1536
/// bytes, or at least 384 bytes when no two rows that one chunk walked along
/// writes are neighbours) and the source rows are longer than one chunk
/// walked along (shorter ones are read whole, front to back, along). Measured
/// (f32, 1 thread, HPTT suite, medians of three alternating runs):
/// (384,59,2320)→(2,1,0) 0.39 → 0.61 × memcpy, (96,75,75,96)→(3,2,1,0) 0.41 →
/// 0.60, (608,75,12,96)→(3,2,1,0) 0.46 → 0.65, (112,15,15,15,5,32)→
/// (5,4,3,2,1,0) 0.36 → 0.62. Losses that the conditions exclude: source rows
/// of 4.5 KiB ((75,608,12,96)→(3,0,2,1) 0.63 → 0.47), destination rows of 128
/// bytes (6-D reversal with 112-element source rows 0.46 → 0.35, medians of
/// 3 runs alternating in one process), rows that the source's stride-1 axis
/// walks in order (43408 × 1216 f32 0.65 → 0.46, likewise).
fn walk_across(dims: &[Dim], src_group: &[usize], count_a: usize, count_b: usize, es: usize) -> bool {
    let row_bytes = count_b * es;
    if dims[src_group[0]].dst_stride == count_b || row_bytes < ACROSS_MIN_ROW_BYTES || count_a * es <= CHUNK_BYTES {
        return false;
    }
    row_bytes >= ACROSS_LONG_ROW_BYTES || isolated_rows(dims, src_group, count_b, CHUNK_BYTES / es)
}

/// Whether a transpose with a banded form has destination rows shorter than
/// [`ACROSS_MIN_ROW_BYTES`] no two of which one chunk walked along writes
/// next to each other: neither walk serves those (the planner gives them
/// ordinary stores instead, see `PermutePlan::new`).
pub(crate) fn short_isolated_rows(dims: &[Dim], es: usize) -> bool {
    plan_bands(dims, es, BlockOrder::BandsAlong).is_some_and(|b| {
        let count_b: usize = b.dst_group.iter().map(|&g| dims[g].extent).product();
        count_b * es < ACROSS_MIN_ROW_BYTES && isolated_rows(dims, &b.src_group, count_b, CHUNK_BYTES / es)
    })
}

/// See [`walk_across`].
const ACROSS_MIN_ROW_BYTES: usize = 384;
const ACROSS_LONG_ROW_BYTES: usize = 1536;

/// Source bytes per row that one chunk walked across covers.
const ACROSS_CHUNK_BYTES: usize = 2048;

/// Whether no two destination rows that one chunk of `chunk` source elements
/// writes are neighbours in the destination: the axis that steps from one row
/// to the next is not in the source group, or lies beyond the chunk.
fn isolated_rows(dims: &[Dim], src_group: &[usize], count_b: usize, chunk: usize) -> bool {
    let mut span = 1;
    for &i in src_group {
        if span >= chunk {
            break;
        }
        if dims[i].dst_stride == count_b {
            return false;
        }
        span *= dims[i].extent;
    }
    true
}

/// Whether a default plan should take the banded form: it has one, and its
/// destination rows are not a whole number of pages apart. At such strides
/// the staged tiles measured faster (8192² bf16 0.75 × memcpy staged against
/// 0.57–0.68 banded, f32 0.50 against 0.30–0.39; 1 thread, alternating).
pub(crate) fn bands_preferred(dims: &[Dim], es: usize) -> bool {
    plan_bands(dims, es, BlockOrder::Bands).is_some_and(|b| (dims[b.src_group[0]].dst_stride * es) % PAGE_STRIDE != 0)
}

/// See [`bands_preferred`].
const PAGE_STRIDE: usize = 4096;

/// Lines of each destination row that one band writes. Short destination
/// groups (at most [`WHOLE_ROW_BYTES`]) go whole: each step of the kernel
/// then streams its rows from start to end, where one line per row wrote
/// small blocks in a stride (5625 blocks of 96 × 96 f32: 0.34 × memcpy).
/// Rows a multiple of 512 bytes apart take 512 bytes of each row (at most 128
/// source rows): one line per row at such strides measured 6.3–6.9 GB/s of
/// streamed writes against 18–19 at strides of 1472–1600 and 4160 bytes (f32
/// bands, 1 thread, 2-core EPYC), and 8 lines per row took the 1536-byte case
/// from 0.35–0.42 to 0.60–0.74 × memcpy. Other rows take one line.
fn lines_per_band(dst_row_step: usize, count_a: usize, count_b: usize, es: usize) -> usize {
    let row_lines = count_b / line(es);
    if count_b * es <= WHOLE_ROW_BYTES && count_a * count_b * es <= WHOLE_BLOCK_BYTES {
        return row_lines.max(1);
    }
    if dst_row_step % 512 != 0 {
        return 1;
    }
    (512 / 64).min(128 / line(es)).max(1)
}

/// Destination groups up to this many bytes are written whole by each band.
const WHOLE_ROW_BYTES: usize = 1024;

/// ... and only where the band's whole source block is at most this many bytes.
const WHOLE_BLOCK_BYTES: usize = 64 << 10;

/// Source rows up to this long are prefetched a band ahead.
const PREFETCH_MAX_ROW_BYTES: usize = 4096;

/// ... where the band writes at most this many lines of each destination row.
/// Taller bands (96–128 source rows) would prefetch a line of each of their
/// rows per line of columns, a burst of 96–128 lines, and ran slower with it:
/// (355,384,384)→(0,2,1) 0.64–0.67 × memcpy against 0.74–0.77 without (f32,
/// 1 thread, old and new binaries alternating, three runs each).
const PREFETCH_MAX_LINES: usize = 4;

/// Asks for the line at `p` (a hint; never faults).
#[inline(always)]
fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint that never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The family's square micro-kernel for `es`-byte elements, if it fills a
/// line of a destination row in whole calls.
pub(crate) fn band_kernel(family: KernelFamily, es: usize) -> Option<TileKernel> {
    kernels::tile_kernel(family, es, usize::MAX, usize::MAX)
        .filter(|k| !k.src_contiguous && !k.dst_contiguous && line(es) % k.nb == 0)
}

/// Whether the family's bands for `es`-byte elements go straight from
/// registers (the square kernel has a line band) rather than through an L1 block.
pub(crate) fn from_registers(family: KernelFamily, es: usize) -> bool {
    band_kernel(family, es).is_some_and(|k| k.band.is_some())
}

/// Runs a banded transpose. Returns `false` (having done nothing) where the
/// destination's own offset inside a line is not a whole number of elements.
///
/// # Safety
/// As [`super::exec::run`]: `p.src()` readable for `src_bytes`, `p.dst()`
/// writable for the whole output, no overlap; `kernel` from [`band_kernel`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn transpose_bands(
    dims: &[Dim],
    bands: &Bands,
    es: usize,
    kernel: TileKernel,
    p: Ptrs,
    src_bytes: usize,
    threads: usize,
) -> bool {
    let line = line(es);
    let lead = p.dst() as usize % 64;
    if lead % es != 0 {
        return false;
    }
    let (src_group, dst_group) = (&bands.src_group, &bands.dst_group);
    let (outer, count_a, count_b) = split_groups(dims, src_group, dst_group);
    let (chunk, lines) = (bands.chunk, bands.lines);
    let height = lines * line;
    // Bands along b: a head strip up to the rows' second lines, bands of
    // `height` rows, a band of the whole lines left, then a tail strip.
    let head = ((64 - lead) % 64 / es).min(count_b);
    let full = (count_b - head) / height;
    let rest_lines = (count_b - head - full * height) / line * line;
    let tail = count_b - head - full * height - rest_lines;
    let mut band_list: Vec<(usize, usize)> = Vec::new();
    if head > 0 {
        band_list.push((0, head));
    }
    band_list.extend((0..full).map(|j| (head + j * height, height)));
    for n in [rest_lines, tail] {
        if n > 0 {
            let b0 = band_list.last().map_or(0, |&(b, w)| b + w);
            band_list.push((b0, n));
        }
    }
    let n_bands = band_list.len();
    let n_chunks = count_a.div_ceil(chunk);
    let outer_count: usize = outer.iter().map(|d| d.extent).product();
    let (linear_a, linear_b) = (src_group.len() == 1, dst_group.len() == 1);
    let step_a = es * dims[src_group[0]].dst_stride;
    let step_b = es * dims[dst_group[0]].src_stride;
    // The strided band takes the destination rows a run of the source group's
    // first axis at a time: runs a whole number of kernel steps long (or one
    // axis, one run per chunk). Over the 37 banded HPTT cases (f32, 1 thread, alternating in one process)
    // a call per run measured a geomean of 0.705–0.709 × memcpy against
    // 0.686–0.699 for the tables; runs of 32 elements gained as well.
    let run = if linear_a { count_a } else { dims[src_group[0]].extent };
    let strided_runs = linear_a || run % kernel.na == 0;
    parallel(outer_count * n_bands * n_chunks, threads, |range| {
        let mut od = Odometer::new(&outer, es);
        let mut edges = EdgeScratch::new(Some(kernel), es, p.src() as usize + src_bytes);
        let mut scratch = vec![0u8; kernel.na * 64 * lines + 64];
        let scr = scratch.as_mut_ptr().wrapping_add(scratch.as_ptr().align_offset(64));
        let scr_rows: Vec<usize> = (0..kernel.na).map(|i| i * 64 * lines).collect();
        let (mut src_rows, mut dst_rows) = (Vec::with_capacity(height), Vec::with_capacity(chunk));
        let mut next_rows = Vec::with_capacity(height);
        // Whether the band's source rows lie at equal steps, so the strided
        // band can take them without tables.
        let mut src_even = false;
        // A one-axis source group shares one table of destination rows, shifted
        // by the chunk's start; others build the chunk's table when it changes.
        if linear_a {
            group_offsets(dims, src_group, es, 0, chunk.min(count_a), false, &mut dst_rows);
        }
        let (mut cached_chunk, mut cached_band, mut cached_outer) = (usize::MAX, usize::MAX, usize::MAX);
        let next_item_rows = bands.prefetch && n_bands == 1 && n_chunks == 1;
        let (mut od_next, mut cached_next) = (Odometer::new(&outer, es), usize::MAX);
        for item in range {
            let (o, j, c) = if bands.across {
                (item / (n_bands * n_chunks), item % n_bands, item / n_bands % n_chunks)
            } else {
                (item / (n_bands * n_chunks), item / n_chunks % n_bands, item % n_chunks)
            };
            od.go(o, &mut cached_outer);
            let (b0, nb) = band_list[j];
            let (a0, na) = (c * chunk, chunk.min(count_a - c * chunk));
            if !linear_a && c != cached_chunk {
                group_offsets(dims, src_group, es, a0, na, false, &mut dst_rows);
                cached_chunk = c;
            }
            if j != cached_band {
                group_offsets(dims, dst_group, es, b0, nb, true, &mut src_rows);
                src_even = at_equal_steps(&src_rows, step_b);
                // Without prefetching the table stays empty.
                if bands.prefetch {
                    let next = (b0 + nb).min(count_b);
                    group_offsets(
                        dims,
                        dst_group,
                        es,
                        next,
                        height.min(count_b - next),
                        true,
                        &mut next_rows,
                    );
                }
                cached_band = j;
            }
            // With one band and one chunk per item, the next band to read is the
            // next item's: prefetch its rows, as far (maybe backwards) from this
            // item's as their outer offsets ((15,15,15,32,15,32)→(2,0,4,1,5,3),
            // 1 thread: 0.50–0.54 → 0.60–0.63 × memcpy, alternating in one process).
            if next_item_rows {
                next_rows.clear();
                if o + 1 < outer_count {
                    od_next.go(o + 1, &mut cached_next);
                    let delta = od_next.src.wrapping_sub(od.src);
                    next_rows.extend(src_rows.iter().map(|&r| r.wrapping_add(delta)));
                }
            }
            let src = p.src().add(od.src + a0 * es);
            let dst = p.dst().add(od.dst + b0 * es + if linear_a { a0 * step_a } else { 0 });
            let rows = &dst_rows[..na];
            if nb < line {
                // A strip: fewer rows than a line, written in place.
                tile_strip(src, &src_rows, dst, rows, es, kernel, &mut edges);
                continue;
            }
            let whole = na - na % kernel.na;
            if let Some(band) = kernel.band {
                // Straight from registers to whole lines; with prefetching,
                // one line of source columns per call between the prefetches.
                let per_call = if next_rows.is_empty() {
                    whole
                } else {
                    line.max(kernel.na)
                };
                for a in (0..whole).step_by(per_call) {
                    for &r in &next_rows {
                        prefetch_line(src.wrapping_add(r.wrapping_add(a * es)));
                    }
                    let steps = per_call.min(whole - a) / kernel.na;
                    match kernel.band_strided.filter(|_| src_even && strided_runs) {
                        Some(f) => {
                            // One call per run of the source group's first axis,
                            // whose destination rows are `step_a` apart.
                            let (mut lo, hi) = (a, a + steps * kernel.na);
                            while lo < hi {
                                let end = hi.min(lo + run - (a0 + lo) % run);
                                f(
                                    src.add(lo * es + src_rows[0]),
                                    step_b,
                                    dst.add(rows[lo]),
                                    step_a,
                                    (end - lo) / kernel.na,
                                    nb / line,
                                );
                                lo = end;
                            }
                        }
                        None => band(
                            src.add(a * es),
                            src_rows.as_ptr(),
                            dst,
                            rows[a..].as_ptr(),
                            steps,
                            nb / line,
                        ),
                    }
                }
            } else {
                // Through the L1 block. Source rows at one step: the strided
                // kernel from the band's first row.
                let strided = kernel.strided.filter(|_| linear_b).map(|f| (f, src.add(src_rows[0])));
                for a in (0..whole).step_by(kernel.na) {
                    if (a * es) % 64 == 0 {
                        for &r in &next_rows {
                            prefetch_line(src.wrapping_add(r.wrapping_add(a * es)));
                        }
                    }
                    for sub in (0..nb).step_by(kernel.nb) {
                        let out = scr.add(sub * es);
                        match strided {
                            Some((f, s)) => f(s.add(sub * step_b + a * es), step_b, out, 64 * lines),
                            None => (kernel.func)(src.add(a * es), src_rows.as_ptr().add(sub), out, scr_rows.as_ptr()),
                        }
                    }
                    super::copy::stream_lines_to(scr, 64 * lines, nb / line, dst, &rows[a..a + kernel.na]);
                }
            }
            if whole < na {
                tile_strip(
                    src.add(whole * es),
                    &src_rows,
                    dst,
                    &rows[whole..],
                    es,
                    kernel,
                    &mut edges,
                );
            }
        }
        super::copy::stream_fence();
    });
    true
}

/// A strip of the transpose (a band with fewer rows than a line, or the last
/// columns of a band) written in place with ordinary stores. Source rows at
/// `src + src_rows[b]`, destination rows at `dst + dst_rows[a]`.
unsafe fn tile_strip(
    src: *const u8,
    src_rows: &[usize],
    dst: *mut u8,
    dst_rows: &[usize],
    es: usize,
    kernel: TileKernel,
    edges: &mut EdgeScratch,
) {
    // `tile`'s element type serves only families without kernels; this one has one.
    tile::<u8>(src, src_rows, dst, dst_rows, es, Some(kernel), None, true, edges);
}
