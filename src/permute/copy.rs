//! Byte copies used by the executor: short runs without a call into
//! memcpy, long runs through memcpy or streaming stores.

/// Copies `len` bytes (`len <= 64`) with at most four overlapping
/// unaligned moves, so a run of 3, 14 or 56 bytes costs a few instructions.
///
/// # Safety
/// `src` valid for `len` reads, `dst` for `len` writes, no overlap.
#[inline(always)]
pub(crate) unsafe fn copy_small(src: *const u8, dst: *mut u8, len: usize) {
    #[inline(always)]
    unsafe fn mv<T: Copy>(src: *const u8, dst: *mut u8, off: usize) {
        (dst.add(off) as *mut T).write_unaligned((src.add(off) as *const T).read_unaligned());
    }
    match len {
        0 => {}
        1 => mv::<u8>(src, dst, 0),
        2..=3 => {
            mv::<u16>(src, dst, 0);
            mv::<u16>(src, dst, len - 2);
        }
        4..=7 => {
            mv::<u32>(src, dst, 0);
            mv::<u32>(src, dst, len - 4);
        }
        8..=15 => {
            mv::<u64>(src, dst, 0);
            mv::<u64>(src, dst, len - 8);
        }
        16..=32 => {
            mv::<u128>(src, dst, 0);
            mv::<u128>(src, dst, len - 16);
        }
        _ => {
            debug_assert!(len <= 64);
            mv::<[u128; 2]>(src, dst, 0);
            mv::<[u128; 2]>(src, dst, len - 32);
        }
    }
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
