//! `vlk`: the command-line front end of vlkernels (permute, bench, tune, ...).

mod attention_bench;
mod bench;
mod kernels_bench;
mod logits_cmd;
mod memory_bench;
mod memory_blocks;
mod moe_bench;
mod moe_bench_cuda;
mod numpy_compare;
mod permute_bench;
mod permute_cmd;
mod preprocess_cmd;
mod report;
mod rope_bench;
mod run_cmd;
mod tune_cmd;
mod vision_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "vlk",
    version,
    about = "vlkernels: kernels for vision-language model inference"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Permute the axes of a NumPy .npy array: OUT = transpose(IN, perm).
    Permute(permute_cmd::PermuteArgs),
    /// Benchmarks with a self-check (default: a short permutation run).
    Bench(bench::BenchArgs),
    /// Autotune permutation plans and store them in the tuning cache.
    Tune(tune_cmd::TuneArgs),
    /// Logits of a text decoder over token ids, written as f32 .npy [seq_len, vocab].
    Logits(logits_cmd::LogitsArgs),
    /// Greedy generation with a KV cache; prints ids (and text), TTFT and tokens/s.
    Run(run_cmd::RunArgs),
    /// Qwen2-VL image preprocessing: IMAGE -> pixel_values .npy, prints grid_thw.
    Preprocess(preprocess_cmd::PreprocessArgs),
    /// Run a checkpoint's vision tower on pixel values; writes the merged embeddings.
    Vision(vision_cmd::VisionArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Permute(args) => permute_cmd::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Tune(args) => tune_cmd::run(args),
        Command::Logits(args) => logits_cmd::run(args),
        Command::Run(args) => run_cmd::run(args),
        Command::Preprocess(args) => preprocess_cmd::run(args),
        Command::Vision(args) => vision_cmd::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Sets the size of rayon's global pool (once, before any parallel work).
pub fn init_threads(threads: Option<usize>) -> vlkernels::Result<()> {
    if let Some(n) = threads {
        if n == 0 {
            return Err(vlkernels::Error::invalid("--threads 0: need at least one thread"));
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| vlkernels::Error::invalid(format!("cannot start {n} threads: {e}")))?;
    }
    Ok(())
}

/// Parses a comma-separated list of axes or extents, naming the bad item.
pub fn parse_list(what: &str, s: &str) -> vlkernels::Result<Vec<usize>> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|t| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| vlkernels::Error::invalid(format!("{what} '{s}': '{t}' is not a non-negative integer")))
        })
        .collect()
}
