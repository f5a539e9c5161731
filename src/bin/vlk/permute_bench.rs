//! `vlk bench permute`: GiB/s of each suite case (bytes read + written),
//! next to a memcpy of the same bytes on the same threads measured
//! interleaved in the same run, the naive index-walking loop, and NumPy.

use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;
use vlkernels::permute::suites::{self, Case, SuiteSize};
use vlkernels::{DType, Error, KernelFamily, PermuteOptions, PermutePlan, Result};

use crate::report;

#[derive(clap::Args, Clone)]
pub struct PermuteBenchArgs {
    /// Which suite: hptt, models, layers (per-layer shapes in cache), random (40 fixed random problems) or all (hptt and models).
    #[arg(long, default_value = "all")]
    pub suite: String,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Element type for the HPTT suite (its cases keep their byte size).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// full (published sizes, about 200 MiB per HPTT case) or small (about 16 MiB).
    #[arg(long, default_value = "full")]
    pub size: String,
    /// Timed repetitions per case (median reported).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Force a kernel family (auto, portable, avx2, avx512, neon).
    #[arg(long, default_value = "auto")]
    pub kernel: String,
    /// Use tuned plans from the tuning cache where present.
    #[arg(long)]
    pub tuned: bool,
    /// Write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Print the table as Markdown.
    #[arg(long)]
    pub markdown: bool,
    /// Write an SVG plot (GiB/s per case with the memcpy line) per suite; the suite name is inserted before .svg.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Also time NumPy (np.copyto(dst, src.transpose(p))) through tools/bench_numpy.py.
    #[arg(long)]
    pub compare_numpy: bool,
    /// Only cases whose name contains this text.
    #[arg(long)]
    pub filter: Option<String>,
    /// A custom case instead of a suite: row-major shape, e.g. 2048,2048 (with --perm; --dtype sets its type).
    #[arg(long, requires = "perm")]
    pub shape: Option<String>,
    /// Permutation of the custom case, e.g. 1,0.
    #[arg(long, requires = "shape")]
    pub perm: Option<String>,
    /// Put both outputs (the permutation's and the memcpy's) this many bytes past a
    /// page boundary (0..=4095). Buffers from malloc usually start 16 bytes past one.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..4096))]
    pub dst_offset: u16,
}

impl PermuteBenchArgs {
    /// The short run of `vlk bench` with no arguments.
    pub fn short_default() -> Self {
        PermuteBenchArgs {
            suite: "all".into(),
            threads: None,
            dtype: "f32".into(),
            size: "small".into(),
            reps: 3,
            kernel: "auto".into(),
            tuned: false,
            json: None,
            markdown: false,
            plot: None,
            compare_numpy: false,
            filter: None,
            shape: None,
            perm: None,
            dst_offset: 0,
        }
    }
}

/// One measured case.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub suite: String,
    pub case: String,
    pub dtype: String,
    pub mib: f64,
    pub threads: usize,
    pub vlk_gibs: f64,
    pub memcpy_gibs: f64,
    pub ratio: f64,
    pub naive_gibs: f64,
    pub numpy_gibs: Option<f64>,
    pub plan: String,
    pub check: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Copies `src` into `dst` split across `threads` (the memcpy baseline).
fn parallel_copy(src: &[u8], dst: &mut [u8], threads: usize) {
    if threads <= 1 {
        dst.copy_from_slice(src);
        return;
    }
    let chunk = src.len().div_ceil(threads).max(1);
    dst.par_chunks_mut(chunk)
        .zip(src.par_chunks(chunk))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

fn gibs(bytes: usize, secs: f64) -> f64 {
    2.0 * bytes as f64 / secs / (1u64 << 30) as f64
}

fn measure(case: &Case, args: &PermuteBenchArgs, family: KernelFamily, threads: usize) -> Result<Row> {
    let bytes = case.bytes();
    let mut src = vlkernels::buffer::huge_page_buffer(bytes);
    for (i, x) in src.iter_mut().enumerate() {
        *x = (i.wrapping_mul(2654435761) >> 7) as u8;
    }
    let off = args.dst_offset as usize;
    let mut dst_buf = vlkernels::buffer::huge_page_buffer(bytes + off);
    let mut copy_buf = vlkernels::buffer::huge_page_buffer(bytes + off);
    let (dst, copy) = (&mut dst_buf[off..], &mut copy_buf[off..]);
    let opts = PermuteOptions {
        threads: Some(threads),
        kernel: family,
        tuned: args.tuned,
        ..Default::default()
    };
    let plan = PermutePlan::new(&case.shape, &case.perm, case.dtype.size(), &opts)?;
    // Warm up (page faults, caches), then interleave memcpy and permute.
    parallel_copy(&src, copy, threads);
    plan.execute_bytes(&src, dst)?;
    let (mut t_copy, mut t_perm) = (Vec::new(), Vec::new());
    for _ in 0..args.reps.max(1) {
        let t = Instant::now();
        parallel_copy(&src, copy, threads);
        t_copy.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        plan.execute_bytes(&src, dst)?;
        t_perm.push(t.elapsed().as_secs_f64());
    }
    // The naive loop is the baseline and the self-check.
    let naive_plan = PermutePlan::new(
        &case.shape,
        &case.perm,
        case.dtype.size(),
        &opts.clone().with_kernel(KernelFamily::Scalar),
    )?;
    let t = Instant::now();
    naive_plan.execute_bytes(&src, copy)?;
    let t_naive = t.elapsed().as_secs_f64();
    let check = copy[..] == dst[..];
    let (tp, tc) = (median(t_perm), median(t_copy));
    Ok(Row {
        suite: case.suite.to_string(),
        case: case.name.clone(),
        dtype: case.dtype.name().to_string(),
        mib: bytes as f64 / (1u64 << 20) as f64,
        threads,
        vlk_gibs: gibs(bytes, tp),
        memcpy_gibs: gibs(bytes, tc),
        ratio: tc / tp,
        naive_gibs: gibs(bytes, t_naive),
        numpy_gibs: None,
        plan: plan.describe(),
        check,
    })
}

pub fn run(args: PermuteBenchArgs) -> Result<()> {
    crate::init_threads(args.threads)?;
    let threads = args.threads.unwrap_or_else(rayon::current_num_threads);
    let size = match args.size.as_str() {
        "full" => SuiteSize::Full,
        "small" => SuiteSize::Small,
        other => return Err(Error::invalid(format!("--size '{other}' (expected full or small)"))),
    };
    let dtype: DType = args.dtype.parse()?;
    let family: KernelFamily = args.kernel.parse()?;
    let mut cases = match (&args.shape, &args.perm) {
        (Some(shape), Some(perm)) => {
            let shape = crate::parse_list("--shape", shape)?;
            let perm = crate::parse_list("--perm", perm)?;
            vlkernels::tensor::validate_perm(&perm, shape.len())?;
            let name = format!(
                "({})→({})",
                args.shape.as_deref().unwrap_or(""),
                args.perm.as_deref().unwrap_or("")
            );
            vec![Case {
                suite: "custom",
                name,
                shape,
                perm,
                dtype,
            }]
        }
        _ => suites::suite(&args.suite, size, dtype)?,
    };
    if let Some(f) = &args.filter {
        cases.retain(|c| c.name.contains(f.as_str()));
    }
    if cases.is_empty() {
        return Err(Error::invalid("no benchmark case matches the filter"));
    }
    eprintln!(
        "vlk bench permute: suite {} ({} cases, {} sizes), {threads} thread(s), {} reps, kernel {}",
        args.suite,
        cases.len(),
        args.size,
        args.reps,
        vlkernels::permute::kernels::resolve(family)?.name()
    );
    let bar = ProgressBar::new(cases.len() as u64);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed_precise} {msg}").unwrap());
    let mut rows = Vec::new();
    for case in &cases {
        bar.set_message(case.name.clone());
        rows.push(measure(case, &args, family, threads)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    if args.compare_numpy {
        crate::numpy_compare::add_numpy(&cases, &mut rows, threads)?;
    }
    report::print_permute(&rows, args.markdown);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&rows).map_err(|e| Error::invalid(format!("json: {e}")))?;
        std::fs::write(path, text).map_err(|e| Error::io(path, e))?;
    }
    if let Some(path) = &args.plot {
        report::plot_permute(&rows, path)?;
    }
    let failed: Vec<&str> = rows.iter().filter(|r| !r.check).map(|r| r.case.as_str()).collect();
    if !failed.is_empty() {
        return Err(Error::invalid(format!(
            "self-check failed (output differs from the naive loop) for {failed:?}"
        )));
    }
    Ok(())
}
