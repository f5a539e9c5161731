//! The 96 × 96 f32 block rows of `vlk bench memory`: the easiest transpose
//! there is, a batch of blocks of 36 KiB that are contiguous on both sides
//! (as in (75,75,96,96)→(1,0,3,2)), walked four ways by one core. Copying
//! the blocks front to back moves the same bytes as the transpose; moving
//! the same whole lines in a transpose's order, with no shuffles, shows what
//! the order alone costs (it prefetches the next block, a line at a time,
//! while it works on the current one); transposing in registers (the
//! generated f32 line band, one call per block) adds the shuffles; and the
//! band's own order without its shuffles (32-byte halves of 16 source rows
//! per step, as 16 AVX2 registers allow) separates the shuffles' cost from
//! the order's.

/// Elements per block side.
pub const SIDE: usize = 96;
/// Bytes per f32 block.
pub const BLOCK_BYTES: usize = SIDE * SIDE * 4;

/// How a walk moves each block of the source into the same block of the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockWalk {
    /// Each block copied by the library's streamed copy (`stream_copy`): the
    /// same traffic as the transpose, front to back.
    Copy,
    /// Whole lines in a transpose's order, no shuffles: source line `(c, l)`
    /// (row `c`, elements `16 l ..`) goes to destination line `(16 l + c % 16, c / 16)`.
    Lines,
    /// A transpose by the generated f32 line band (`band_strided`), 8 × 8 blocks
    /// in registers, each destination line streamed whole; one call per block.
    Registers,
    /// The band's loads and stores without its shuffles: each step loads the
    /// same 32-byte half of 16 source rows and streams 8 whole destination lines
    /// of them; the other half of each source line comes a step later.
    /// Destination line `(8 t + j, l)` holds the halves `t` of source rows
    /// `16 l + j` and `16 l + 8 + j`.
    HalfLines,
}

impl BlockWalk {
    pub fn name(self) -> &'static str {
        match self {
            BlockWalk::Copy => "96×96 f32 blocks: copied front to back (streamed)",
            BlockWalk::Lines => "96×96 f32 blocks: a transpose's lines, no shuffles",
            BlockWalk::Registers => "96×96 f32 blocks: transposed in registers (streamed)",
            BlockWalk::HalfLines => "96×96 f32 blocks: the band's half lines, no shuffles",
        }
    }
}

/// Whether this CPU runs the walks (AVX2 streaming stores and the generated f32 band).
pub fn available() -> bool {
    cfg!(target_arch = "x86_64") && vlkernels::cpu_features().avx2 && f32_band().is_some()
}

/// The generated AVX2 line band for f32 with rows at equal steps.
fn f32_band() -> Option<vlkernels::permute::kernels::BandStridedFn> {
    vlkernels::permute::simd::avx2()
        .iter()
        .find(|k| k.elem_bytes == 4 && !k.src_contiguous && !k.dst_contiguous)
        .and_then(|k| k.band_strided)
}

/// Walks every whole block of `src` into the same block of `dst`. Returns
/// `false` (having done nothing) where the CPU lacks AVX2 or `dst` does not
/// start on a line: these rows measure streaming stores.
pub fn walk(how: BlockWalk, src: &[u8], dst: &mut [u8]) -> bool {
    let blocks = src.len().min(dst.len()) / BLOCK_BYTES;
    #[cfg(target_arch = "x86_64")]
    if available() && dst.as_ptr().align_offset(64) == 0 {
        let band = f32_band().expect("available() found it");
        // SAFETY: AVX2 is present; every block read and written lies inside the
        // slices, and every streamed line of `dst` is 64-byte aligned.
        unsafe { avx2::walk(how, band, src.as_ptr(), dst.as_mut_ptr(), blocks) };
        return true;
    }
    let _ = (how, blocks);
    false
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{BlockWalk, BLOCK_BYTES, SIDE};
    use std::arch::x86_64::*;
    use vlkernels::permute::kernels::BandStridedFn;

    const ROW: usize = SIDE * 4;
    /// Lines per block.
    const LINES: usize = BLOCK_BYTES / 64;

    /// # Safety
    /// AVX2; `src` readable and `dst` writable for `blocks` blocks; `dst` 64-byte
    /// aligned; `band` the generated f32 line band.
    #[target_feature(enable = "avx2")]
    pub unsafe fn walk(how: BlockWalk, band: BandStridedFn, src: *const u8, dst: *mut u8, blocks: usize) {
        for b in 0..blocks {
            let (s, d) = (src.add(b * BLOCK_BYTES), dst.add(b * BLOCK_BYTES));
            match how {
                BlockWalk::Copy => {
                    // The library's streamed copy (its fence is the walk's, below).
                    let (from, to) = (
                        std::slice::from_raw_parts(s, BLOCK_BYTES),
                        std::slice::from_raw_parts_mut(d, BLOCK_BYTES),
                    );
                    vlkernels::permute::stream_copy(from, to).expect("equal lengths");
                }
                BlockWalk::Lines => {
                    // The last block prefetches itself (harmless, and never past the buffer).
                    let next = src.add((b + 1).min(blocks - 1) * BLOCK_BYTES);
                    lines(s, d, next)
                }
                // 16 source rows per destination line, 8 destination rows per step.
                BlockWalk::Registers => band(s, ROW, d, ROW, SIDE / 8, SIDE / 16),
                BlockWalk::HalfLines => half_lines(s, d),
            }
        }
        _mm_sfence();
    }

    #[inline(always)]
    unsafe fn lines(s: *const u8, d: *mut u8, next: *const u8) {
        let groups = SIDE / 16;
        for (g, d0) in (0..SIDE).step_by(16).enumerate() {
            prefetch_share(next, g, groups);
            for c0 in (0..SIDE).step_by(16) {
                for k in 0..16 {
                    let from = s.add((c0 + k) * ROW + d0 * 4);
                    let (v0, v1) = (load(from), load(from.add(32)));
                    stream(d.add((d0 + k) * ROW + c0 * 4), v0, v1);
                }
            }
        }
    }

    /// The band's order (steps of 32-byte column halves, 16 rows per line)
    /// with each destination line made of two loaded halves as they are.
    #[inline(always)]
    unsafe fn half_lines(s: *const u8, d: *mut u8) {
        for t in 0..SIDE / 8 {
            for l in 0..SIDE / 16 {
                let from = s.add(l * 16 * ROW + t * 32);
                let mut v = [_mm256_setzero_si256(); 16];
                for (r, v) in v.iter_mut().enumerate() {
                    *v = load(from.add(r * ROW));
                }
                for j in 0..8 {
                    stream(d.add((t * 8 + j) * ROW + l * 64), v[j], v[8 + j]);
                }
            }
        }
    }

    /// Prefetches share `g` of `groups` of the lines of the block at `next`.
    #[inline(always)]
    unsafe fn prefetch_share(next: *const u8, g: usize, groups: usize) {
        let per = LINES / groups;
        for l in g * per..(g + 1) * per {
            _mm_prefetch::<_MM_HINT_T0>(next.add(l * 64) as *const i8);
        }
    }

    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256i {
        _mm256_loadu_si256(p as *const __m256i)
    }

    /// One whole line, its two halves back to back.
    #[inline(always)]
    unsafe fn stream(p: *mut u8, lo: __m256i, hi: __m256i) {
        _mm256_stream_si256(p as *mut __m256i, lo);
        _mm256_stream_si256(p.add(32) as *mut __m256i, hi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffers(blocks: usize) -> (Vec<u8>, Vec<u8>, usize) {
        let src: Vec<u8> = (0..blocks * BLOCK_BYTES).map(|i| (i * 7 + i / 251) as u8).collect();
        let dst = vec![0xA5u8; blocks * BLOCK_BYTES + 64];
        let at = dst.as_ptr().align_offset(64);
        (src, dst, at)
    }

    #[test]
    fn every_walk_moves_the_bytes_it_claims() {
        let blocks = 3;
        for how in [
            BlockWalk::Copy,
            BlockWalk::Lines,
            BlockWalk::Registers,
            BlockWalk::HalfLines,
        ] {
            let (src, mut dst, at) = buffers(blocks);
            let out = &mut dst[at..at + blocks * BLOCK_BYTES];
            if !walk(how, &src, out) {
                eprintln!("SKIPPED {how:?}: this CPU has no AVX2 (the block rows print as skipped too)");
                continue;
            }
            let row = SIDE * 4;
            for b in 0..blocks {
                let (s, d) = (&src[b * BLOCK_BYTES..], &out[b * BLOCK_BYTES..]);
                for r in 0..SIDE {
                    for c in 0..SIDE {
                        let want = match how {
                            BlockWalk::Copy => r * row + c * 4,
                            // Destination (r, c) holds source (c, r).
                            BlockWalk::Registers => c * row + r * 4,
                            // Destination line (r, c / 16) holds source line (16 (c / 16) + r % 16, r / 16).
                            BlockWalk::Lines => (c / 16 * 16 + r % 16) * row + (r / 16 * 16 + c % 16) * 4,
                            // Destination (8 t + j, 16 l + e) holds source (16 l + j + 8 (e / 8), 8 t + e % 8).
                            BlockWalk::HalfLines => {
                                (c / 16 * 16 + r % 8 + 8 * (c % 16 / 8)) * row + (r / 8 * 8 + c % 8) * 4
                            }
                        };
                        let got = r * row + c * 4;
                        assert_eq!(&d[got..got + 4], &s[want..want + 4], "{how:?} block {b} ({r}, {c})");
                    }
                }
            }
        }
    }
}
