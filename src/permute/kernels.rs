//! Kernel families and the micro-kernels the executor calls for transpose
//! tiles. The portable kernels live here; ISA kernels come from simd/.

use super::simd::{self, GenKernel};
use crate::{Error, Result};

/// A family of micro-kernels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum KernelFamily {
    /// Best available on this CPU.
    #[default]
    Auto,
    /// Element-by-element index walking (the naive baseline; no blocking).
    Scalar,
    /// Blocked loops in portable Rust (no intrinsics).
    Portable,
    Avx2,
    Avx512,
    Neon,
}

impl KernelFamily {
    pub fn name(self) -> &'static str {
        match self {
            KernelFamily::Auto => "auto",
            KernelFamily::Scalar => "scalar",
            KernelFamily::Portable => "portable",
            KernelFamily::Avx2 => "avx2",
            KernelFamily::Avx512 => "avx512",
            KernelFamily::Neon => "neon",
        }
    }

    pub const ALL: [KernelFamily; 6] = [
        KernelFamily::Auto,
        KernelFamily::Scalar,
        KernelFamily::Portable,
        KernelFamily::Avx2,
        KernelFamily::Avx512,
        KernelFamily::Neon,
    ];
}

impl std::str::FromStr for KernelFamily {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        KernelFamily::ALL
            .iter()
            .copied()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "kernel family '{s}' (expected auto, scalar, portable, avx2, avx512, neon)"
                ))
            })
    }
}

/// Whether this CPU can run `family` (detected once by std and cached).
pub fn available(family: KernelFamily) -> bool {
    match family {
        KernelFamily::Auto | KernelFamily::Scalar | KernelFamily::Portable => true,
        KernelFamily::Avx2 => crate::cpu_features().avx2,
        KernelFamily::Avx512 => crate::cpu_features().avx512,
        KernelFamily::Neon => crate::cpu_features().neon,
    }
}

/// Resolves `Auto` to the best family with kernels here; rejects families this CPU lacks.
pub fn resolve(family: KernelFamily) -> Result<KernelFamily> {
    match family {
        KernelFamily::Auto => Ok(best_available()),
        f if available(f) => Ok(f),
        f => Err(Error::Unavailable(format!(
            "kernel family '{}' is not supported by this CPU",
            f.name()
        ))),
    }
}

/// AVX-512 > AVX2 > NEON > Portable, among the families this CPU runs.
fn best_available() -> KernelFamily {
    [KernelFamily::Avx512, KernelFamily::Avx2, KernelFamily::Neon]
        .into_iter()
        .find(|&f| available(f))
        .unwrap_or(KernelFamily::Portable)
}

/// The generated kernel tables a family may use, best first (an AVX-512 CPU
/// also runs the AVX2 kernels, which cover widths the AVX-512 model lacks).
pub fn generated_tables(family: KernelFamily) -> Vec<&'static [GenKernel]> {
    match family {
        KernelFamily::Avx512 => vec![simd::avx512(), simd::avx2()],
        KernelFamily::Avx2 => vec![simd::avx2()],
        KernelFamily::Neon => vec![simd::neon()],
        _ => Vec::new(),
    }
}

/// Picks a generated kernel: a small-extent kernel when one side of the tile
/// is exactly its extent (e.g. 3 channels) and too short for the square
/// block, else the square block of the element size.
fn generated_tile(family: KernelFamily, elem_bytes: usize, count_a: usize, count_b: usize) -> Option<TileKernel> {
    let tables = generated_tables(family);
    let of_size = || {
        tables
            .iter()
            .flat_map(|t| t.iter())
            .filter(|k| k.elem_bytes == elem_bytes)
    };
    let square = of_size().find(|k| !k.src_contiguous && !k.dst_contiguous);
    let short_a = square.is_none_or(|s| count_a < s.na);
    let short_b = square.is_none_or(|s| count_b < s.nb);
    let small = of_size().find(|k| {
        (short_a && k.src_contiguous && k.na == count_a && k.nb <= count_b)
            || (short_b && k.dst_contiguous && k.nb == count_b && k.na <= count_a)
    });
    small.or(square).map(|k| TileKernel {
        na: k.na,
        nb: k.nb,
        func: k.func,
        trusted: k.trusted,
        strided: k.strided,
        band: k.band,
        band_strided: k.band_strided,
        src_contiguous: k.src_contiguous,
        dst_contiguous: k.dst_contiguous,
    })
}

/// A transpose micro-kernel for a block of `nb` source rows × `na` elements.
/// Source row `j` starts at `src + src_rows[j]` bytes and holds `na`
/// contiguous elements; destination row `i` starts at `dst + dst_rows[i]`
/// and receives `nb` contiguous elements: `dst_row_i[j] = src_row_j[i]`.
pub type TileFn = unsafe fn(src: *const u8, src_rows: *const usize, dst: *mut u8, dst_rows: *const usize);

/// A micro-kernel with its block shape.
/// A block kernel with source row `j` at `src + j * src_stride` and destination
/// row `i` at `dst + i * dst_stride` (bytes): no offset tables to load.
pub type StridedTileFn = unsafe fn(src: *const u8, src_stride: usize, dst: *mut u8, dst_stride: usize);

/// A line band of the square kernel (see `bands`): the blocks that fill one
/// 64-byte line of each destination row, stacked, over `steps` steps of `na`
/// elements and `lines` lines per row, streamed straight to the destination.
/// Source row `j` of line `l` at `src + src_rows[l * (64 / es) + j]`, step `t`
/// from element `t * na`; destination row `i` of step `t` at
/// `dst + dst_rows[t * na + i]` (64-byte aligned), line `l` 64 bytes further each.
pub type BandFn =
    unsafe fn(src: *const u8, src_rows: *const usize, dst: *mut u8, dst_rows: *const usize, steps: usize, lines: usize);

/// [`BandFn`] for rows at equal steps: source row `r` (of `64 / es * lines`)
/// at `src + r * src_step`, destination row `r` (of `steps * na`) at
/// `dst + r * dst_step`. No offset tables to load.
pub type BandStridedFn =
    unsafe fn(src: *const u8, src_step: usize, dst: *mut u8, dst_step: usize, steps: usize, lines: usize);

#[derive(Clone, Copy)]
pub struct TileKernel {
    /// Elements per source row (= destination rows).
    pub na: usize,
    /// Source rows (= elements per destination row).
    pub nb: usize,
    pub func: TileFn,
    /// `func` without its per-call check that the rows it expects back to back
    /// are (source rows `na` elements apart, destination rows `nb` apart).
    pub trusted: Option<TileFn>,
    /// `func` with rows at equal steps (kernels with rows anywhere on both sides).
    pub strided: Option<StridedTileFn>,
    /// The kernel's line band (x86 square kernels whose destination rows are one register).
    pub band: Option<BandFn>,
    /// The same band with rows at equal steps (present where `band` is).
    pub band_strided: Option<BandStridedFn>,
    /// The kernel expects source rows back to back.
    pub src_contiguous: bool,
    /// The kernel expects destination rows back to back.
    pub dst_contiguous: bool,
}

impl TileKernel {
    /// The function to call when the source rows are known to be `src_step`
    /// bytes apart (if a single arithmetic sequence) and the destination rows
    /// `dst_step` apart: the unchecked network where those steps are the ones
    /// it expects, else the checked one.
    pub fn func_for(&self, es: usize, src_step: Option<usize>, dst_step: Option<usize>) -> TileFn {
        let src_ok = !self.src_contiguous || src_step == Some(self.na * es);
        let dst_ok = !self.dst_contiguous || dst_step == Some(self.nb * es);
        match self.trusted {
            Some(f) if src_ok && dst_ok => f,
            _ => self.func,
        }
    }
}

/// The micro-kernel for `family` and element size, if the family has one.
/// `count_a` and `count_b` are the tile's extents (elements per source row,
/// source rows), so a family may pick a block shape that fits small extents.
pub fn tile_kernel(family: KernelFamily, elem_bytes: usize, count_a: usize, count_b: usize) -> Option<TileKernel> {
    match family {
        KernelFamily::Scalar | KernelFamily::Auto => None,
        KernelFamily::Portable => portable_tile(elem_bytes),
        // ISA kernels only where the CPU runs them; widths without one use the portable tile.
        f if available(f) => generated_tile(f, elem_bytes, count_a, count_b).or_else(|| portable_tile(elem_bytes)),
        _ => None,
    }
}

fn portable_tile(elem_bytes: usize) -> Option<TileKernel> {
    let func: TileFn = match elem_bytes {
        1 => transpose_8x8_portable::<u8>,
        2 => transpose_8x8_portable::<u16>,
        4 => transpose_8x8_portable::<u32>,
        8 => transpose_8x8_portable::<u64>,
        16 => transpose_8x8_portable::<u128>,
        _ => return None,
    };
    Some(TileKernel {
        na: 8,
        nb: 8,
        func,
        trusted: None,
        strided: None,
        band: None,
        band_strided: None,
        src_contiguous: false,
        dst_contiguous: false,
    })
}

/// Portable 8×8 tile: load eight source rows, store eight destination rows.
///
/// # Safety
/// Every row named by the offset tables must be valid for 8 elements of `E`.
unsafe fn transpose_8x8_portable<E: Copy>(
    src: *const u8,
    src_rows: *const usize,
    dst: *mut u8,
    dst_rows: *const usize,
) {
    let rows: [[E; 8]; 8] = std::array::from_fn(|j| (src.add(*src_rows.add(j)) as *const [E; 8]).read_unaligned());
    for i in 0..8usize {
        let out: [E; 8] = rows.map(|row| row[i]);
        (dst.add(*dst_rows.add(i)) as *mut [E; 8]).write_unaligned(out);
    }
}
