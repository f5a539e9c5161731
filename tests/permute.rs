//! The permutation engine against an independent index-walking reference.

mod common;

use common::{c_strides, random_bytes, reference_permute, POISON};
use proptest::prelude::*;
use vlkernels::{permute, permute_strided, BlockOrder, Error, KernelFamily, NonTemporal, PermuteOptions, PermutePlan};

/// Element of `N` bytes, compared bytewise.
#[derive(Clone, Copy, PartialEq, Debug)]
#[repr(transparent)]
struct Elem<const N: usize>([u8; N]);

fn to_elems<const N: usize>(bytes: &[u8]) -> Vec<Elem<N>> {
    bytes.chunks_exact(N).map(|c| Elem(c.try_into().unwrap())).collect()
}

/// Runs the plan with poisoned output and compares bytes with the reference, with the
/// plan's tunable parameters replaced when `tuning` is given.
fn check_tuned_n<const N: usize>(
    shape: &[usize],
    perm: &[usize],
    opts: &PermuteOptions,
    tuning: Option<&vlkernels::Tuning>,
    seed: u64,
) {
    let n: usize = shape.iter().product();
    let src = random_bytes(n * N, seed);
    let expect: Vec<Elem<N>> = reference_permute(&to_elems::<N>(&src), shape, &c_strides(shape), perm);
    let mut plan = PermutePlan::new(shape, perm, N, opts).unwrap();
    if let Some(t) = tuning {
        plan = plan.with_tuning(t).unwrap();
    }
    let mut dst = vec![POISON; n * N];
    plan.execute_bytes(&src, &mut dst).unwrap();
    let got = to_elems::<N>(&dst);
    if got != expect {
        let first = got.iter().zip(&expect).position(|(a, b)| a != b).unwrap();
        panic!(
            "shape {shape:?} perm {perm:?} elem {N} opts {opts:?}: first mismatch at {first}; plan {}",
            plan.describe()
        );
    }
}

/// The reference permutation of `src` as bytes, for elements of `es` bytes.
fn reference_bytes(src: &[u8], shape: &[usize], perm: &[usize], es: usize) -> Vec<u8> {
    fn typed<const N: usize>(src: &[u8], shape: &[usize], perm: &[usize]) -> Vec<u8> {
        let out = reference_permute(&to_elems::<N>(src), shape, &c_strides(shape), perm);
        out.iter().flat_map(|e| e.0).collect()
    }
    match es {
        1 => typed::<1>(src, shape, perm),
        2 => typed::<2>(src, shape, perm),
        4 => typed::<4>(src, shape, perm),
        8 => typed::<8>(src, shape, perm),
        16 => typed::<16>(src, shape, perm),
        _ => unreachable!(),
    }
}

/// Runs `plan` into `dst[at..at + expect.len()]` of a poisoned buffer and checks
/// the output against `expect` and that nothing outside it was written; a failure
/// names `what`, the first wrong byte and the plan.
fn check_into(plan: &PermutePlan, src: &[u8], expect: &[u8], dst: &mut [u8], at: usize, what: &str) {
    let len = expect.len();
    dst.fill(POISON);
    plan.execute_bytes(src, &mut dst[at..at + len]).unwrap();
    if let Some(first) = (0..len).find(|&j| dst[at + j] != expect[j]) {
        panic!("{what}: first wrong byte {first}; {}", plan.describe());
    }
    assert!(
        dst[..at].iter().chain(&dst[at + len..]).all(|&b| b == POISON),
        "{what}: wrote outside the output"
    );
}

fn check_case(shape: &[usize], perm: &[usize], es: usize, opts: &PermuteOptions, seed: u64) {
    check_tuned(shape, perm, es, opts, None, seed)
}

/// `check_tuned_n` for an element size chosen at run time.
fn check_tuned(
    shape: &[usize],
    perm: &[usize],
    es: usize,
    opts: &PermuteOptions,
    tuning: Option<&vlkernels::Tuning>,
    seed: u64,
) {
    match es {
        1 => check_tuned_n::<1>(shape, perm, opts, tuning, seed),
        2 => check_tuned_n::<2>(shape, perm, opts, tuning, seed),
        4 => check_tuned_n::<4>(shape, perm, opts, tuning, seed),
        8 => check_tuned_n::<8>(shape, perm, opts, tuning, seed),
        16 => check_tuned_n::<16>(shape, perm, opts, tuning, seed),
        _ => unreachable!(),
    }
}

/// Tuning with the given tile sides walked along the destination (group 4096).
fn dst_fastest(non_temporal: bool, tile: usize, tile_b: usize, threads: usize) -> vlkernels::Tuning {
    vlkernels::Tuning {
        tile,
        tile_b,
        group: 4096,
        block_order: vlkernels::BlockOrder::DstFastest,
        non_temporal,
        threads,
    }
}

/// Tiles with partial blocks on both sides: 2-D both ways, multi-axis groups, a
/// 3-element group, and destination rows starting at odd places inside lines.
fn odd_tile_cases() -> Vec<(Vec<usize>, Vec<usize>)> {
    vec![
        (vec![77, 301], vec![1, 0]),
        (vec![301, 77], vec![1, 0]),
        (vec![5, 7, 33, 40], vec![2, 3, 1, 0]),
        (vec![13, 3, 200], vec![2, 1, 0]),
        (vec![9, 11, 6, 17], vec![3, 1, 0, 2]),
    ]
}

/// The families this host can run (forced ISA families included when present).
fn families() -> Vec<KernelFamily> {
    KernelFamily::ALL
        .iter()
        .copied()
        .filter(|&f| vlkernels::permute::kernels::available(f))
        .collect()
}

fn shape_and_perm() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (1usize..=8)
        .prop_flat_map(|rank| {
            (
                proptest::collection::vec(
                    prop_oneof![1usize..=17, Just(13usize), Just(17usize), Just(2usize)],
                    rank,
                ),
                Just(rank),
            )
        })
        .prop_flat_map(|(shape, rank)| (Just(shape), Just((0..rank).collect::<Vec<_>>()).prop_shuffle()))
        .prop_filter("keep cases small", |(shape, _)| {
            shape.iter().product::<usize>() <= 1 << 16
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn random_permutations_match_reference((shape, perm) in shape_and_perm(), es_idx in 0usize..5, seed in any::<u64>(), threads in 1usize..=3, nt in any::<bool>()) {
        let es = [1, 2, 4, 8, 16][es_idx];
        let nt = if nt { NonTemporal::On } else { NonTemporal::Off };
        for kernel in families() {
            let opts = PermuteOptions::default().with_threads(threads).with_kernel(kernel).with_non_temporal(nt);
            check_case(&shape, &perm, es, &opts, seed);
        }
    }
}

#[test]
fn tile_edges_of_2d_transposes() {
    let edges = [1usize, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 129];
    for kernel in families() {
        for &es in &[1usize, 2, 4, 8, 16] {
            for &r in &edges {
                for (i, &c) in [1usize, 8, 9, 33, 65].iter().enumerate() {
                    let nt = if i % 2 == 0 { NonTemporal::On } else { NonTemporal::Off };
                    let opts = PermuteOptions::default()
                        .with_threads(1)
                        .with_kernel(kernel)
                        .with_non_temporal(nt);
                    check_case(&[r, c], &[1, 0], es, &opts, (r * 1000 + c) as u64);
                    check_case(&[c, r], &[1, 0], es, &opts, (r * 1000 + c + 7) as u64);
                }
            }
        }
    }
}

#[test]
fn multi_axis_groups_with_whole_and_per_block_offset_tables() {
    // Multi-axis groups of up to 8192 rows keep one offset table and slice it per
    // block; longer ones rebuild a block's table. Both, with several partial blocks on
    // each side, both walk orders, in place and staged, 1 and 3 threads.
    let whole = (vec![2usize; 14], (0..14).rev().collect::<Vec<usize>>());
    assert!(matches!(
        PermutePlan::new(&whole.0, &whole.1, 4, &PermuteOptions::default()).unwrap().strategy(),
        vlkernels::permute::Strategy::Transpose { src_group, dst_group, .. } if src_group.len() > 1 && dst_group.len() > 1
    ));
    // (7, 5, 3, 4000) → (2, 1, 3, 0): a 12000-row source group (4000 × 3) by the 7-axis.
    let long = (vec![7usize, 5, 3, 4000], vec![2usize, 1, 3, 0]);
    assert!(matches!(
        PermutePlan::new(&long.0, &long.1, 4, &PermuteOptions::default()).unwrap().strategy(),
        vlkernels::permute::Strategy::Transpose { src_group, .. } if src_group.len() == 2
    ));
    for (shape, perm) in [whole, long, (vec![3, 5, 7, 11, 13], vec![4, 3, 2, 1, 0])] {
        for threads in [1, 3] {
            let opts = PermuteOptions::default().with_threads(threads);
            for (tile, tile_b) in [(40, 24), (1024, 64)] {
                for nt in [false, true] {
                    for order in [vlkernels::BlockOrder::DstFastest, vlkernels::BlockOrder::SrcFastest] {
                        let t = vlkernels::Tuning {
                            block_order: order,
                            ..dst_fastest(nt, tile, tile_b, threads)
                        };
                        check_tuned(&shape, &perm, 4, &opts, Some(&t), 31);
                        check_tuned(&shape, &perm, 2, &opts, Some(&t), 32);
                    }
                }
            }
        }
    }
}

#[test]
fn rectangular_tiles_at_edges() {
    // Tiles longer along the source's stride-1 group than along the destination's (the
    // streaming default is 1024 × 256 bytes), with partial tiles on both sides, multi-axis
    // groups, and the short-group case where the other side grows to whole cache lines.
    let cases = odd_tile_cases();
    let tunings = [(40usize, 16usize, 64usize), (24, 8, 24), (1024, 8, 4096), (8, 40, 40)];
    for kernel in families() {
        for (shape, perm) in &cases {
            for &(tile, tile_b, group) in &tunings {
                for (i, order) in [vlkernels::BlockOrder::SrcFastest, vlkernels::BlockOrder::DstFastest]
                    .into_iter()
                    .enumerate()
                {
                    let t = vlkernels::Tuning {
                        tile,
                        tile_b,
                        group,
                        block_order: order,
                        non_temporal: i == 0,
                        threads: 1 + i,
                    };
                    let opts = PermuteOptions::default().with_kernel(kernel);
                    for (es, seed) in [(4, 3), (2, 4), (8, 5)] {
                        check_tuned(shape, perm, es, &opts, Some(&t), seed);
                    }
                }
            }
        }
    }
    // A cache written before `tile_b` existed reads it as 0: the square tile.
    let plan = PermutePlan::new(&[64, 64], &[1, 0], 4, &PermuteOptions::default()).unwrap();
    let mut t = plan.tuning();
    t.tile = 16;
    t.tile_b = 0;
    assert_eq!(plan.with_tuning(&t).unwrap().tuning().tile_b, 16);
}

#[test]
fn carried_lines_at_unaligned_destination_rows() {
    // Streaming stores walking along the destination: each destination row's partial last
    // line waits for the row's next piece. Rows start at every offset inside a line, the
    // last piece of a row may be shorter than the rest of its line, and worker ranges
    // split rows (the carry is then written with ordinary stores).
    let mut cases = odd_tile_cases();
    cases.push((vec![61, 9, 13, 11], vec![3, 2, 1, 0]));
    // (tile, tile_b): pieces of one line up to many, and pieces too short to carry.
    let tunings = [(40usize, 16usize), (24, 24), (512, 64), (8, 40), (64, 8)];
    for (shape, perm) in &cases {
        for &(tile, tile_b) in &tunings {
            for threads in 1..=3 {
                let t = dst_fastest(true, tile, tile_b, threads);
                let opts = PermuteOptions::default();
                for (es, seed) in [(1, 6), (2, 7), (4, 8), (8, 9), (16, 10)] {
                    check_tuned(shape, perm, es, &opts, Some(&t), seed);
                }
            }
        }
    }
}

#[test]
fn streaming_sizes_choose_stores_by_destination_alignment() {
    // Outputs of 32 MiB and more stream their stores. Transposes whose destination rows
    // start inside cache lines walk along the destination; they stream (carrying partial
    // lines) only when the rows are long and the source group is shorter than a tile, on
    // several threads, with 8-byte elements or with groups of 32 elements and more.
    // Source groups that fill a tile, groups under 32 elements of 1- to 4-byte elements on
    // one thread, and short rows keep ordinary stores. All are checked in full.
    let opts = PermuteOptions::default().with_threads(2);
    let aligned = PermutePlan::new(&[64, 64, 48, 64], &[3, 2, 1, 0], 4, &opts).unwrap();
    assert!(aligned.non_temporal(), "{}", aligned.describe());
    // A 128-element source group (tiles grown along the destination) streams.
    let unaligned = PermutePlan::new(&[75, 43, 31, 128], &[3, 0, 2, 1], 4, &opts).unwrap();
    assert!(unaligned.non_temporal(), "{}", unaligned.describe());
    assert_eq!(unaligned.tuning().block_order, vlkernels::BlockOrder::DstFastest);
    assert!(matches!(
        unaligned.strategy(),
        vlkernels::permute::Strategy::Transpose { .. }
    ));
    let one = opts.clone().with_threads(1);
    let unaligned_one = PermutePlan::new(&[75, 43, 31, 128], &[3, 0, 2, 1], 4, &one).unwrap();
    assert!(unaligned_one.non_temporal(), "{}", unaligned_one.describe());
    // A 13-element group (42 MB) keeps ordinary stores on one thread, streams on two.
    let thirteen = PermutePlan::new(&[1913, 422, 13], &[2, 0, 1], 4, &one).unwrap();
    assert!(!thirteen.non_temporal(), "{}", thirteen.describe());
    let thirteen_two = PermutePlan::new(&[1913, 422, 13], &[2, 0, 1], 4, &opts).unwrap();
    assert!(thirteen_two.non_temporal(), "{}", thirteen_two.describe());
    // A 3591-element source group (57 × 63) fills a tile: ordinary stores on any threads.
    for (es, o) in [(4, &opts), (8, &opts), (8, &one)] {
        let long_source = PermutePlan::new(&[61, 59, 63, 57], &[3, 2, 1, 0], es, o).unwrap();
        assert!(!long_source.non_temporal(), "{}", long_source.describe());
        assert_eq!(long_source.tuning().block_order, vlkernels::BlockOrder::DstFastest);
    }
    // A 43-element source group (tiles grown along the destination) streams on one thread.
    let short_source_f64 = PermutePlan::new(&[38, 66, 65, 43], &[3, 1, 2, 0], 8, &one).unwrap();
    assert!(short_source_f64.non_temporal(), "{}", short_source_f64.describe());
    // Short destination rows (41 f64, 328 bytes) keep ordinary stores.
    let short_rows = PermutePlan::new(&[41, 33, 49, 111], &[1, 2, 3, 0], 8, &opts).unwrap();
    assert!(!short_rows.non_temporal(), "{}", short_rows.describe());
    check_case(&[75, 43, 31, 128], &[3, 0, 2, 1], 4, &one, 24);
    check_case(&[61, 59, 63, 57], &[3, 2, 1, 0], 8, &one, 25);
    check_case(&[38, 66, 65, 43], &[3, 1, 2, 0], 8, &one, 26);
    // Asking for streaming stores explicitly is obeyed.
    let forced = PermutePlan::new(
        &[61, 59, 63, 57],
        &[3, 2, 1, 0],
        4,
        &opts.clone().with_non_temporal(NonTemporal::On),
    );
    assert!(forced.unwrap().non_temporal());
    check_case(&[64, 64, 48, 64], &[3, 2, 1, 0], 4, &opts, 21);
    check_case(&[61, 59, 63, 57], &[3, 2, 1, 0], 4, &opts, 22);
    check_case(&[75, 43, 31, 128], &[3, 0, 2, 1], 4, &opts, 27);
    // Runs are streamed only when they are whole lines at line-aligned places.
    let runs_aligned = PermutePlan::new(&[96, 75, 16, 80], &[2, 1, 0, 3], 4, &opts).unwrap();
    assert_eq!(runs_aligned.strategy(), &vlkernels::permute::Strategy::Runs);
    assert!(runs_aligned.non_temporal(), "{}", runs_aligned.describe());
    let runs_odd = PermutePlan::new(&[350, 16, 16, 5, 19], &[1, 3, 2, 0, 4], 4, &opts).unwrap();
    assert_eq!(runs_odd.strategy(), &vlkernels::permute::Strategy::Runs);
    assert!(!runs_odd.non_temporal(), "{}", runs_odd.describe());
    check_case(&[350, 16, 16, 5, 19], &[1, 3, 2, 0, 4], 4, &opts, 23);
}

#[test]
fn tiles_grown_along_the_destination_stream_from_16_mib() {
    // A source group of 32 elements to half a tile grows its tiles along the
    // destination; such transposes stage and stream from 16 MiB of output (below the
    // 32 MiB of the rest), unless their destination rows are short and unaligned.
    let plan = |shape: &[usize], es: usize, threads: usize| {
        PermutePlan::new(shape, &[2, 0, 1], es, &PermuteOptions::default().with_threads(threads)).unwrap()
    };
    for threads in [1, 2] {
        for (shape, es) in [
            (&[45usize, 422, 279][..], 4),
            (&[178, 422, 279][..], 1),
            (&[213, 422, 117][..], 2),
        ] {
            let p = plan(shape, es, threads);
            assert!(p.non_temporal() && p.staged_tiles(), "{shape:?}: {}", p.describe());
        }
        // 4 MiB: ordinary stores, in place.
        let small = plan(&[9, 422, 279], 4, threads);
        assert!(!small.non_temporal() && !small.staged_tiles(), "{}", small.describe());
        // A 13-element group is mostly tile edge: in place below 32 MiB.
        let thirteen = plan(&[957, 422, 13], 4, threads);
        assert!(!thirteen.non_temporal(), "{}", thirteen.describe());
        // Tiles that fill the source side (a 1000-element group) wait for 32 MiB.
        let long = plan(&[6, 1000, 1000], 4, threads);
        assert!(!long.non_temporal(), "{}", long.describe());
    }
    for threads in [1, 2] {
        let opts = PermuteOptions::default().with_threads(threads);
        check_case(&[45, 422, 279], &[2, 0, 1], 4, &opts, 91);
        check_case(&[178, 422, 279], &[2, 0, 1], 1, &opts, 92);
        check_case(&[213, 422, 117], &[2, 0, 1], 2, &opts, 93);
    }
}

#[test]
fn streamed_tiles_of_whole_blocks_go_through_a_block_ordered_stage() {
    // Streamed tiles made of whole micro-kernel blocks, with more rows than L1
    // holds, are staged block by block and gathered row by row on the way out:
    // straight into 32-byte-aligned rows, through a row buffer into others, and
    // through the carried lines when the walk follows the destination; tiles
    // with partial blocks keep the row-ordered stage, and so do tiles staged for
    // aliasing rows without streaming stores (cases flagged `true`: tuned to tiles
    // of 1024 × 64 without streaming stores). Every element size, one- and
    // multi-axis groups (row tables), destinations at a page boundary and 8 or 16
    // bytes past one, 1 and 2 threads, poisoned output against the reference.
    let cases: [(&[usize], &[usize], usize, bool); 8] = [
        (&[3072, 3004], &[1, 0], 4, false), // the last tile column has a partial block
        (&[4096, 4160], &[1, 0], 2, false),
        (&[6144, 6144], &[1, 0], 1, false),
        (&[2048, 2112], &[1, 0], 8, false),
        (&[40, 30, 24, 8, 40], &[4, 3, 2, 1, 0], 4, false),
        (&[48, 40, 64, 80], &[3, 2, 1, 0], 4, false),
        (&[64, 36, 48, 64], &[3, 1, 2, 0], 4, false), // walks the destination: carried lines
        (&[2048, 2048], &[1, 0], 4, true),            // rows a page apart: ordinary stores
    ];
    for (i, (shape, perm, es, ordinary)) in cases.iter().enumerate() {
        let len = shape.iter().product::<usize>() * es;
        let src = random_bytes(len, 300 + i as u64);
        let expect = reference_bytes(&src, shape, perm, *es);
        let mut dst = vlkernels::buffer::huge_page_buffer(len + 64);
        for threads in [1, 2] {
            let opts = PermuteOptions::default().with_threads(threads);
            let mut plan = PermutePlan::new(shape, perm, *es, &opts).unwrap();
            // Streamed transposes with a banded form default to line bands
            // (tested in `line_bands_match_the_reference`); this test asks for tiles.
            if plan.tuning().block_order.banded() {
                let mut t = plan.tuning();
                t.block_order = vlkernels::BlockOrder::SrcFastest;
                plan = plan.with_tuning(&t).unwrap();
            }
            if *ordinary {
                let mut t = plan.tuning();
                (t.tile, t.tile_b, t.non_temporal) = (1024, 64, false);
                plan = plan.with_tuning(&t).unwrap();
            }
            assert_eq!(plan.non_temporal(), !ordinary, "{shape:?}: {}", plan.describe());
            assert!(plan.staged_tiles(), "{shape:?}: {}", plan.describe());
            for offset in [0, 16, 8] {
                let what = format!("{shape:?} {perm:?} es {es}, {threads} thread(s), offset {offset}");
                check_into(&plan, &src, &expect, &mut dst, offset, &what);
            }
        }
    }
}

#[test]
fn line_bands_match_the_reference() {
    // Streamed transposes with destination rows whole lines apart run as line
    // bands: every element size, one- and multi-axis groups, one line per row,
    // 512 bytes per row (rows a multiple of 512 bytes apart), whole short rows,
    // prefetched short source rows (in bands of up to 4 lines), a head strip
    // (destinations 16, 8, 4, 2 bytes past a line), a tail strip and a short
    // last band of whole lines, source
    // groups that end inside a kernel block, a destination at an odd byte (the
    // staged tiles take over), 1-3 threads, every kernel family here, poisoned
    // output against the reference.
    /// Shape, permutation, element size, and the band's lines per row, prefetch
    /// and walk (across: every band of a chunk before the next chunk).
    type BandCase<'a> = (&'a [usize], &'a [usize], usize, usize, bool, bool);
    let cases: [BandCase; 18] = [
        (&[208, 333], &[1, 0], 4, 1, true, false),
        (&[384, 300], &[1, 0], 4, 8, false, false), // taller bands are not prefetched
        (&[20, 96, 90], &[0, 2, 1], 4, 6, false, false), // whole 384-byte rows
        (&[3, 8, 4, 40, 72], &[2, 0, 4, 1, 3], 4, 1, true, false), // two-axis destination group
        (&[6, 8, 4, 8, 144], &[2, 0, 4, 1, 3], 2, 2, true, false),
        (&[16, 6, 8, 3, 50], &[4, 3, 2, 1, 0], 4, 8, false, false), // four-axis source group
        (&[256, 1000], &[1, 0], 1, 1, true, false),
        (&[1024, 600], &[1, 0], 1, 2, true, false),
        (&[64, 333], &[1, 0], 8, 8, false, false),
        (&[48, 101], &[1, 0], 16, 1, true, false),
        (&[96, 517], &[1, 0], 2, 1, true, false),
        // Source rows of one chunk stay along, whatever their destination.
        (&[384, 5, 130], &[2, 1, 0], 4, 8, false, false),
        // Walked across: rows of at least 1536 bytes that the source's stride-1
        // axis does not walk in order, from source rows longer than a chunk
        // walked along (the last chunk ending inside a kernel block), and
        // 384-byte rows no two of which share a chunk walked along.
        (&[384, 3, 1402], &[2, 1, 0], 4, 8, false, true),
        (&[96, 3, 180, 24], &[3, 2, 1, 0], 4, 8, false, true),
        (&[800, 2, 4200], &[2, 1, 0], 2, 1, false, true),
        (&[1536, 2, 8200], &[2, 1, 0], 1, 2, false, true),
        (&[200, 3, 700], &[2, 1, 0], 8, 1, false, true),
        (&[100, 3, 350], &[2, 1, 0], 16, 1, false, true),
    ];
    for (i, &(shape, perm, es, lines, prefetch, across)) in cases.iter().enumerate() {
        let len = shape.iter().product::<usize>() * es;
        let src = random_bytes(len, 700 + i as u64);
        let expect = reference_bytes(&src, shape, perm, es);
        let mut dst = vec![0u8; len + 128];
        let base = dst.as_ptr().align_offset(64);
        for kernel in families() {
            for threads in [1, 2, 3] {
                let opts = PermuteOptions::default()
                    .with_threads(threads)
                    .with_kernel(kernel)
                    .with_non_temporal(NonTemporal::On);
                let plan = PermutePlan::new(shape, perm, es, &opts).unwrap();
                let described = plan.describe();
                if kernel == KernelFamily::Auto {
                    let want = format!("lines={lines} prefetch={prefetch} across={across})");
                    assert!(
                        described.contains(&want),
                        "{shape:?} {perm:?} es {es}: want {want}: {described}"
                    );
                    assert!(!plan.staged_tiles(), "{described}");
                    // AVX2 streams the bands from registers but for bytes.
                    if described.contains("kernel=avx2") {
                        let via = if es == 1 { "via=l1-block" } else { "via=registers" };
                        assert!(described.contains(via), "{described}");
                    }
                }
                for offset in [0, 16, 8, 4, 2, 1] {
                    let what = format!("{shape:?} {perm:?} es {es} {kernel:?}, {threads} thread(s), offset {offset}");
                    check_into(&plan, &src, &expect, &mut dst, base + offset, &what);
                }
            }
        }
    }
    // Either walk asked for through the tuning, against the planner's choice.
    for (i, &(shape, perm, es, ..)) in [cases[1], cases[11], cases[12], cases[14]].iter().enumerate() {
        let len = shape.iter().product::<usize>() * es;
        let src = random_bytes(len, 800 + i as u64);
        let expect = reference_bytes(&src, shape, perm, es);
        let opts = PermuteOptions::default()
            .with_threads(2)
            .with_non_temporal(NonTemporal::On);
        let plan = PermutePlan::new(shape, perm, es, &opts).unwrap();
        for (walk, across) in [(BlockOrder::BandsAlong, false), (BlockOrder::BandsAcross, true)] {
            let mut t = plan.tuning();
            t.block_order = walk;
            let forced = plan.with_tuning(&t).unwrap();
            let described = forced.describe();
            assert!(described.contains(&format!("across={across})")), "{described}");
            let mut dst = vec![POISON; len];
            forced.execute_bytes(&src, &mut dst).unwrap();
            assert!(dst == expect, "{shape:?} {perm:?} es {es} {walk:?}: {described}");
        }
    }
    // The default plan prefers bands except for rows a whole number of pages apart.
    let streamed = PermuteOptions::default()
        .with_threads(1)
        .with_non_temporal(NonTemporal::On);
    let order = |shape: &[usize]| {
        PermutePlan::new(shape, &[1, 0], 4, &streamed)
            .unwrap()
            .tuning()
            .block_order
    };
    assert_eq!(order(&[2064, 2048]), vlkernels::BlockOrder::Bands);
    assert_eq!(order(&[2048, 2048]), vlkernels::BlockOrder::SrcFastest);
    // Without streaming stores a plan asked for bands runs its tiles in place.
    let plan = PermutePlan::new(&[208, 333], &[1, 0], 4, &streamed).unwrap();
    let mut t = plan.tuning();
    t.non_temporal = false;
    assert!(!plan.with_tuning(&t).unwrap().describe().contains("bands("));
}

#[test]
fn short_isolated_rows_keep_ordinary_stores() {
    // A streamed reversal whose 128-byte destination rows lie apart (no two of
    // them written by one chunk of a band are neighbours) runs tiles walked
    // along the destination with ordinary stores where its bands would go
    // through an L1 block (the portable family), and as bands where they go
    // straight from registers (AVX2); asked for streaming stores, it runs as
    // bands; rows of 512 bytes (16-byte elements) keep the bands.
    let (shape, perm) = ([32usize, 60, 41, 112], [3usize, 2, 1, 0]);
    let opts = PermuteOptions::default().with_threads(1);
    let portable = PermutePlan::new(&shape, &perm, 4, &opts.clone().with_kernel(KernelFamily::Portable)).unwrap();
    let t = portable.tuning();
    assert!(
        !t.non_temporal && t.block_order == BlockOrder::DstFastest,
        "{}",
        portable.describe()
    );
    let plan = PermutePlan::new(&shape, &perm, 4, &opts).unwrap();
    if plan.describe().contains("kernel=avx2") {
        assert!(plan.describe().contains("via=registers"), "{}", plan.describe());
    }
    for plan in [&portable, &plan] {
        let len = shape.iter().product::<usize>() * 4;
        let src = random_bytes(len, 901);
        let expect = reference_bytes(&src, &shape, &perm, 4);
        let mut dst = vec![POISON; len];
        plan.execute_bytes(&src, &mut dst).unwrap();
        assert!(dst == expect, "{}", plan.describe());
    }
    let streamed = PermutePlan::new(&shape, &perm, 4, &opts.clone().with_non_temporal(NonTemporal::On)).unwrap();
    assert!(streamed.describe().contains("bands("), "{}", streamed.describe());
    let wide = PermutePlan::new(&[32, 15, 41, 112], &perm, 16, &opts).unwrap();
    assert!(
        wide.non_temporal() && wide.describe().contains("bands("),
        "{}",
        wide.describe()
    );
}

#[test]
fn whole_line_runs_stream_line_by_line() {
    // Streamed runs of whole lines (16 f32, 32 bf16) into line-aligned rows go
    // out line by line; other destinations fall back to ordinary stores.
    for (shape, perm, es) in [
        (vec![6, 5, 7, 16], vec![2, 1, 0, 3], 4),
        (vec![5, 9, 4, 64], vec![1, 2, 0, 3], 2),
        (vec![7, 3, 11, 48], vec![2, 0, 1, 3], 4),
    ] {
        let len = shape.iter().product::<usize>() * es;
        let src = random_bytes(len, 800 + len as u64);
        let expect = reference_bytes(&src, &shape, &perm, es);
        let mut dst = vec![0u8; len + 128];
        let base = dst.as_ptr().align_offset(64);
        for threads in [1, 2] {
            let opts = PermuteOptions::default()
                .with_threads(threads)
                .with_non_temporal(NonTemporal::On);
            let plan = PermutePlan::new(&shape, &perm, es, &opts).unwrap();
            assert_eq!(
                plan.strategy(),
                &vlkernels::permute::Strategy::Runs,
                "{}",
                plan.describe()
            );
            for offset in [0, 16, 4] {
                check_into(
                    &plan,
                    &src,
                    &expect,
                    &mut dst,
                    base + offset,
                    &format!("{shape:?} {perm:?}, offset {offset}"),
                );
            }
        }
    }
}

#[test]
fn streamed_runs_follow_the_source() {
    // Runs of whole lines streamed into a line-aligned destination are walked along
    // the source: a few source rows at once (8 for runs up to 256 bytes, 4 for 512,
    // 1 from 2 KiB), each along its whole chain of axes. Blocks of source rows end
    // short, chains span two axes or outrun one table of offsets (1024 runs), outer
    // axes sit between; 1-3 threads; 16 bytes past a line the blocked walk of
    // ordinary stores takes over. Poisoned output against the reference.
    let cases: [(&[usize], &[usize], usize); 9] = [
        (&[37, 11, 16], &[1, 0, 2], 4),            // 64-byte runs, 8 rows, last block of 5
        (&[13, 1100, 32], &[1, 0, 2], 4),          // chain of 1100 runs: two tables
        (&[5, 3, 7, 9, 256], &[3, 1, 0, 2, 4], 2), // 512-byte runs, 4 rows of 7, outer axes
        (&[3, 4, 2048], &[1, 0, 2], 4),            // 8 KiB runs, one row at a time
        (&[7, 4, 3, 16], &[2, 1, 0, 3], 8),        // chain through two axes
        (&[11, 6, 5, 16], &[2, 1, 0, 3], 4),
        (&[9, 10, 32], &[1, 0, 2], 2),
        (&[5, 7, 4], &[1, 0, 2], 16),
        (&[20, 9, 192], &[1, 0, 2], 1),
    ];
    for (i, &(shape, perm, es)) in cases.iter().enumerate() {
        let len = shape.iter().product::<usize>() * es;
        let src = random_bytes(len, 900 + i as u64);
        let expect = reference_bytes(&src, shape, perm, es);
        let mut dst = vec![0u8; len + 128];
        let base = dst.as_ptr().align_offset(64);
        for threads in [1, 2, 3] {
            let opts = PermuteOptions::default()
                .with_threads(threads)
                .with_non_temporal(NonTemporal::On);
            let plan = PermutePlan::new(shape, perm, es, &opts).unwrap();
            assert_eq!(
                plan.strategy(),
                &vlkernels::permute::Strategy::Runs,
                "{}",
                plan.describe()
            );
            for offset in [0, 16] {
                let what = format!("{shape:?} {perm:?} es {es}, {threads} thread(s), offset {offset}");
                check_into(&plan, &src, &expect, &mut dst, base + offset, &what);
            }
        }
    }
}

#[test]
fn channel_strips_match_the_reference() {
    // A transpose with 2-4 channels interleaved on one side runs the small-extent
    // kernels in strips along the pixels: both directions (HWC→CHW splits, CHW→HWC
    // merges), every element size with such kernels, pixel counts around the kernel
    // block (0, 1, 31, 32, 33, ...) and past one work item (256 blocks), a batch axis
    // outside, 1-3 threads, every store choice; poisoned output against the reference.
    // Families without such kernels (portable) keep tiles.
    // Shape, permutation, pixels per batch item.
    let mut cases: Vec<(Vec<usize>, Vec<usize>, usize)> = Vec::new();
    for ch in [2usize, 3, 4] {
        for (h, w) in [
            (0usize, 7usize),
            (1, 1),
            (1, 31),
            (4, 8),
            (1, 33),
            (3, 41),
            (67, 131),
            (5, 4099),
        ] {
            cases.push((vec![h, w, ch], vec![2, 0, 1], h * w));
            cases.push((vec![ch, h, w], vec![1, 2, 0], h * w));
        }
        cases.push((vec![3, 17, 29, ch], vec![0, 3, 1, 2], 17 * 29)); // batch of HWC → CHW
        cases.push((vec![3, ch, 17, 29], vec![0, 2, 3, 1], 17 * 29));
    }
    for (i, (shape, perm, pixels)) in cases.iter().enumerate() {
        for es in [1usize, 2, 4, 8, 16] {
            for kernel in families() {
                let opts = PermuteOptions::default().with_kernel(kernel);
                let plan = PermutePlan::new(shape, perm, es, &opts).unwrap();
                let simd = !matches!(kernel, KernelFamily::Scalar | KernelFamily::Portable);
                // A register block holds at most 64 pixels.
                let strips = plan.describe().contains(" strips(channels=");
                if simd && es <= 8 && *pixels >= 64 {
                    assert!(strips, "{}", plan.describe());
                } else if !simd {
                    assert!(!strips, "{}", plan.describe());
                }
                for (threads, nt) in [(1, NonTemporal::Auto), (2, NonTemporal::On), (3, NonTemporal::Off)] {
                    let opts = opts.clone().with_threads(threads).with_non_temporal(nt);
                    check_case(shape, perm, es, &opts, 1000 + i as u64);
                }
            }
        }
    }
}

#[test]
fn aliasing_destination_rows_are_staged_and_copied_whole() {
    // Destination rows a multiple of 1 KiB apart (a page apart, or any multiple
    // while the problem sits in cache) are built in a staging buffer and copied out
    // with ordinary stores; short groups, other strides and large problems with
    // sub-page strides are written in place.
    let one = PermuteOptions::default().with_threads(1);
    let plan = |shape: &[usize], perm: &[usize], es: usize| PermutePlan::new(shape, perm, es, &one).unwrap();
    for (shape, perm, es, staged) in [
        (vec![256, 300], vec![1, 0], 4, true),          // 1 KiB stride, in cache
        (vec![2048, 2048], vec![1, 0], 4, true),        // a page apart, 16 MiB
        (vec![300, 256], vec![1, 0], 4, false),         // 1200-byte stride
        (vec![16, 512, 512], vec![0, 2, 1], 4, false),  // 2 KiB stride, 16 MiB
        (vec![1024, 1024, 3], vec![2, 0, 1], 1, false), // three rows only
    ] {
        let p = plan(&shape, &perm, es);
        assert!(!p.non_temporal(), "{}", p.describe());
        assert_eq!(p.staged_tiles(), staged, "{}", p.describe());
        if staged {
            assert_eq!(p.tuning().tile, 128, "{}", p.describe());
        }
    }
    // Every element size, tile edges on both sides, a two-axis source group, and
    // tiles from a few rows to whole groups, on 1-3 threads, against the reference.
    let cases: [(Vec<usize>, Vec<usize>, usize); 6] = [
        (vec![256, 300], vec![1, 0], 4),
        (vec![1024, 77], vec![1, 0], 4),
        (vec![512, 203], vec![1, 0], 2),
        (vec![1024, 45], vec![1, 0], 1),
        (vec![128, 99], vec![1, 0], 8),
        (vec![4, 256, 5, 7], vec![0, 2, 3, 1], 4),
    ];
    for (shape, perm, es) in &cases {
        let p = plan(shape, perm, *es);
        assert!(p.staged_tiles(), "{}", p.describe());
        for threads in 1..=3 {
            let opts = PermuteOptions::default().with_threads(threads);
            check_case(shape, perm, *es, &opts, 31);
            for (tile, tile_b) in [(16usize, 16usize), (40, 24), (128, 64), (1024, 8)] {
                let t = dst_fastest(false, tile, tile_b, threads);
                check_tuned(shape, perm, *es, &opts, Some(&t), 32);
            }
        }
    }
    check_case(&[64, 100], &[1, 0], 16, &one, 33);
}

#[test]
fn problems_under_a_mebibyte_run_on_one_thread_unless_asked() {
    let auto = PermuteOptions::default();
    let small = PermutePlan::new(&[1, 256, 16, 64], &[0, 2, 1, 3], 2, &auto).unwrap();
    assert_eq!(small.threads(), 1, "{}", small.describe());
    let large = PermutePlan::new(&[1, 1024, 16, 64], &[0, 2, 1, 3], 2, &auto).unwrap();
    assert_eq!(large.threads(), rayon::current_num_threads(), "{}", large.describe());
    let asked = PermutePlan::new(&[1, 256, 16, 64], &[0, 2, 1, 3], 2, &auto.with_threads(2)).unwrap();
    assert_eq!(asked.threads(), 2);
}

#[test]
fn tiles_of_whole_destination_rows_walk_the_destination() {
    // NCHW→NHWC-like problems whose tile covers whole destination rows (written
    // in place, rows back to back) are walked destination block by destination
    // block; partial blocks on both sides, every element size, 1-3 threads, and
    // source rows a page apart (which keep the source-pass walk).
    let cases: [(Vec<usize>, usize); 7] = [
        (vec![2, 16, 7, 7], 4),
        (vec![1, 64, 9, 11], 4),
        (vec![1, 24, 10, 10], 2),
        (vec![1, 64, 13, 5], 1),
        (vec![1, 8, 9, 9], 8),
        (vec![1, 4, 5, 7], 16),
        (vec![2, 32, 32, 32], 4),
    ];
    for (shape, es) in &cases {
        for threads in 1..=3 {
            let opts = PermuteOptions::default().with_threads(threads);
            check_case(shape, &[0, 2, 3, 1], *es, &opts, 41);
            for (tile, tile_b) in [(40usize, 64usize), (8, 128), (1024, 64)] {
                let t = dst_fastest(false, tile, tile_b, threads);
                check_tuned(shape, &[0, 2, 3, 1], *es, &opts, Some(&t), 42);
            }
        }
    }
}

#[test]
fn short_destination_rows_get_tiles_of_four_sides() {
    // CHW→HWC: three-element destination rows; the tile grows along the source
    // to 4 × 1024 elements (16 × measured up to 1.4× slower), and stays correct.
    let one = PermuteOptions::default().with_threads(1);
    let p = PermutePlan::new(&[3, 448, 448], &[1, 2, 0], 1, &one).unwrap();
    match p.strategy() {
        vlkernels::permute::Strategy::Transpose { tile_a, tile_b, .. } => {
            assert_eq!((*tile_a, *tile_b), (4096, 3), "{}", p.describe())
        }
        other => panic!("CHW→HWC planned as {other:?}"),
    }
    for es in [1, 2, 4] {
        check_case(&[3, 45, 401], &[1, 2, 0], es, &one, 51);
    }
}

#[test]
fn blocked_runs_at_block_edges() {
    // Runs problems whose destination-next axis is far apart in the source are walked in
    // blocks of runs (about 32 KiB) against the axes that continue the source's chain:
    // extents around the block side (sqrt(32 KiB / run bytes)) leave partial blocks on both
    // blocked sides, and outer axes sit between them.
    let cases: Vec<(Vec<usize>, Vec<usize>, usize)> = vec![
        (vec![131, 70, 5], vec![1, 0, 2], 4),       // 20-byte runs: side 40
        (vec![41, 3, 39, 8], vec![2, 1, 0, 3], 4),  // 32-byte runs: side 32
        (vec![17, 5, 16, 33], vec![1, 2, 0, 3], 8), // 264-byte runs: side 11
        (vec![9, 12, 13, 11, 3], vec![3, 1, 0, 2, 4], 2),
        (vec![65, 66, 1030], vec![1, 0, 2], 1), // runs too long to block
        // Patchify: the runs continue the source through two axes (a chain of 2 × 7).
        (vec![1, 2, 3, 7, 2, 14, 5, 2, 14], vec![0, 3, 6, 4, 7, 2, 1, 5, 8], 4),
    ];
    for kernel in families() {
        for (shape, perm, es) in &cases {
            for (threads, nt) in [(1, NonTemporal::Off), (2, NonTemporal::On), (3, NonTemporal::Off)] {
                let opts = PermuteOptions::default()
                    .with_threads(threads)
                    .with_kernel(kernel)
                    .with_non_temporal(nt);
                check_case(shape, perm, *es, &opts, 7);
            }
        }
    }
}

#[test]
fn staged_runs_at_patchify_shapes() {
    // Short runs whose destination slab is fed by long source stretches (ViT patchify,
    // outputs of 8 MiB and more) are gathered slab by slab through a stage. Odd grids,
    // runs of 56 B (f32 × 14), 32 B (bf16 × 16) and 100 B (no fixed-length copier).
    let cases: Vec<(Vec<usize>, usize)> = vec![
        (vec![1, 2, 3, 13, 2, 14, 37, 2, 14], 4),
        (vec![1, 2, 3, 21, 2, 16, 33, 2, 16], 2),
        (vec![1, 2, 3, 12, 2, 25, 12, 2, 25], 4),
    ];
    let perm = [0, 3, 6, 4, 7, 2, 1, 5, 8];
    for (shape, es) in &cases {
        let plan = PermutePlan::new(shape, &perm, *es, &PermuteOptions::default()).unwrap();
        assert!(
            matches!(plan.strategy(), vlkernels::permute::Strategy::StagedRuns { split: 1 }),
            "{}",
            plan.describe()
        );
        assert!(plan.non_temporal(), "{}", plan.describe());
        for (threads, nt) in [(1, NonTemporal::Auto), (2, NonTemporal::Off), (3, NonTemporal::On)] {
            let opts = PermuteOptions::default().with_threads(threads).with_non_temporal(nt);
            check_case(shape, &perm, *es, &opts, 11);
        }
    }
    // Below 8 MiB the same shape keeps blocks of runs.
    let small = PermutePlan::new(&[1, 2, 3, 5, 2, 14, 7, 2, 14], &perm, 4, &PermuteOptions::default()).unwrap();
    assert_eq!(small.strategy(), &vlkernels::permute::Strategy::Runs);
}

#[test]
fn stream_copy_copies_every_byte_and_rejects_unequal_lengths() {
    // Odd lengths and offsets: unaligned heads and tails around the streamed body.
    let src = random_bytes(4096 + 77, 3);
    for (start, len) in [(0, 0), (1, 31), (3, 64), (5, 1000), (0, 4096 + 77)] {
        let mut dst = vec![POISON; len + 9];
        vlkernels::permute::stream_copy(&src[start..start + len], &mut dst[7..7 + len]).unwrap();
        vlkernels::permute::stream_fence();
        assert_eq!(&dst[7..7 + len], &src[start..start + len], "{start} {len}");
        assert!(dst[..7].iter().chain(&dst[7 + len..]).all(|&b| b == POISON));
    }
    let mut short = [0u8; 3];
    expect_err(
        vlkernels::permute::stream_copy(&[1, 2, 3, 4], &mut short),
        "4 bytes into 3 bytes",
    );
}

#[test]
fn small_innermost_extents() {
    // HWC→CHW with 3 channels, ViT patchify (14-pixel rows), all-2 reversals.
    let cases: Vec<(Vec<usize>, Vec<usize>, usize)> = vec![
        (vec![37, 41, 3], vec![2, 0, 1], 1),
        (vec![1, 2, 3, 5, 2, 14, 4, 2, 14], vec![0, 3, 6, 4, 7, 2, 1, 5, 8], 4),
        (vec![2; 12], (0..12).rev().collect(), 4),
        (vec![2; 10], vec![9, 0, 8, 1, 7, 2, 6, 3, 5, 4], 2),
        (vec![3, 5, 7, 11], vec![3, 2, 1, 0], 8),
        (vec![61, 59, 3, 5], vec![3, 2, 1, 0], 8),
    ];
    for kernel in families() {
        for (shape, perm, es) in &cases {
            for (threads, nt) in [(1, NonTemporal::Off), (2, NonTemporal::On), (5, NonTemporal::Off)] {
                let opts = PermuteOptions::default()
                    .with_threads(threads)
                    .with_kernel(kernel)
                    .with_non_temporal(nt);
                check_case(shape, perm, *es, &opts, 42);
            }
        }
    }
}

#[test]
fn groups_shorter_than_the_block_run_as_padded_blocks() {
    // A short destination group (rows of `n` elements, e.g. 13 bytes), a short source
    // group, both short, and a short group whose rows are back to back in the
    // destination: every length from 1 to past the widest block, every element size.
    let lengths = [1usize, 2, 3, 5, 7, 9, 13, 15, 16, 17, 24, 31, 33];
    for kernel in families() {
        for &n in &lengths {
            let cases: [(Vec<usize>, Vec<usize>); 4] = [
                (vec![n, 203], vec![1, 0]),
                (vec![203, n], vec![1, 0]),
                (vec![n, 3, n + 2], vec![2, 1, 0]),
                (vec![5, n, 37, 3], vec![0, 2, 3, 1]),
            ];
            for (i, (shape, perm)) in cases.iter().enumerate() {
                let nt = if i % 2 == 0 { NonTemporal::On } else { NonTemporal::Off };
                let opts = PermuteOptions::default()
                    .with_threads(1 + i % 2)
                    .with_kernel(kernel)
                    .with_non_temporal(nt);
                for es in [1, 2, 4, 8, 16] {
                    check_case(shape, perm, es, &opts, (n * 10 + i) as u64);
                }
            }
        }
    }
}

/// `len` readable bytes that end where an unreadable page begins, so that a load past
/// the last byte faults instead of passing unnoticed.
#[cfg(target_os = "linux")]
struct GuardedBytes {
    map: *mut libc::c_void,
    map_len: usize,
    page: usize,
    len: usize,
}

#[cfg(target_os = "linux")]
impl GuardedBytes {
    fn new(len: usize) -> Self {
        // SAFETY: sysconf only reads a system setting.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let body = len.div_ceil(page) * page;
        let map_len = body + page;
        // SAFETY: reserves `map_len` inaccessible bytes (checked below), then opens all
        // but the last page for reading and writing.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED, "mmap of {map_len} bytes failed");
        let open = unsafe { libc::mprotect(map, body, libc::PROT_READ | libc::PROT_WRITE) };
        assert_eq!(open, 0, "mprotect failed");
        GuardedBytes {
            map,
            map_len,
            page,
            len,
        }
    }

    fn bytes(&mut self) -> &mut [u8] {
        let body = self.map_len - self.page;
        // SAFETY: [body - len, body) lies inside the readable part of the mapping.
        unsafe { std::slice::from_raw_parts_mut((self.map as *mut u8).add(body - self.len), self.len) }
    }
}

#[cfg(target_os = "linux")]
impl Drop for GuardedBytes {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `new` with this length.
        unsafe { libc::munmap(self.map, self.map_len) };
    }
}

#[cfg(target_os = "linux")]
#[test]
fn short_source_rows_are_read_in_place_only_inside_the_source() {
    // Blocks shorter than the kernel along the source group read their rows in place
    // with the kernel's full-width loads while those stay inside the source, and copy
    // them otherwise. The source here ends at an unreadable page: the last rows must
    // take the copy, or the test faults. Every other byte is checked against the
    // element-by-element walk.
    for kernel in families() {
        for es in [1usize, 2, 4, 8, 16] {
            for (shape, perm) in [
                (vec![411usize, 13], vec![1usize, 0]),
                (vec![9, 37, 5], vec![2, 0, 1]),
                (vec![3, 301, 7], vec![2, 0, 1]),
                (vec![64, 3], vec![1, 0]),
            ] {
                let n: usize = shape.iter().product();
                let mut guarded = GuardedBytes::new(n * es);
                guarded.bytes().copy_from_slice(&random_bytes(n * es, (n + es) as u64));
                let opts = PermuteOptions::default().with_threads(1).with_kernel(kernel);
                let plan = PermutePlan::new(&shape, &perm, es, &opts).unwrap();
                let mut got = vec![POISON; n * es];
                plan.execute_bytes(guarded.bytes(), &mut got).unwrap();
                let naive =
                    PermutePlan::new(&shape, &perm, es, &opts.clone().with_kernel(KernelFamily::Scalar)).unwrap();
                let mut expect = vec![POISON; n * es];
                naive.execute_bytes(guarded.bytes(), &mut expect).unwrap();
                assert!(
                    got == expect,
                    "{shape:?} {perm:?} elem {es} {kernel:?}: {}",
                    plan.describe()
                );
            }
        }
    }
}

#[test]
fn a_short_source_group_takes_the_axis_that_continues_it() {
    // (17,15,9,11,8,5)→(5,0,3,4,1,2): the source's stride-1 axis has 5 elements and the
    // axis that continues it (88 = 11 × 8) is also the destination's second; the source
    // group takes it (5 × 88 by 135) rather than leaving 5-element tiles that are all edge.
    let shape = [17usize, 15, 9, 11, 8, 5];
    let perm = [5usize, 0, 3, 4, 1, 2];
    let plan = PermutePlan::new(&shape, &perm, 2, &PermuteOptions::default()).unwrap();
    match plan.strategy() {
        vlkernels::permute::Strategy::Transpose {
            src_group, dst_group, ..
        } => {
            assert_eq!((src_group.len(), dst_group.len()), (2, 1), "{}", plan.describe());
        }
        other => panic!("expected a transpose, got {other:?}"),
    }
    for (threads, nt) in [(1, NonTemporal::Off), (2, NonTemporal::On)] {
        let opts = PermuteOptions::default().with_threads(threads).with_non_temporal(nt);
        for es in [1, 2, 4, 8] {
            check_case(&shape, &perm, es, &opts, 61);
            check_case(&[31, 20, 28, 23, 8], &[4, 2, 0, 3, 1], es, &opts, 62);
        }
    }
}

#[test]
fn a_source_group_under_half_a_tile_takes_its_axis_back_from_long_destination_pieces() {
    // (53,54,189)→(2,1,0) u8: the source's 189-byte group continues into the 54-axis,
    // which the destination group took after the 53-axis. With 53 bytes kept the
    // destination group keeps both; with 538 (≥ 512 bytes) it hands the 54-axis back.
    let groups = |shape: &[usize], es: usize| match PermutePlan::new(shape, &[2, 1, 0], es, &PermuteOptions::default())
        .unwrap()
        .strategy()
    {
        vlkernels::permute::Strategy::Transpose {
            src_group, dst_group, ..
        } => (src_group.len(), dst_group.len()),
        other => panic!("expected a transpose, got {other:?}"),
    };
    assert_eq!(groups(&[538, 54, 189], 1), (2, 1));
    assert_eq!(groups(&[53, 54, 189], 1), (1, 2));
    // 999 elements is more than half a tile: no hand-back.
    assert_eq!(groups(&[165, 25, 999], 4), (1, 2));
    for threads in [1, 2] {
        for nt in [NonTemporal::Off, NonTemporal::On] {
            let opts = PermuteOptions::default().with_threads(threads).with_non_temporal(nt);
            check_case(&[538, 54, 189], &[2, 1, 0], 1, &opts, 63);
            check_case(&[53, 54, 189], &[2, 1, 0], 1, &opts, 64);
            check_case(&[166, 15, 166], &[2, 1, 0], 4, &opts, 65);
            check_case(&[133, 61, 229], &[2, 1, 0], 2, &opts, 66);
        }
    }
}

#[test]
fn one_thread_and_many_threads_give_identical_bytes() {
    let shape = [67usize, 45, 33, 5];
    let perm = [2usize, 0, 3, 1];
    let n: usize = shape.iter().product();
    let src = random_bytes(n * 4, 3);
    let mut outs = Vec::new();
    for threads in [1, 2, 3, 8] {
        let plan = PermutePlan::new(&shape, &perm, 4, &PermuteOptions::default().with_threads(threads)).unwrap();
        let mut dst = vec![POISON; n * 4];
        plan.execute_bytes(&src, &mut dst).unwrap();
        outs.push(dst);
    }
    assert!(outs.windows(2).all(|w| w[0] == w[1]));
    check_case(&shape, &perm, 4, &PermuteOptions::default().with_threads(8), 3);
}

#[test]
fn typed_api_for_every_element_type() {
    fn run<T: bytemuck::Pod + PartialEq + std::fmt::Debug>(make: impl Fn(usize) -> T) {
        let shape = [5usize, 7, 3];
        let perm = [2usize, 0, 1];
        let src: Vec<T> = (0..105).map(&make).collect();
        let mut dst = vec![make(9999); 105];
        permute(&src, &shape, &perm, &mut dst).unwrap();
        let expect = reference_permute(&src, &shape, &c_strides(&shape), &perm);
        assert_eq!(dst, expect);
    }
    run(|i| i as u8);
    run(|i| i as i8);
    run(|i| i as u16);
    run(|i| i as i16);
    run(|i| half::f16::from_f32(i as f32));
    run(|i| half::bf16::from_f32(i as f32));
    run(|i| i as u32);
    run(|i| i as i32);
    run(|i| i as f32);
    run(|i| i as u64);
    run(|i| i as i64);
    run(|i| i as f64);
    run(|i| [i as u64, !(i as u64)]);
}

#[test]
fn strided_sources() {
    // One head of a fused qkv tensor [N, 3, H, D]: view [N, H, D] at offset 0, strides [3HD, D, 1].
    let (n, h, d) = (37usize, 4usize, 24usize);
    let fused: Vec<f32> = (0..n * 3 * h * d).map(|i| i as f32).collect();
    for head_part in 0..3 {
        let view = &fused[head_part * h * d..];
        let strides = [3 * h * d, d, 1];
        for perm in [[1usize, 0, 2], [0, 2, 1], [2, 1, 0], [0, 1, 2]] {
            let mut dst = vec![f32::NAN; n * h * d];
            permute_strided(view, &[n, h, d], &strides, &perm, &mut dst).unwrap();
            let expect = reference_permute(view, &[n, h, d], &strides, &perm);
            assert_eq!(dst, expect, "perm {perm:?}");
        }
    }
    // No stride-1 axis at all (every other element), and a broadcast (stride 0) axis.
    let src: Vec<u16> = (0..400).collect();
    for (shape, strides, perm) in [
        (vec![10usize, 19], vec![38usize, 2], vec![1usize, 0]),
        (vec![10, 19], vec![38, 2], vec![0, 1]),
        (vec![6, 5, 7], vec![0, 7, 1], vec![2, 0, 1]),
    ] {
        let n: usize = shape.iter().product();
        let mut dst = vec![u16::MAX; n];
        permute_strided(&src, &shape, &strides, &perm, &mut dst).unwrap();
        assert_eq!(dst, reference_permute(&src, &shape, &strides, &perm));
    }
}

#[test]
fn zero_sized_axes_give_empty_output() {
    let src: Vec<f32> = vec![];
    let mut dst: Vec<f32> = vec![];
    permute(&src, &[3, 0, 5], &[2, 1, 0], &mut dst).unwrap();
    let plan = PermutePlan::new(&[3, 0, 5], &[2, 1, 0], 4, &PermuteOptions::default()).unwrap();
    assert_eq!(plan.out_shape(), vec![5, 0, 3]);
    assert_eq!(plan.numel(), 0);
    // Every kernel family, the naive walk included, moves nothing and returns.
    for kernel in families() {
        let plan = PermutePlan::new(
            &[3, 0, 5],
            &[2, 1, 0],
            4,
            &PermuteOptions::default().with_kernel(kernel),
        )
        .unwrap();
        plan.execute::<f32>(&[], &mut []).unwrap();
    }
}

#[test]
fn scalars_and_rank_16() {
    let mut dst = [0u32];
    permute(&[7u32], &[], &[], &mut dst).unwrap();
    assert_eq!(dst, [7]);
    let shape = [2usize, 1, 3, 1, 2, 2, 1, 3, 2, 1, 1, 2, 1, 1, 2, 1];
    let perm: Vec<usize> = vec![15, 3, 7, 0, 11, 2, 14, 9, 1, 5, 13, 4, 8, 12, 6, 10];
    check_case(&shape, &perm, 4, &PermuteOptions::default(), 5);
}

fn expect_err(r: Result<(), Error>, needle: &str) {
    match r {
        Err(e) => assert!(
            e.to_string().contains(needle),
            "error '{e}' does not mention '{needle}'"
        ),
        Ok(()) => panic!("expected an error mentioning '{needle}'"),
    }
}

#[test]
fn bad_input_is_an_error_naming_the_value() {
    let src = vec![0f32; 24];
    let mut dst = vec![0f32; 24];
    expect_err(permute(&src, &[2, 3, 4], &[0, 1], &mut dst), "[0, 1]");
    expect_err(permute(&src, &[2, 3, 4], &[0, 1, 1], &mut dst), "repeats axis 1");
    expect_err(permute(&src, &[2, 3, 4], &[0, 1, 3], &mut dst), "axis 3");
    expect_err(permute(&src, &[2, 3, 5], &[0, 1, 2], &mut dst), "shape [2, 3, 5]");
    let mut short = vec![0f32; 23];
    expect_err(permute(&src, &[2, 3, 4], &[2, 1, 0], &mut short), "23");
    let big = [usize::MAX / 2, 3];
    expect_err(permute(&src, &big, &[1, 0], &mut dst), "overflow");
    expect_err(
        permute_strided(&src, &[2, 3], &[12, 6], &[1, 0], &mut dst[..6]),
        "source holds",
    );
    expect_err(permute_strided(&src, &[2, 3], &[12], &[1, 0], &mut dst[..6]), "strides");
    let r = PermutePlan::new(&[2, 3], &[1, 0], 3, &PermuteOptions::default()).map(|_| ());
    expect_err(r, "element size 3");
    let r = PermutePlan::new(
        &vec![1; 65],
        &(0..65).collect::<Vec<_>>(),
        4,
        &PermuteOptions::default(),
    )
    .map(|_| ());
    expect_err(r, "rank 65");
    let plan = PermutePlan::new(&[2, 3], &[1, 0], 4, &PermuteOptions::default()).unwrap();
    expect_err(plan.execute(&[0u16; 6], &mut [0u16; 6]), "2 bytes");
    for f in [KernelFamily::Avx2, KernelFamily::Avx512, KernelFamily::Neon] {
        if !vlkernels::permute::kernels::available(f) {
            let r = PermutePlan::new(&[2, 3], &[1, 0], 4, &PermuteOptions::default().with_kernel(f)).map(|_| ());
            expect_err(r, f.name());
        }
    }
}

#[test]
fn tuned_plans_come_from_the_cache_and_stay_correct() {
    use vlkernels::permute::tune::{self, TuneCache};
    let dir = tempfile::tempdir().unwrap();
    // The only test that sets this variable; other tests never read the cache.
    std::env::set_var("VLK_TUNE_CACHE", dir.path().join("cache.json"));
    let (shape, perm) = ([67usize, 129], [1usize, 0]);
    let opts = PermuteOptions::default().with_threads(1);
    let mut cache = TuneCache::default();
    let mut calls = 0;
    let entry = tune::tune_problem(&shape, &perm, 4, &opts, 1, &mut cache, |_, _| calls += 1).unwrap();
    assert!(calls >= 10, "only {calls} candidates measured");
    // Store a deliberately unusual choice and check the tuned plan picks it up.
    let mut e = entry.clone();
    e.tuning.tile = 8;
    e.tuning.block_order = vlkernels::BlockOrder::SrcFastest;
    let key = cache.entries.keys().next().unwrap().clone();
    cache.entries.insert(key, e.clone());
    cache.save().unwrap();
    let plan = PermutePlan::new(&shape, &perm, 4, &opts.clone().with_tuned(true)).unwrap();
    assert_eq!(plan.tuning(), e.tuning);
    let untuned = PermutePlan::new(&shape, &perm, 4, &opts).unwrap();
    assert_ne!(untuned.tuning(), e.tuning);
    check_case(&shape, &perm, 4, &opts.clone().with_tuned(true), 11);
    // A corrupt cache is an error naming the file, not a panic.
    std::fs::write(dir.path().join("cache.json"), "{not json").unwrap();
    let r = PermutePlan::new(&shape, &perm, 4, &opts.with_tuned(true)).map(|_| ());
    expect_err(r, "cache.json");
    std::env::remove_var("VLK_TUNE_CACHE");
}
