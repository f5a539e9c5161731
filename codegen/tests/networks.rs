//! The interpreter, the ISA semantics and every emitted network (read back
//! from simd/networks.txt), on any host.

use vlkernels_codegen::isa::{Isa, IsaKind, Param};
use vlkernels_codegen::network::{execute, parse_listing, verify, Network, Problem, Rows, Step};
use vlkernels_codegen::{catalogue, square_problem, synth};

fn listing() -> Vec<(Problem, Network)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../simd/networks.txt");
    let text = std::fs::read_to_string(path).expect("simd/networks.txt (run vlk-codegen emit)");
    parse_listing(&text).expect("listing parses")
}

fn instr(isa: &Isa, name: &str) -> usize {
    isa.instrs
        .iter()
        .position(|i| i.name == name)
        .unwrap_or_else(|| panic!("{name} not in model"))
}

/// Runs one instruction on registers whose lanes are labelled 0.. and 100..
fn run1(kind: IsaKind, name: &str, param: Param, w: usize) -> Vec<u32> {
    let isa = Isa::new(kind);
    let lanes = (kind.vector_bits() / w) as u32;
    let a: Vec<u32> = (0..lanes).collect();
    let b: Vec<u32> = (0..lanes).map(|x| 100 + x).collect();
    let i = instr(&isa, name);
    let arity = isa.instrs[i].arity;
    let net = Network {
        n_inputs: 2,
        steps: vec![Step {
            instr: i,
            param,
            args: if arity == 1 { vec![0] } else { vec![0, 1] },
        }],
        outputs: vec![2],
        loads: vec![],
        stores: vec![],
    };
    execute(&isa, w, &net, &[a, b]).unwrap().remove(0)
}

#[test]
fn instruction_semantics_match_the_architecture_manuals() {
    use IsaKind::*;
    assert_eq!(
        run1(Avx2, "_mm256_unpacklo_epi32", Param::None, 32),
        [0, 100, 1, 101, 4, 104, 5, 105]
    );
    assert_eq!(run1(Avx2, "_mm256_unpackhi_epi64", Param::None, 64), [1, 101, 3, 103]);
    assert_eq!(
        run1(Avx2, "_mm256_shuffle_ps", Param::Imm(0x4e), 32),
        [2, 3, 100, 101, 6, 7, 104, 105]
    );
    assert_eq!(
        run1(Avx2, "_mm256_permute2x128_si256", Param::Imm(0x31), 64),
        [2, 3, 102, 103]
    );
    assert_eq!(
        run1(Avx2, "_mm256_permute4x64_epi64", Param::Imm(0xd8), 64),
        [0, 2, 1, 3]
    );
    assert_eq!(
        run1(Avx2, "_mm256_blend_epi32", Param::Imm(0b1010_0101), 32),
        [100, 1, 102, 3, 4, 105, 6, 107]
    );
    // A 32-bit unpack seen as 64-bit elements keeps pairs together; a byte one cannot.
    assert_eq!(
        run1(Avx2, "_mm256_unpacklo_epi64", Param::None, 32),
        [0, 1, 100, 101, 4, 5, 104, 105]
    );
    let isa = Isa::new(Avx2);
    let i = instr(&isa, "_mm256_unpacklo_epi8");
    assert!(isa.select_at(&isa.instrs[i], &Param::None, 16).is_none());
    assert_eq!(
        run1(Avx512, "_mm512_shuffle_i32x4", Param::Imm(0b01_00_11_10), 128),
        [2, 3, 100, 101]
    );
    assert_eq!(
        run1(
            Avx512,
            "_mm512_permutex2var_epi64",
            Param::Index(vec![0, 8, 1, 9, 15, 7, 3, 12]),
            64
        ),
        [0, 100, 1, 101, 107, 7, 3, 104]
    );
    assert_eq!(run1(Neon, "vtrn1q_u32", Param::None, 32), [0, 100, 2, 102]);
    assert_eq!(
        run1(Neon, "vzip2q_u16", Param::None, 16),
        [4, 104, 5, 105, 6, 106, 7, 107]
    );
    assert_eq!(run1(Neon, "vuzp1q_u64", Param::None, 64), [0, 100]);
    assert_eq!(run1(Neon, "vextq_u8", Param::Imm(4), 32), [1, 2, 3, 100]);
    let mut idx: Vec<u16> = (0..16).rev().collect();
    idx[0] = 200; // out of range: zero
    let t = run1(
        Neon,
        "vqtbl2q_u8",
        Param::Index(idx.iter().map(|&x| if x == 200 { 200 } else { x + 16 }).collect()),
        8,
    );
    assert_eq!(t[0], u32::MAX);
    assert_eq!(t[1], 114);
}

#[test]
fn every_emitted_network_verifies_under_its_isa_model() {
    let all = listing();
    assert!(all.len() >= 60, "only {} networks listed", all.len());
    for isa in IsaKind::ALL {
        assert!(all.iter().any(|(p, _)| p.isa == isa), "no {} networks", isa.name());
    }
    for (p, n) in &all {
        verify(p, n).unwrap_or_else(|e| panic!("{}: {e}", p.fn_name()));
    }
    // Every catalogue entry that has a network is in the listing, once.
    let names: Vec<String> = all.iter().map(|(p, _)| p.fn_name()).collect();
    let mut dedup = names.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), names.len());
    assert!(names.iter().all(|n| catalogue().iter().any(|p| &p.fn_name() == n)));
}

#[test]
fn corrupted_networks_are_rejected() {
    let all = listing();
    let (p, n) = all
        .iter()
        .find(|(p, _)| p.fn_name() == "transpose_8x8_b32_avx2")
        .unwrap();
    let mut bad = n.clone();
    bad.outputs.swap(0, 1);
    assert!(verify(p, &bad).is_err());
    let mut bad = n.clone();
    bad.steps[3].args.swap(0, 1);
    assert!(verify(p, &bad).is_err());
    let mut bad = n.clone();
    bad.steps.truncate(8);
    bad.outputs = (0..8).collect();
    assert!(verify(p, &bad).is_err());
}

#[test]
fn every_width_has_a_square_kernel_on_every_isa() {
    let all = listing();
    for isa in IsaKind::ALL {
        for w in [8usize, 16, 32, 64] {
            let has = all
                .iter()
                .any(|(p, _)| p.isa == isa && p.elem_bits == w && p.src == Rows::Separate && p.dst == Rows::Separate);
            // AVX-512 machines run the AVX2 kernels for widths the AVX-512 model lacks.
            let via_avx2 = isa == IsaKind::Avx512
                && all
                    .iter()
                    .any(|(p, _)| p.isa == IsaKind::Avx2 && p.elem_bits == w && p.src == Rows::Separate);
            assert!(has || via_avx2, "{} has no {w}-bit square kernel", isa.name());
        }
    }
}

#[test]
fn synthesis_matches_or_beats_hand_written_counts() {
    // Known hand-written sequences: 8x8 f32 AVX2 24, 4x4 f32 NEON 8, 16x16 f32 AVX-512 64.
    for (isa, w, known) in [
        (IsaKind::Avx2, 32, 24),
        (IsaKind::Neon, 32, 8),
        (IsaKind::Avx512, 32, 64),
    ] {
        let p = square_problem(isa, w);
        let n = synth::synthesize(&p).expect("network found");
        assert!(n.len() <= known, "{}: {} > {known}", p.fn_name(), n.len());
        verify(&p, &n).unwrap();
    }
    // A 3-channel gather has no bit-permute structure; the gather search solves it.
    let p = Problem {
        isa: IsaKind::Avx512,
        elem_bits: 32,
        na: 3,
        nb: 16,
        src: Rows::Contiguous,
        dst: Rows::Separate,
    };
    let n = synth::synthesize(&p).expect("3-channel network");
    assert!(n.len() <= 6, "{} shuffles", n.len());
}
