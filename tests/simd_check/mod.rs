//! Checks of the generated micro-kernels against the element-by-element
//! reference, shared by tests/simd_kernels.rs and the single-threaded
//! tests/neon_check.rs (which runs under qemu for NEON).
#![allow(dead_code)]

use vlkernels::permute::kernels::{available, generated_tables, KernelFamily};
use vlkernels::permute::simd::GenKernel;
use vlkernels::{NonTemporal, PermuteOptions, PermutePlan};

/// The ISA families this CPU runs.
pub fn isa_families() -> Vec<KernelFamily> {
    [KernelFamily::Avx2, KernelFamily::Avx512, KernelFamily::Neon]
        .into_iter()
        .filter(|&f| available(f))
        .collect()
}

/// Says loudly which ISA families cannot run here; fails if `VLK_REQUIRE_<ISA>=1` asks for one.
pub fn report_missing() {
    for f in [KernelFamily::Avx2, KernelFamily::Avx512, KernelFamily::Neon] {
        if !available(f) {
            let var = format!("VLK_REQUIRE_{}", f.name().to_uppercase());
            eprintln!(
                "NOTE: this CPU cannot run {} kernels: they are only compiled (if on this architecture) and verified by the codegen interpreter here",
                f.name()
            );
            assert!(
                std::env::var(&var).as_deref() != Ok("1"),
                "{var}=1 but {} is unavailable",
                f.name()
            );
        }
    }
}

/// Splitmix64 bytes.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = vlkernels::rng::SplitMix64::new(seed);
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

/// Row offsets: back to back, or with irregular (also odd-byte) gaps.
fn row_offsets(n: usize, row_bytes: usize, back_to_back: bool, start: usize) -> Vec<usize> {
    let mut off = start;
    (0..n)
        .map(|k| {
            let o = off;
            off += row_bytes + if back_to_back { 0 } else { 1 + (k * 7) % 13 };
            o
        })
        .collect()
}

/// Runs one block (`run(src, dst)`) on random data with poisoned output: source
/// row `j` at `src_rows[j]`, destination row `i` at `dst_rows[i]`; every element
/// must land where the reference puts it and no other byte may change.
fn check_block(
    k: &GenKernel,
    src_rows: &[usize],
    dst_rows: &[usize],
    seed: u64,
    what: &str,
    run: impl Fn(&[u8], &mut [u8]),
) -> Result<(), String> {
    let es = k.elem_bytes;
    let src = random_bytes(src_rows[k.nb - 1] + k.na * es + 64, seed);
    let dst_len = dst_rows[k.na - 1] + k.nb * es + 64;
    for poison in [0xA5u8, 0x5A] {
        let mut dst = vec![poison; dst_len];
        run(&src, &mut dst);
        let mut expect = vec![poison; dst_len];
        for (i, &dr) in dst_rows.iter().enumerate() {
            for (j, &sr) in src_rows.iter().enumerate() {
                let (s, d) = (sr + i * es, dr + j * es);
                expect[d..d + es].copy_from_slice(&src[s..s + es]);
            }
        }
        if let Some(pos) = dst.iter().zip(&expect).position(|(a, b)| a != b) {
            return Err(format!(
                "{} ({what}, poison {poison:#x}): first wrong byte at {pos}",
                k.name
            ));
        }
    }
    Ok(())
}

/// Kernel `k` through its offset tables, rows back to back or with irregular gaps.
pub fn check_kernel(k: &GenKernel, back_to_back: bool, seed: u64) -> Result<(), String> {
    let es = k.elem_bytes;
    let src_rows = row_offsets(k.nb, k.na * es, back_to_back, 5);
    let dst_rows = row_offsets(k.na, k.nb * es, back_to_back, 3);
    let what = format!("rows back to back: {back_to_back}");
    check_block(k, &src_rows, &dst_rows, seed, &what, |src, dst| {
        // SAFETY: the family is available (checked by callers) and every row lies inside the buffers.
        unsafe { (k.func)(src.as_ptr(), src_rows.as_ptr(), dst.as_mut_ptr(), dst_rows.as_ptr()) }
    })
}

/// The strided form of kernel `k` (if it has one), rows at equal steps: back to
/// back (`gap` 0) or `gap` bytes apart in the source and `2 * gap` in the destination.
pub fn check_strided_kernel(k: &GenKernel, gap: usize, seed: u64) -> Result<(), String> {
    let Some(f) = k.strided else { return Ok(()) };
    let es = k.elem_bytes;
    let (ss, ds) = (k.na * es + gap, k.nb * es + 2 * gap);
    let src_rows: Vec<usize> = (0..k.nb).map(|j| 5 + j * ss).collect();
    let dst_rows: Vec<usize> = (0..k.na).map(|i| 3 + i * ds).collect();
    check_block(
        k,
        &src_rows,
        &dst_rows,
        seed,
        &format!("strided, gap {gap}"),
        |src, dst| {
            // SAFETY: as above; rows start at the first offsets and step by `ss` and `ds`.
            unsafe { f(src.as_ptr().add(src_rows[0]), ss, dst.as_mut_ptr().add(dst_rows[0]), ds) }
        },
    )
}

/// The line band of kernel `k` (if it has one): `lines` lines of `steps`
/// steps, source rows at irregular (odd-byte) offsets, destination rows on
/// lines with whole lines between them; poisoned output, every byte checked.
pub fn check_band_kernel(k: &GenKernel, steps: usize, lines: usize, seed: u64) -> Result<(), String> {
    let Some(band) = k.band else { return Ok(()) };
    let es = k.elem_bytes;
    let n_src = 64 / es * lines;
    let src_rows = row_offsets(n_src, steps * k.na * es, false, 5);
    // Destination rows a line or more apart, in a scrambled order.
    let n_dst = steps * k.na;
    let pitch = 64 * lines + 64 * (1 + seed as usize % 3);
    let dst_rows: Vec<usize> = (0..n_dst).map(|i| ((i * 5) % n_dst) * pitch).collect();
    check_band_output(k, steps, lines, seed, "band", &src_rows, &dst_rows, |src, dst| {
        // SAFETY: the family is available (checked by callers); every source row
        // holds `steps * na` elements, every destination row is 64-byte aligned
        // and holds `64 * lines` bytes inside the buffer.
        unsafe { band(src, src_rows.as_ptr(), dst, dst_rows.as_ptr(), steps, lines) }
    })
}

/// The strided line band of kernel `k` (if it has one): source rows an odd
/// number of bytes apart from an odd start, destination rows whole lines
/// apart; checked as [`check_band_kernel`].
pub fn check_band_strided_kernel(k: &GenKernel, steps: usize, lines: usize, seed: u64) -> Result<(), String> {
    let Some(band) = k.band_strided else { return Ok(()) };
    let es = k.elem_bytes;
    let src_step = steps * k.na * es + 3;
    let src_rows: Vec<usize> = (0..64 / es * lines).map(|r| 5 + r * src_step).collect();
    let dst_step = 64 * lines + 64 * (1 + seed as usize % 2);
    let dst_rows: Vec<usize> = (0..steps * k.na).map(|r| 128 + r * dst_step).collect();
    check_band_output(
        k,
        steps,
        lines,
        seed,
        "strided band",
        &src_rows,
        &dst_rows,
        |src, dst| {
            // SAFETY: as in `check_band_kernel`; the rows lie at the steps given.
            unsafe { band(src.add(5), src_step, dst.add(128), dst_step, steps, lines) }
        },
    )
}

/// Runs a band (`run(src, dst)`) into poisoned buffers and compares every
/// byte with the transpose the row tables name.
#[allow(clippy::too_many_arguments)]
fn check_band_output(
    k: &GenKernel,
    steps: usize,
    lines: usize,
    seed: u64,
    what: &str,
    src_rows: &[usize],
    dst_rows: &[usize],
    run: impl Fn(*const u8, *mut u8),
) -> Result<(), String> {
    let es = k.elem_bytes;
    let line_rows = 64 / es;
    let src_len = src_rows.iter().max().unwrap() + steps * k.na * es + 64;
    let src = random_bytes(src_len, seed);
    let dst_len = dst_rows.iter().max().unwrap() + 64 * lines + 64;
    for poison in [0xA5u8, 0x5A] {
        let mut buf = vec![poison; dst_len + 64];
        let base = buf.as_ptr().align_offset(64);
        run(src.as_ptr(), buf[base..].as_mut_ptr());
        vlkernels::permute::stream_fence();
        let dst = &buf[base..base + dst_len];
        let mut expect = vec![poison; dst_len];
        for (i, &dr) in dst_rows.iter().enumerate() {
            for l in 0..lines {
                for j in 0..line_rows {
                    let s = src_rows[l * line_rows + j] + i * es;
                    let d = dr + 64 * l + j * es;
                    expect[d..d + es].copy_from_slice(&src[s..s + es]);
                }
            }
        }
        if let Some(pos) = dst.iter().zip(&expect).position(|(a, b)| a != b) {
            return Err(format!(
                "{} {what} ({steps} steps, {lines} lines, poison {poison:#x}): first wrong byte at {pos}",
                k.name
            ));
        }
    }
    Ok(())
}

/// Every generated kernel of every available family, back to back and gapped.
/// Returns the number of kernel runs.
pub fn check_all_kernels() -> Result<usize, String> {
    let mut runs = 0;
    for f in isa_families() {
        for table in generated_tables(f) {
            for k in table.iter() {
                for (t, b2b) in [true, false].into_iter().enumerate() {
                    check_kernel(k, b2b, 17 + t as u64 + k.na as u64 * 31 + k.nb as u64)?;
                    runs += 1;
                }
                for gap in [0, 7, 64] {
                    check_strided_kernel(k, gap, 23 + gap as u64 + k.na as u64 * 31)?;
                    runs += usize::from(k.strided.is_some());
                }
                for (steps, lines) in [(1, 1), (3, 1), (2, 3), (5, 8)] {
                    check_band_kernel(k, steps, lines, 41 + (steps * 10 + lines) as u64 + k.na as u64)?;
                    check_band_strided_kernel(k, steps, lines, 43 + (steps * 10 + lines) as u64 + k.na as u64)?;
                    runs += usize::from(k.band.is_some()) + usize::from(k.band_strided.is_some());
                }
            }
        }
    }
    Ok(runs)
}

/// Streamed cases: line bands of one line, 512 bytes and whole rows, a
/// two-axis destination group, bands walked across (4-, 8- and 16-byte
/// elements: rows of 1600 bytes and more, source rows of 16.4 KiB and more),
/// and runs of whole lines, every element size.
/// Returns the runs, how many of them ran as bands and how many of those
/// walked across.
pub fn streamed_sweep(family: KernelFamily) -> Result<(usize, usize, usize), String> {
    let cases: [(&[usize], &[usize]); 6] = [
        (&[208, 333], &[1, 0]),
        (&[128, 75], &[1, 0]),
        (&[20, 96, 90], &[0, 2, 1]),
        (&[3, 8, 4, 64, 72], &[2, 0, 4, 1, 3]),
        (&[6, 5, 7, 32], &[2, 1, 0, 3]),
        (&[400, 2, 2100], &[2, 1, 0]),
    ];
    let (mut runs, mut banded, mut across) = (0, 0, 0);
    for (k, (shape, perm)) in cases.iter().enumerate() {
        for es in [1usize, 2, 4, 8, 16] {
            let plan = check_permute_stores(family, shape, perm, es, 900 + k as u64 * 5 + es as u64, NonTemporal::On)?;
            banded += usize::from(plan.contains("bands("));
            across += usize::from(plan.contains("across=true"));
            runs += 1;
        }
    }
    Ok((runs, banded, across))
}

/// Reference permutation (row-major source).
pub fn reference(src: &[u8], shape: &[usize], perm: &[usize], es: usize) -> Vec<u8> {
    let rank = shape.len();
    let mut strides = vec![1usize; rank];
    for i in (0..rank.saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n * es);
    let mut idx = vec![0usize; rank];
    for _ in 0..n {
        let off: usize = idx.iter().zip(perm).map(|(&i, &p)| i * strides[p]).sum();
        out.extend_from_slice(&src[off * es..off * es + es]);
        for ax in (0..rank).rev() {
            idx[ax] += 1;
            if idx[ax] < out_shape[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    out
}

/// One permutation through the engine with a forced family on one thread.
pub fn check_permute(
    family: KernelFamily,
    shape: &[usize],
    perm: &[usize],
    es: usize,
    seed: u64,
) -> Result<(), String> {
    check_permute_stores(family, shape, perm, es, seed, NonTemporal::Auto).map(|_| ())
}

/// [`check_permute`] with the store choice given (streaming stores turn on the
/// line bands and line-by-line runs at sizes that fit a test); returns the
/// plan's description.
pub fn check_permute_stores(
    family: KernelFamily,
    shape: &[usize],
    perm: &[usize],
    es: usize,
    seed: u64,
    stores: NonTemporal,
) -> Result<String, String> {
    let n: usize = shape.iter().product();
    let src = random_bytes(n * es, seed);
    let opts = PermuteOptions::default()
        .with_threads(1)
        .with_kernel(family)
        .with_non_temporal(stores);
    let plan = PermutePlan::new(shape, perm, es, &opts).map_err(|e| e.to_string())?;
    let mut dst = vec![0xA5u8; n * es];
    plan.execute_bytes(&src, &mut dst).map_err(|e| e.to_string())?;
    if dst != reference(&src, shape, perm, es) {
        return Err(format!(
            "{} shape {shape:?} perm {perm:?} elem {es}: {}",
            family.name(),
            plan.describe()
        ));
    }
    Ok(plan.describe())
}

/// Sweep: tile edges of 2-D transposes, 2/3/4-channel HWC↔CHW, odd 3-D/4-D shapes.
pub fn permute_sweep(family: KernelFamily) -> Result<usize, String> {
    let mut cases: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
    for r in [1usize, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 67] {
        for c in [1usize, 5, 8, 16, 17, 33] {
            cases.push((vec![r, c], vec![1, 0]));
        }
    }
    for ch in [2usize, 3, 4] {
        for (h, w) in [(1usize, 1usize), (5, 7), (13, 11), (8, 8), (16, 33), (37, 41)] {
            cases.push((vec![h, w, ch], vec![2, 0, 1]));
            cases.push((vec![ch, h, w], vec![1, 2, 0]));
        }
    }
    cases.push((vec![3, 5, 7, 11], vec![3, 1, 0, 2]));
    cases.push((vec![2, 3, 5, 2, 14, 4], vec![0, 2, 4, 1, 3, 5]));
    let mut runs = 0;
    for (k, (shape, perm)) in cases.iter().enumerate() {
        for es in [1usize, 2, 4, 8, 16] {
            check_permute(family, shape, perm, es, k as u64 * 5 + es as u64)?;
            runs += 1;
        }
    }
    Ok(runs)
}
