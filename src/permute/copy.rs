//! Byte copies used by the executor: short runs without a call into
//! memcpy, long runs through memcpy or streaming stores.

/// Copies `n` runs of `N` bytes, run `t` from `src + t*src_step` to
/// `dst + t*dst_step`. `N` is a constant so each run is a few fixed moves.
///
/// # Safety
/// Every run must be valid for reads (source) and writes (destination).
unsafe fn copy_runs_fixed<const N: usize>(src: *const u8, dst: *mut u8, n: usize, src_step: usize, dst_step: usize) {
    for t in 0..n {
        let v = (src.add(t * src_step) as *const [u8; N]).read_unaligned();
        (dst.add(t * dst_step) as *mut [u8; N]).write_unaligned(v);
    }
}

/// A function that copies `n` equally spaced runs of one fixed length.
pub(crate) type CopyRunsFn = unsafe fn(src: *const u8, dst: *mut u8, n: usize, src_step: usize, dst_step: usize);

/// The fixed-length run copier for runs of `len` bytes (1..=64), chosen
/// once per execution so the per-run work has no branches.
pub(crate) fn copy_runs_fn(len: usize) -> Option<CopyRunsFn> {
    macro_rules! table {
        ($($n:literal)*) => {
            match len {
                $($n => Some(copy_runs_fixed::<$n> as CopyRunsFn),)*
                _ => None,
            }
        };
    }
    table!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32
           33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63 64)
}

/// Copies `len` bytes; with `non_temporal` on x86-64 the bulk is written
/// with streaming stores that bypass the cache.
///
/// # Safety
/// `src` valid for `len` reads, `dst` for `len` writes, no overlap.
pub(crate) unsafe fn copy_bytes(src: *const u8, dst: *mut u8, len: usize, non_temporal: bool) {
    #[cfg(target_arch = "x86_64")]
    if non_temporal && len >= 256 {
        return stream_copy_x86(src, dst, len);
    }
    let _ = non_temporal;
    std::ptr::copy_nonoverlapping(src, dst, len);
}

/// Streaming copy: align the destination to 16 bytes, `movntdq` the body,
/// copy the tail normally, then fence so later loads see the data.
#[cfg(target_arch = "x86_64")]
unsafe fn stream_copy_x86(src: *const u8, dst: *mut u8, len: usize) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
    let head = dst.align_offset(16).min(len);
    std::ptr::copy_nonoverlapping(src, dst, head);
    let mut off = head;
    while off + 64 <= len {
        // SSE2 is part of the x86-64 baseline, so these are always available.
        let s = src.add(off) as *const __m128i;
        let d = dst.add(off) as *mut __m128i;
        let (v0, v1, v2, v3) = (
            _mm_loadu_si128(s),
            _mm_loadu_si128(s.add(1)),
            _mm_loadu_si128(s.add(2)),
            _mm_loadu_si128(s.add(3)),
        );
        _mm_stream_si128(d, v0);
        _mm_stream_si128(d.add(1), v1);
        _mm_stream_si128(d.add(2), v2);
        _mm_stream_si128(d.add(3), v3);
        off += 64;
    }
    std::ptr::copy_nonoverlapping(src.add(off), dst.add(off), len - off);
    _mm_sfence();
}
