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

/// Copies `n` runs of `N` bytes, run `t` from `src + t*src_step` to `dst + dst_offsets[t]`.
///
/// # Safety
/// `dst_offsets` must hold `n` offsets; every run must be valid for reads and writes.
unsafe fn copy_runs_at_fixed<const N: usize>(
    src: *const u8,
    dst: *mut u8,
    n: usize,
    src_step: usize,
    dst_offsets: *const usize,
) {
    for t in 0..n {
        let v = (src.add(t * src_step) as *const [u8; N]).read_unaligned();
        (dst.add(*dst_offsets.add(t)) as *mut [u8; N]).write_unaligned(v);
    }
}

/// A function that copies `n` equally spaced source runs of one fixed length to
/// destination offsets from a table.
pub(crate) type CopyRunsAtFn =
    unsafe fn(src: *const u8, dst: *mut u8, n: usize, src_step: usize, dst_offsets: *const usize);

/// The fixed-length table-driven run copier for runs of `len` bytes (1..=256, in
/// the lengths ViT patches and small channel groups use), else `None`.
pub(crate) fn copy_runs_at_fn(len: usize) -> Option<CopyRunsAtFn> {
    macro_rules! table {
        ($($n:literal)*) => {
            match len {
                $($n => Some(copy_runs_at_fixed::<$n> as CopyRunsAtFn),)*
                _ => None,
            }
        };
    }
    table!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32
           33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63 64
           72 80 96 112 128 144 160 192 224 256)
}

/// Copies `len` bytes with at most two (overlapping) moves of one width
/// instead of a call into memcpy: the transpose's edge blocks copy many short rows.
///
/// # Safety
/// `src` valid for `len` reads, `dst` for `len` writes, no overlap.
#[inline(always)]
pub(crate) unsafe fn copy_small(src: *const u8, dst: *mut u8, len: usize) {
    #[inline(always)]
    unsafe fn two<const N: usize>(src: *const u8, dst: *mut u8, len: usize) {
        let head = (src as *const [u8; N]).read_unaligned();
        let tail = (src.add(len - N) as *const [u8; N]).read_unaligned();
        (dst as *mut [u8; N]).write_unaligned(head);
        (dst.add(len - N) as *mut [u8; N]).write_unaligned(tail);
    }
    match len {
        0 => {}
        1..=3 => {
            for i in 0..len {
                *dst.add(i) = *src.add(i);
            }
        }
        4..=7 => two::<4>(src, dst, len),
        8..=15 => two::<8>(src, dst, len),
        16..=31 => two::<16>(src, dst, len),
        32..=64 => two::<32>(src, dst, len),
        _ => std::ptr::copy_nonoverlapping(src, dst, len),
    }
}

/// Copies `len` bytes; with `non_temporal` on x86-64 the bulk is written
/// with streaming stores that bypass the cache (followed by a fence).
///
/// # Safety
/// `src` valid for `len` reads, `dst` for `len` writes, no overlap.
pub(crate) unsafe fn copy_bytes(src: *const u8, dst: *mut u8, len: usize, non_temporal: bool) {
    if non_temporal && len >= 256 {
        stream_bytes(src, dst, len);
        stream_fence();
        return;
    }
    std::ptr::copy_nonoverlapping(src, dst, len);
}

/// Copies `len` bytes, writing the 16-byte-aligned body of the destination
/// with streaming stores where the target has them; head and tail use
/// ordinary stores. Callers issue [`stream_fence`] before the data is
/// read by another thread.
///
/// # Safety
/// `src` valid for `len` reads, `dst` for `len` writes, no overlap.
#[inline]
pub(crate) unsafe fn stream_bytes(src: *const u8, dst: *mut u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu_features().avx2 {
        return stream_bytes_avx(src, dst, len);
    }
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        let head = dst.align_offset(16).min(len);
        std::ptr::copy_nonoverlapping(src, dst, head);
        let mut off = head;
        while off + 16 <= len {
            // SSE2 is part of the x86-64 baseline, so this is always available.
            _mm_stream_si128(
                dst.add(off) as *mut __m128i,
                _mm_loadu_si128(src.add(off) as *const __m128i),
            );
            off += 16;
        }
        std::ptr::copy_nonoverlapping(src.add(off), dst.add(off), len - off);
    }
    #[cfg(not(target_arch = "x86_64"))]
    std::ptr::copy_nonoverlapping(src, dst, len);
}

/// [`stream_bytes`] with 32-byte streaming stores: half the store
/// instructions, and each pair completes a 64-byte line in the
/// write-combining buffer.
///
/// # Safety
/// As [`stream_bytes`]; the CPU must have AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
unsafe fn stream_bytes_avx(src: *const u8, dst: *mut u8, len: usize) {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm256_stream_si256};
    let head = dst.align_offset(32).min(len);
    if head > 0 {
        std::ptr::copy_nonoverlapping(src, dst, head);
    }
    let mut off = head;
    while off + 32 <= len {
        _mm256_stream_si256(
            dst.add(off) as *mut __m256i,
            _mm256_loadu_si256(src.add(off) as *const __m256i),
        );
        off += 32;
    }
    if off < len {
        std::ptr::copy_nonoverlapping(src.add(off), dst.add(off), len - off);
    }
}

/// Streams `pieces` runs of `piece` bytes, `from_step` apart from `from`, to
/// `dst` back to back (a row of a block-ordered stage). Whole 32-byte pieces
/// into a 32-byte-aligned row go straight out, one load and one streaming
/// store each, in line (a call per piece cost more than the copy); other rows
/// are gathered in `row` first and streamed like [`stream_bytes`].
///
/// # Safety
/// `dst` writable and `row` long enough for `pieces * piece` bytes; every piece readable.
pub(crate) unsafe fn stream_gathered(
    from: *const u8,
    from_step: usize,
    pieces: usize,
    piece: usize,
    dst: *mut u8,
    row: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    if piece % 32 == 0 && (dst as usize) % 32 == 0 && crate::cpu_features().avx2 {
        return stream_gathered_avx(from, from_step, pieces, piece, dst);
    }
    debug_assert!(row.len() >= pieces * piece);
    gather_pieces(from, from_step, pieces, piece, row.as_mut_ptr());
    stream_bytes(row.as_ptr(), dst, pieces * piece);
}

/// Copies `pieces` runs of `piece` bytes, `from_step` apart from `from`, to
/// `dst` back to back, with ordinary stores.
///
/// # Safety
/// `dst` writable for `pieces * piece` bytes; every piece readable; no overlap.
pub(crate) unsafe fn gather_pieces(from: *const u8, from_step: usize, pieces: usize, piece: usize, dst: *mut u8) {
    for j in 0..pieces {
        copy_small(from.add(j * from_step), dst.add(j * piece), piece);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
unsafe fn stream_gathered_avx(from: *const u8, from_step: usize, pieces: usize, piece: usize, dst: *mut u8) {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm256_stream_si256};
    if piece == 32 {
        // The AVX2 kernels' pieces (8 × f32, 16 × bf16, ...): one move each.
        for j in 0..pieces {
            let v = _mm256_loadu_si256(from.add(j * from_step) as *const __m256i);
            _mm256_stream_si256(dst.add(j * 32) as *mut __m256i, v);
        }
        return;
    }
    for j in 0..pieces {
        let (s, d) = (from.add(j * from_step), dst.add(j * piece));
        for c in 0..piece / 32 {
            let v = _mm256_loadu_si256(s.add(c * 32) as *const __m256i);
            _mm256_stream_si256(d.add(c * 32) as *mut __m256i, v);
        }
    }
}

/// Streams every row of a tile from a row-ordered stage: row `i` from
/// `stage + stage_rows[i]` to `dst + dst_rows[i]`, `len` bytes each, as
/// [`stream_bytes`] does, with the rows' loop inside one AVX function (a call
/// per row of a few 32-byte moves cost as much as the moves).
///
/// # Safety
/// As [`stream_bytes`] for every row.
pub(crate) unsafe fn stream_rows(stage: *const u8, stage_rows: &[usize], dst: *mut u8, dst_rows: &[usize], len: usize) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu_features().avx2 {
        return stream_rows_avx(stage, stage_rows, dst, dst_rows, len);
    }
    for (&s, &d) in stage_rows.iter().zip(dst_rows) {
        stream_bytes(stage.add(s), dst.add(d), len);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn stream_rows_avx(stage: *const u8, stage_rows: &[usize], dst: *mut u8, dst_rows: &[usize], len: usize) {
    for (&s, &d) in stage_rows.iter().zip(dst_rows) {
        stream_bytes_avx(stage.add(s), dst.add(d), len);
    }
}

/// Streams every row of a tile from a block-ordered stage (see `exec`), as
/// [`stream_gathered`] does per row, with the rows' loop inside one AVX
/// function where every piece is whole 32-byte moves into 32-byte-aligned rows
/// (a call per row of a few pieces cost as much as the moves). Row `i` of the
/// tile is at `dst + dst_rows[i]`; its pieces start at
/// `stage + (i / na) * block + (i % na) * piece`, `pass` bytes apart.
///
/// # Safety
/// As [`stream_gathered`] for every row.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn stream_gathered_rows(
    stage: *const u8,
    na: usize,
    block: usize,
    pass: usize,
    pieces: usize,
    piece: usize,
    dst: *mut u8,
    dst_rows: &[usize],
    row: &mut [u8],
) {
    let from = |i: usize| stage.add((i / na) * block + (i % na) * piece);
    #[cfg(target_arch = "x86_64")]
    if piece % 32 == 0 && crate::cpu_features().avx2 && dst_rows.iter().all(|&r| (dst as usize + r) % 32 == 0) {
        return stream_gathered_rows_avx(&from, pass, pieces, piece, dst, dst_rows);
    }
    for (i, &r) in dst_rows.iter().enumerate() {
        stream_gathered(from(i), pass, pieces, piece, dst.add(r), row);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn stream_gathered_rows_avx(
    from: &impl Fn(usize) -> *const u8,
    pass: usize,
    pieces: usize,
    piece: usize,
    dst: *mut u8,
    dst_rows: &[usize],
) {
    for (i, &r) in dst_rows.iter().enumerate() {
        stream_gathered_avx(from(i), pass, pieces, piece, dst.add(r));
    }
}

/// The bytes of one cache line that a piece of a destination row has written
/// so far, kept for the next piece of the same row (see [`stream_lines_carried`]).
pub(crate) type LineCarry = [u8; 64];

/// Copies `len` bytes like [`stream_bytes`] but streams whole cache lines only,
/// so rows that start inside lines cost no read-modify-write in memory.
///
/// The line that `dst` starts inside of is completed from `carry` when
/// `carried` (the previous piece of this row kept its last bytes there) and
/// streamed; otherwise this piece's part of it goes with ordinary stores.
/// With `keep`, the partial last line is saved in `carry` for the next piece
/// of the row, which must then start at `dst + len` and be passed
/// `carried`; without it the partial line goes with ordinary stores. A piece
/// passed `keep` must be at least 64 bytes long.
///
/// # Safety
/// As [`stream_bytes`]; with `carried`, `carry` holds the `dst % 64` bytes
/// that precede `dst` in its line.
pub(crate) unsafe fn stream_lines_carried(
    src: *const u8,
    dst: *mut u8,
    len: usize,
    carry: &mut LineCarry,
    carried: bool,
    keep: bool,
) {
    debug_assert!(!keep || len >= 64, "a kept piece must cross a line boundary");
    let (mut src, mut dst, mut len) = (src, dst, len);
    let k = dst as usize % 64;
    if carried && k != 0 {
        let take = (64 - k).min(len);
        std::ptr::copy_nonoverlapping(src, carry.as_mut_ptr().add(k), take);
        if k + take == 64 {
            stream_bytes(carry.as_ptr(), dst.sub(k), 64);
        } else {
            // The row ends inside this line (only a last piece is this short).
            debug_assert!(!keep);
            std::ptr::copy_nonoverlapping(carry.as_ptr(), dst.sub(k), k + take);
            return;
        }
        (src, dst, len) = (src.add(take), dst.add(take), len - take);
    }
    let head = dst.align_offset(64).min(len);
    std::ptr::copy_nonoverlapping(src, dst, head);
    let body = (len - head) / 64 * 64;
    stream_bytes(src.add(head), dst.add(head), body);
    let (at, tail) = (head + body, len - head - body);
    if keep {
        std::ptr::copy_nonoverlapping(src.add(at), carry.as_mut_ptr(), tail);
    } else {
        std::ptr::copy_nonoverlapping(src.add(at), dst.add(at), tail);
    }
}

/// Streams `lines` whole lines from row `i` of `from` (rows `pitch` bytes
/// apart) to `dst + rows[i]` (64-byte aligned): the rows of a band's scratch
/// block (`bands.rs`).
///
/// # Safety
/// `from` readable for `rows.len()` rows of `lines` lines; every
/// `dst + rows[i]` aligned and writable for `lines` whole lines.
#[inline]
pub(crate) unsafe fn stream_lines_to(from: *const u8, pitch: usize, lines: usize, dst: *mut u8, rows: &[usize]) {
    stream_whole_lines(rows.len(), lines, |i| (from.add(i * pitch), dst.add(rows[i])));
}

/// Streams `n` runs of `lines` whole lines, run `t` from `src + t * src_step`
/// to `dst + t * dst_step`; every destination run starts on a line. Runs of a
/// line or a few (a `Runs` problem's 64-byte rows) otherwise take ordinary
/// stores, each line read for ownership before it is written.
///
/// # Safety
/// Every run readable and writable for `64 * lines` bytes, destinations 64-byte aligned.
pub(crate) unsafe fn stream_line_runs(
    src: *const u8,
    dst: *mut u8,
    n: usize,
    src_step: usize,
    dst_step: usize,
    lines: usize,
) {
    stream_whole_lines(n, lines, |t| (src.add(t * src_step), dst.add(t * dst_step)));
}

/// Streams `lines` whole lines from `at(t).0` to the 64-byte-aligned `at(t).1`
/// for each `t < n`: each line by two back-to-back 32-byte streaming stores,
/// completing it in one write-combining buffer (16-byte ones without AVX).
///
/// # Safety
/// As the callers: every source readable and every destination aligned and
/// writable for `lines` lines.
#[inline(always)]
unsafe fn stream_whole_lines(n: usize, lines: usize, at: impl Fn(usize) -> (*const u8, *mut u8)) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu_features().avx2 {
        return stream_whole_lines_avx(n, lines, at);
    }
    for t in 0..n {
        let (s, d) = at(t);
        stream_bytes(s, d, 64 * lines);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn stream_whole_lines_avx(n: usize, lines: usize, at: impl Fn(usize) -> (*const u8, *mut u8)) {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm256_stream_si256};
    for t in 0..n {
        let (s, d) = at(t);
        let (s, d) = (s as *const __m256i, d as *mut __m256i);
        for q in (0..2 * lines).step_by(2) {
            let (lo, hi) = (_mm256_loadu_si256(s.add(q)), _mm256_loadu_si256(s.add(q + 1)));
            _mm256_stream_si256(d.add(q), lo);
            _mm256_stream_si256(d.add(q + 1), hi);
        }
    }
}

/// Orders earlier streaming stores before later stores (x86-64 `sfence`).
#[inline]
pub fn stream_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: sfence has no preconditions; SSE is in the x86-64 baseline.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}
