//! Transposes with a few channels on one side (HWC↔CHW, pairs, quads): the
//! generated small-extent kernels run straight along the pixels, strip by
//! strip, with no tiles, staging or offset tables to rebuild. Each kernel
//! call moves one register block (e.g. 32 pixels × 3 channels of u8); the
//! tiled driver spent as long around such a call as in it (HWC→CHW u8 at
//! 0.65–0.79 × memcpy, where a plain loop of the same kernel runs at 1.0–1.2).

use super::exec::{parallel, split_groups, Odometer, Ptrs};
use super::kernels::{self, KernelFamily, TileFn};
use super::plan::Dim;

/// Channels of at most this many elements take strips (the generated
/// small-extent kernels: `SMALL_EXTENTS` of the code generator).
const MAX_CHANNELS: usize = 4;

/// Kernel blocks per work item (the unit threads share).
const BLOCKS_PER_ITEM: usize = 256;

/// A transpose of interleaved channels against planes.
#[derive(Clone, Debug)]
pub(crate) struct Strips {
    /// Axes outside the transpose.
    outer: Vec<Dim>,
    channels: usize,
    pixels: usize,
    /// Bytes between channel planes on the planar side.
    plane: usize,
    /// Interleaved source into planes (HWC→CHW), else planes into interleaved.
    split: bool,
    func: TileFn,
    /// Pixels per kernel call.
    block: usize,
}

impl Strips {
    pub(crate) fn describe(&self) -> String {
        format!(
            "strips(channels={} {} block={})",
            self.channels,
            if self.split { "split" } else { "merge" },
            self.block
        )
    }
}

/// The strips of a transpose, when its groups are one axis each, one of
/// them 2–4 channels whose pixels lie back to back on the interleaved side,
/// and `family` has a kernel with that many channels on one side (the
/// small-extent kernels, or the square block where it is that narrow).
pub(crate) fn plan_strips(
    dims: &[Dim],
    src_group: &[usize],
    dst_group: &[usize],
    family: KernelFamily,
    es: usize,
) -> Option<Strips> {
    let (&[a], &[b]) = (src_group, dst_group) else {
        return None;
    };
    let (da, db) = (dims[a], dims[b]);
    let (count_a, count_b) = (da.extent, db.extent);
    // Interleaved source: the source rows are pixels of `count_a` channels.
    let split_shape = count_a <= MAX_CHANNELS && db.src_stride == count_a;
    // Interleaved destination: the destination rows are pixels of `count_b` channels.
    let merge_shape = count_b <= MAX_CHANNELS && da.dst_stride == count_b;
    // Checked before the kernel lookup: most plans end here (planning and every
    // execution ask).
    if da.src_stride != 1 || db.dst_stride != 1 || !(split_shape || merge_shape) {
        return None;
    }
    let kernel = kernels::tile_kernel(family, es, count_a, count_b)?;
    // The kernel's rows are pixels (back to back, or anywhere) by planes (anywhere).
    let split = split_shape && kernel.na == count_a && !kernel.dst_contiguous;
    let merge = merge_shape && kernel.nb == count_b && !kernel.src_contiguous;
    let (channels, pixels, plane, block) = if split {
        (count_a, count_b, da.dst_stride * es, kernel.nb)
    } else if merge {
        (count_b, count_a, db.src_stride * es, kernel.na)
    } else {
        return None;
    };
    Some(Strips {
        outer: split_groups(dims, src_group, dst_group).0,
        channels,
        pixels,
        plane,
        split,
        func: kernel.trusted.unwrap_or(kernel.func),
        block,
    })
}

/// Runs the strips: each work item is a stretch of pixels under one outer index.
///
/// # Safety
/// As [`super::exec::run`]: the plan's source and destination are valid and
/// do not overlap.
pub(crate) unsafe fn run_strips(s: &Strips, es: usize, p: Ptrs, threads: usize) {
    let pixel = s.channels * es;
    // Kernel row tables: channel planes on one side, the block's pixels on the other.
    let planes: Vec<usize> = (0..s.channels).map(|c| c * s.plane).collect();
    let block_pixels: Vec<usize> = (0..s.block).map(|i| i * pixel).collect();
    let (src_rows, dst_rows) = if s.split {
        (&block_pixels, &planes)
    } else {
        (&planes, &block_pixels)
    };
    // Bytes per pixel on the source and destination sides.
    let (src_px, dst_px) = if s.split { (pixel, es) } else { (es, pixel) };
    let per_item = s.block * BLOCKS_PER_ITEM;
    let chunks = s.pixels.div_ceil(per_item).max(1);
    let outer_count: usize = s.outer.iter().map(|d| d.extent).product();
    parallel(outer_count * chunks, threads, |range| {
        let mut od = Odometer::new(&s.outer, es);
        let mut at = usize::MAX;
        for item in range {
            od.go(item / chunks, &mut at);
            let first = (item % chunks) * per_item;
            let end = (first + per_item).min(s.pixels);
            let (src, dst) = (p.src().add(od.src), p.dst().add(od.dst));
            let mut i = first;
            while i + s.block <= end {
                (s.func)(
                    src.add(i * src_px),
                    src_rows.as_ptr(),
                    dst.add(i * dst_px),
                    dst_rows.as_ptr(),
                );
                i += s.block;
            }
            // The last pixels, element by element.
            for i in i..end {
                for c in 0..s.channels {
                    let (from, to) = if s.split {
                        (i * src_px + c * es, i * dst_px + c * s.plane)
                    } else {
                        (i * src_px + c * s.plane, i * dst_px + c * es)
                    };
                    std::ptr::copy_nonoverlapping(src.add(from), dst.add(to), es);
                }
            }
        }
    });
}
