//! `vlk bench`: benchmarks with a self-check. With no subcommand it runs a
//! short permutation benchmark (small sizes, both suites).

use vlkernels::Result;

use crate::permute_bench::{self, PermuteBenchArgs};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: Option<BenchWhat>,
}

#[derive(clap::Subcommand)]
enum BenchWhat {
    /// Tensor permutation against memcpy, the naive loop and (optionally) NumPy.
    Permute(PermuteBenchArgs),
    /// MoE routing, dispatch plan and whole-block timing.
    Moe(crate::moe_bench::MoeBenchArgs),
    /// RoPE family at Qwen2.5-VL / Qwen3-VL shapes (CPU or CUDA).
    Rope(crate::rope_bench::RopeBenchArgs),
    /// Varlen window / causal GQA attention (CPU or CUDA), beside the FMA peak.
    Attention(crate::attention_bench::AttentionBenchArgs),
    /// Generated micro-kernels on one L1-resident tile: GiB/s and bytes per cycle beside an L1 copy.
    Kernels(crate::kernels_bench::KernelsBenchArgs),
    /// One thread's bandwidth for a transpose's read and write patterns, beside memcpy.
    Memory(crate::memory_bench::MemoryBenchArgs),
}

pub fn run(args: BenchArgs) -> Result<()> {
    match args.what {
        None => permute_bench::run(PermuteBenchArgs::short_default()),
        Some(BenchWhat::Permute(a)) => permute_bench::run(a),
        Some(BenchWhat::Moe(a)) => crate::moe_bench::run(a),
        Some(BenchWhat::Rope(a)) => crate::rope_bench::run(a),
        Some(BenchWhat::Attention(a)) => crate::attention_bench::run(a),
        Some(BenchWhat::Kernels(a)) => crate::kernels_bench::run(a),
        Some(BenchWhat::Memory(a)) => crate::memory_bench::run(a),
    }
}
