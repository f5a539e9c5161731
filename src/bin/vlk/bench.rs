//! `vlk bench`: benchmark and self-check report.

use vlkernels::Result;

#[derive(clap::Args)]
pub struct BenchArgs {}

pub fn run(_args: BenchArgs) -> Result<()> {
    Err(vlkernels::Error::Unavailable("bench is being written".into()))
}
