//! `vlk bench`: benchmark and self-check report.

use vlkernels::Result;

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: Option<BenchWhat>,
}

#[derive(clap::Subcommand)]
enum BenchWhat {
    /// RoPE family at Qwen2.5-VL / Qwen3-VL shapes (CPU or CUDA).
    Rope(crate::rope_bench::RopeBenchArgs),
}

pub fn run(args: BenchArgs) -> Result<()> {
    match args.what {
        Some(BenchWhat::Rope(a)) => crate::rope_bench::run(a),
        None => Err(vlkernels::Error::Unavailable("bench is being written".into())),
    }
}
