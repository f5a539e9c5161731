//! The generated micro-kernels (simd/, written by vlkernels-codegen) and the
//! registry the dispatcher reads. Each file is compiled on its architecture
//! only; a kernel is called only after `cpu_features()` has confirmed its ISA.

use super::kernels::{BandFn, BandStridedFn, StridedTileFn, TileFn};

/// One generated kernel and the block it handles (see [`TileFn`]).
#[derive(Clone, Copy, Debug)]
pub struct GenKernel {
    pub name: &'static str,
    pub elem_bytes: usize,
    /// Elements per source row (= destination rows).
    pub na: usize,
    /// Source rows (= elements per destination row).
    pub nb: usize,
    /// The kernel expects source rows back to back (it checks, and falls back to element moves).
    pub src_contiguous: bool,
    /// The kernel expects destination rows back to back (checked likewise).
    pub dst_contiguous: bool,
    /// Shuffle instructions in its network.
    pub shuffles: usize,
    pub func: TileFn,
    /// For kernels with back-to-back rows: the same network without the per-call
    /// check, for callers whose offset tables are back to back by construction.
    pub trusted: Option<TileFn>,
    /// For kernels with rows anywhere on both sides: the same network with rows
    /// at equal steps instead of offset tables (see [`StridedTileFn`]).
    pub strided: Option<StridedTileFn>,
    /// For square kernels on x86 whose destination rows are one register
    /// each: the line band with streaming stores (see [`BandFn`]).
    pub band: Option<BandFn>,
    /// The line band with rows at equal steps (see [`BandStridedFn`]).
    pub band_strided: Option<BandStridedFn>,
}

#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
#[path = "../../simd/x86_avx2.rs"]
mod x86_avx2;

#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
#[path = "../../simd/x86_avx512.rs"]
mod x86_avx512;

#[cfg(target_arch = "aarch64")]
#[rustfmt::skip]
#[path = "../../simd/aarch64_neon.rs"]
mod aarch64_neon;

#[rustfmt::skip]
#[path = "../../simd/registry.rs"]
mod registry;

/// Generated kernels of the AVX2 family (empty off x86-64).
pub fn avx2() -> &'static [GenKernel] {
    #[cfg(target_arch = "x86_64")]
    return registry::AVX2;
    #[cfg(not(target_arch = "x86_64"))]
    return &[];
}

/// Generated kernels of the AVX-512 family (empty off x86-64).
pub fn avx512() -> &'static [GenKernel] {
    #[cfg(target_arch = "x86_64")]
    return registry::AVX512;
    #[cfg(not(target_arch = "x86_64"))]
    return &[];
}

/// Generated kernels of the NEON family (empty off aarch64).
pub fn neon() -> &'static [GenKernel] {
    #[cfg(target_arch = "aarch64")]
    return registry::NEON;
    #[cfg(not(target_arch = "aarch64"))]
    return &[];
}
