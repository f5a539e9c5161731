//! `vlk bench`: benchmark and self-check report.

use vlkernels::Result;

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    which: Option<BenchWhich>,
}

#[derive(clap::Subcommand)]
enum BenchWhich {
    /// MoE routing, dispatch plan and whole-block timing.
    Moe(crate::moe_bench::MoeBenchArgs),
}

pub fn run(args: BenchArgs) -> Result<()> {
    match args.which {
        Some(BenchWhich::Moe(a)) => crate::moe_bench::run(a),
        None => Err(vlkernels::Error::Unavailable("bench is being written".into())),
    }
}
