//! `vlk tune`: measure candidate plans for a suite or one problem and store
//! the fastest in the tuning cache; `vlk tune --show` lists the cache.

use indicatif::{ProgressBar, ProgressStyle};
use vlkernels::permute::suites::{self, SuiteSize};
use vlkernels::permute::tune::{self, TuneCache};
use vlkernels::{DType, Error, KernelFamily, PermuteOptions, Result};

#[derive(clap::Args)]
pub struct TuneArgs {
    /// List the tuning cache and exit.
    #[arg(long)]
    show: bool,
    /// Suite to tune: hptt, models, layers, random or all (ignored with --shape).
    #[arg(long, default_value = "models")]
    suite: String,
    /// full or small problem sizes.
    #[arg(long, default_value = "small")]
    size: String,
    /// One problem instead of a suite: row-major shape, e.g. 64,48,3 (with --perm).
    #[arg(long, requires = "perm")]
    shape: Option<String>,
    /// Permutation of that problem, e.g. 2,0,1.
    #[arg(long, requires = "shape")]
    perm: Option<String>,
    /// Element type (for --shape, and the HPTT suite).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Threads the plans will be asked to use (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Timed repetitions per candidate (median).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Kernel family to tune for.
    #[arg(long, default_value = "auto")]
    kernel: String,
}

pub fn run(args: TuneArgs) -> Result<()> {
    let path = tune::cache_path()?;
    if args.show {
        let cache = TuneCache::load()?;
        println!(
            "tuning cache {} ({} entries; set VLK_TUNE_CACHE to move it)",
            path.display(),
            cache.entries.len()
        );
        for (key, e) in &cache.entries {
            println!(
                "{}\n  key {key}\n  {:?}: {:.2} GiB/s (default plan {:.2} GiB/s, {:.2}×)",
                e.problem,
                e.tuning,
                e.gibs,
                e.default_gibs,
                e.gibs / e.default_gibs
            );
        }
        return Ok(());
    }
    crate::init_threads(args.threads)?;
    let dtype: DType = args.dtype.parse()?;
    let size = match args.size.as_str() {
        "full" => SuiteSize::Full,
        "small" => SuiteSize::Small,
        other => return Err(Error::invalid(format!("--size '{other}' (expected full or small)"))),
    };
    let problems: Vec<(String, Vec<usize>, Vec<usize>, DType)> = match (&args.shape, &args.perm) {
        (Some(s), Some(p)) => {
            vec![(
                format!("({s})→({p})"),
                crate::parse_list("--shape", s)?,
                crate::parse_list("--perm", p)?,
                dtype,
            )]
        }
        _ => suites::suite(&args.suite, size, dtype)?
            .into_iter()
            .map(|c| (c.name, c.shape, c.perm, c.dtype))
            .collect(),
    };
    let family: KernelFamily = args.kernel.parse()?;
    let opts = PermuteOptions {
        threads: args.threads,
        kernel: family,
        ..Default::default()
    };
    let mut cache = TuneCache::load()?;
    eprintln!(
        "vlk tune: {} problem(s), results go to {}",
        problems.len(),
        path.display()
    );
    for (name, shape, perm, dt) in &problems {
        let bar = ProgressBar::new(1);
        bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} candidates {msg}").unwrap());
        bar.set_message(name.clone());
        let e = tune::tune_problem(shape, perm, dt.size(), &opts, args.reps, &mut cache, |i, n| {
            bar.set_length(n as u64);
            bar.set_position(i as u64);
        })?;
        bar.finish_and_clear();
        println!(
            "{name}: {:.2} GiB/s tuned vs {:.2} default ({:.2}×) with {:?}",
            e.gibs,
            e.default_gibs,
            e.gibs / e.default_gibs,
            e.tuning
        );
        // Save after each problem so an interrupted run keeps its results.
        cache.save()?;
    }
    Ok(())
}
