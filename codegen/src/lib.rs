//! vlkernels-codegen: models the shuffle instructions of AVX2, AVX-512 and
//! NEON as data ([`isa`]), synthesises in-register permutation networks by
//! searching over that model ([`synth`]), proves them with an interpreter
//! ([`network`]), and emits Rust kernels with `std::arch` intrinsics
//! ([`emit`]), and specialises whole fixed problems to one function each
//! ([`fixed`]).

pub mod emit;
pub mod fixed;
pub mod isa;
pub mod network;
pub mod synth;

use isa::IsaKind;
use network::{Network, Problem, Rows};

/// Element widths (bits) with kernels on every ISA.
pub const WIDTHS: [usize; 4] = [8, 16, 32, 64];

/// Small extents that get dedicated kernels (HWC↔CHW with 3 channels, pairs, quads).
pub const SMALL_EXTENTS: [usize; 3] = [2, 3, 4];

/// The square (or near-square) transpose block for an ISA and width: rows of
/// whole registers where that fits the register file, else rows of half or
/// quarter registers.
pub fn square_problem(isa: IsaKind, elem_bits: usize) -> Problem {
    let n = match (isa, elem_bits) {
        (IsaKind::Avx2, 8) => 16,
        (IsaKind::Avx2, 16) => 16,
        (IsaKind::Avx2, 32) => 8,
        (IsaKind::Avx2, 64) => 4,
        (IsaKind::Avx2, _) => 2,
        (IsaKind::Avx512, 8) => 16,
        (IsaKind::Avx512, 16) => 16,
        (IsaKind::Avx512, 32) => 16,
        (IsaKind::Avx512, 64) => 8,
        (IsaKind::Avx512, _) => 4,
        (IsaKind::Neon, 8) => 16,
        (IsaKind::Neon, 16) => 8,
        (IsaKind::Neon, 32) => 4,
        (IsaKind::Neon, _) => 2,
    };
    Problem {
        isa,
        elem_bits,
        na: n,
        nb: n,
        src: Rows::Separate,
        dst: Rows::Separate,
    }
}

/// Every problem the generated files cover, in file order.
pub fn catalogue() -> Vec<Problem> {
    let mut out = Vec::new();
    for isa in IsaKind::ALL {
        let mut widths = WIDTHS.to_vec();
        if isa != IsaKind::Neon {
            widths.push(128); // 16-byte elements: 128-bit lane moves
        }
        for &w in &widths {
            out.push(square_problem(isa, w));
        }
        for &w in &WIDTHS {
            let lanes = isa.vector_bits() / w;
            for &e in &SMALL_EXTENTS {
                out.push(Problem {
                    isa,
                    elem_bits: w,
                    na: e,
                    nb: lanes,
                    src: Rows::Contiguous,
                    dst: Rows::Separate,
                });
                out.push(Problem {
                    isa,
                    elem_bits: w,
                    na: lanes,
                    nb: e,
                    src: Rows::Separate,
                    dst: Rows::Contiguous,
                });
            }
        }
    }
    out
}

/// Synthesises every catalogue problem; problems with no network within the
/// model are returned separately (they fall back to the square kernels).
pub fn synthesize_all() -> (Vec<(Problem, Network)>, Vec<Problem>) {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for p in catalogue() {
        match synth::synthesize(&p) {
            Some(n) => found.push((p, n)),
            None => missing.push(p),
        }
    }
    (found, missing)
}

/// The generated files: (path relative to the repository root, contents).
pub fn generated_files(found: &[(Problem, Network)]) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for isa in IsaKind::ALL {
        let ks: Vec<(Problem, Network)> = found.iter().filter(|(p, _)| p.isa == isa).cloned().collect();
        files.push((format!("simd/{}", emit::file_name(isa)), emit::isa_file(isa, &ks)));
    }
    files.push(("simd/registry.rs".to_string(), emit::registry_file(found)));
    let listing = format!("{}\n{}", emit::HEADER.replace("//", "#"), network::listing(found));
    files.push(("simd/networks.txt".to_string(), listing));
    files
}
