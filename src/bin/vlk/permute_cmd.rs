//! `vlk permute IN.npy OUT.npy --perm 2,0,1`.

use std::path::PathBuf;
use std::time::Instant;

use vlkernels::npy::{read_npy, write_npy, NpyArray};
use vlkernels::{PermuteOptions, PermutePlan, Result};

#[derive(clap::Args)]
pub struct PermuteArgs {
    /// Input .npy file (C or Fortran order).
    input: PathBuf,
    /// Output .npy file (C order).
    output: PathBuf,
    /// The permutation, e.g. 2,0,1 (NumPy's transpose axes).
    #[arg(long)]
    perm: String,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(args: PermuteArgs) -> Result<()> {
    crate::init_threads(args.threads)?;
    let perm = crate::parse_list("--perm", &args.perm)?;
    let a = read_npy(&args.input)?;
    let opts = PermuteOptions {
        threads: args.threads,
        ..Default::default()
    };
    let plan = PermutePlan::new(&a.shape, &perm, a.dtype.size(), &opts)?;
    let mut out = vec![0u8; a.data.len()];
    let t = Instant::now();
    plan.execute_bytes(&a.data, &mut out)?;
    let secs = t.elapsed().as_secs_f64();
    let result = NpyArray {
        dtype: a.dtype,
        shape: plan.out_shape(),
        data: out,
    };
    write_npy(&args.output, &result)?;
    eprintln!(
        "{} {:?} -> {:?} ({}) in {:.3} ms",
        a.dtype,
        a.shape,
        result.shape,
        plan.describe(),
        secs * 1e3
    );
    Ok(())
}
