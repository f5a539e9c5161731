//! Generated micro-kernels on this CPU against the reference: every kernel of
//! every family the CPU runs (rows back to back and at irregular offsets,
//! poisoned outputs), and permutations through the engine with each forced family.

#[path = "simd_check/mod.rs"]
mod simd_check;

use proptest::prelude::*;
use simd_check::{check_all_kernels, check_permute, isa_families, permute_sweep, report_missing, streamed_sweep};
use vlkernels::permute::kernels::{generated_tables, tile_kernel, KernelFamily};

#[test]
fn every_generated_kernel_matches_the_reference() {
    report_missing();
    let runs = check_all_kernels().unwrap();
    eprintln!("{runs} kernel runs checked on {:?}", isa_families());
    if !isa_families().is_empty() {
        assert!(runs > 0);
    }
}

#[test]
fn avx2_square_kernels_have_line_bands() {
    // The streamed bands go straight from registers wherever a destination row
    // of the square block is one register: 2-, 4-, 8- and 16-byte elements.
    let avx2 = vlkernels::permute::simd::avx2();
    if cfg!(target_arch = "x86_64") {
        for es in [2usize, 4, 8, 16] {
            let k = avx2
                .iter()
                .find(|k| k.elem_bytes == es && !k.src_contiguous && !k.dst_contiguous);
            assert!(
                k.is_some_and(|k| k.band.is_some() && k.band_strided.is_some()),
                "no AVX2 line band for {es}-byte elements"
            );
        }
    }
    assert!(avx2
        .iter()
        .all(|k| (k.band.is_none() || k.elem_bytes > 1) && k.band.is_some() == k.band_strided.is_some()));
}

#[test]
fn permutations_with_each_forced_family() {
    for f in isa_families() {
        let runs = permute_sweep(f).unwrap();
        assert!(runs > 100);
    }
}

#[test]
fn streamed_permutations_with_each_forced_family() {
    // Line bands (both walks) and line-by-line runs with each ISA family's kernels.
    for f in isa_families() {
        let (runs, banded, across) = streamed_sweep(f).unwrap();
        assert!(
            runs == 30 && banded > 0 && across > 0,
            "{}: {runs} runs, {banded} as bands, {across} walked across",
            f.name()
        );
    }
}

#[test]
fn dispatch_prefers_small_extent_kernels_when_a_side_is_short() {
    for f in isa_families() {
        // 3 channels of f32: the 3-wide source side selects a dedicated kernel where one exists.
        let k = tile_kernel(f, 4, 3, 32).expect("a kernel");
        let has_small = generated_tables(f)
            .iter()
            .any(|t| t.iter().any(|g| g.elem_bytes == 4 && g.na == 3));
        if has_small {
            assert_eq!(k.na, 3, "{}", f.name());
        }
        // Long sides use the square block.
        let sq = tile_kernel(f, 4, 32, 32).expect("a kernel");
        assert_eq!(sq.na, sq.nb);
    }
    assert!(tile_kernel(KernelFamily::Scalar, 4, 8, 8).is_none());
}

#[test]
fn three_channel_tiles_get_generated_kernels_at_every_width() {
    for f in isa_families() {
        for es in [1usize, 2, 4, 8] {
            let has = |src_side: bool| {
                generated_tables(f).iter().any(|t| {
                    t.iter()
                        .any(|g| g.elem_bytes == es && if src_side { g.na == 3 } else { g.nb == 3 })
                })
            };
            // AVX2 and AVX-512 have 3-wide networks at every width (vpshufb + blends for bytes).
            if f != KernelFamily::Neon {
                assert!(
                    has(true) && has(false),
                    "{} has no 3-wide kernel for {es}-byte elements",
                    f.name()
                );
            }
            if has(true) {
                assert_eq!(
                    tile_kernel(f, es, 3, 64).expect("a kernel").na,
                    3,
                    "{} HWC {es}",
                    f.name()
                );
            }
            if has(false) {
                assert_eq!(
                    tile_kernel(f, es, 64, 3).expect("a kernel").nb,
                    3,
                    "{} CHW {es}",
                    f.name()
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn small_channel_counts_match_reference(h in 1usize..40, w in 1usize..40, ch in 2usize..=4, es_i in 0usize..5, to_chw in any::<bool>(), seed in any::<u64>()) {
        let es = [1, 2, 4, 8, 16][es_i];
        for f in isa_families() {
            let (shape, perm) = if to_chw { (vec![h, w, ch], vec![2, 0, 1]) } else { (vec![ch, h, w], vec![1, 2, 0]) };
            check_permute(f, &shape, &perm, es, seed).unwrap();
        }
    }
}
