//! `vlk bench moe`: routing + dispatch-plan time and whole MoE block time,
//! with a self-check of the fast paths against the references and the
//! machine's copy bandwidth and dense GEMM rate measured in the same run.

use std::collections::HashMap;
use std::time::Instant;

use vlkernels::moe::{
    moe_block, moe_block_reference, plan_dispatch, route, MatRef, MoeWeights, RouterConfig, TensorRef,
};
use vlkernels::{DType, Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchDevice {
    Cpu,
    Cuda,
}

#[derive(clap::Args)]
pub struct MoeBenchArgs {
    /// Where to run.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: BenchDevice,
    /// Token counts for the routing + dispatch-plan timing.
    #[arg(long, default_value = "1,32,4096,16384")]
    pub tokens: String,
    /// Token counts for the whole-block timing.
    #[arg(long, default_value = "1,32,512")]
    pub block_tokens: String,
    /// Hidden size of the block benchmark (Qwen3-30B-A3B and Qwen3-Next: 2048).
    #[arg(long, default_value_t = 512)]
    pub hidden: usize,
    /// Expert intermediate size of the block benchmark (Qwen3-30B-A3B: 768, Qwen3-Next: 512).
    #[arg(long, default_value_t = 256)]
    pub intermediate: usize,
    /// Minimum seconds spent per measurement.
    #[arg(long, default_value_t = 0.2)]
    pub min_time: f64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// The two routing shapes of the issue: (name, experts, k, shared expert).
pub const MODELS: [(&str, usize, usize, bool); 2] = [("qwen3-30b-a3b", 128, 8, false), ("qwen3-next", 512, 10, true)];

pub fn run(args: MoeBenchArgs) -> Result<()> {
    crate::init_threads(args.threads)?;
    let tokens = crate::parse_list("--tokens", &args.tokens)?;
    let block_tokens = crate::parse_list("--block-tokens", &args.block_tokens)?;
    if args.hidden == 0 || args.intermediate == 0 {
        return Err(Error::invalid(format!(
            "--hidden {} --intermediate {}: both must be positive",
            args.hidden, args.intermediate
        )));
    }
    if !(args.min_time > 0.0 && args.min_time.is_finite()) {
        return Err(Error::invalid(format!(
            "--min-time {}: must be positive",
            args.min_time
        )));
    }
    if args.device == BenchDevice::Cuda {
        return crate::moe_bench_cuda::run(&args, &tokens, &block_tokens);
    }
    println!("vlk bench moe (cpu, {} threads)", rayon::current_num_threads());
    let copy_gbs = copy_bandwidth(args.min_time);
    let gemm_tflops = dense_gemm_rate(args.min_time)?;
    println!("  copy bandwidth {copy_gbs:.1} GB/s (read + write); dense f32 GEMM 1024^3 {gemm_tflops:.3} TFLOP/s");

    println!("\nrouting (softmax + top-k + renormalise) + dispatch plan, from f32 logits:");
    println!(
        "  {:<14} {:>6} {:>4} {:>3} {:>12} {:>12} {:>12} {:>9}",
        "model", "T", "E", "k", "route us", "plan us", "total us", "logits/copy"
    );
    for &(name, e, k, _) in &MODELS {
        let cfg = RouterConfig::new(e, k, true)?;
        for &t in &tokens {
            let logits = random(t * e, 11 + t as u64, -3.0, 3.0);
            let mut ids = vec![0u32; t * k];
            let mut w = vec![0f32; t * k];
            let route_s = time(args.min_time, || route(&logits, &cfg, &mut ids, &mut w))?;
            let plan_s = time(args.min_time, || plan_dispatch(&ids, e, k, 64).map(|_| ()))?;
            let total = route_s + plan_s;
            // Share of copy bandwidth achieved reading the logits once.
            let ratio = (t * e * 4) as f64 / total / 1e9 / copy_gbs;
            println!(
                "  {name:<14} {t:>6} {e:>4} {k:>3} {:>12.2} {:>12.2} {:>12.2} {:>9.3}",
                route_s * 1e6,
                plan_s * 1e6,
                total * 1e6,
                ratio
            );
        }
    }

    if block_tokens.is_empty() {
        return Ok(());
    }
    let (h, i) = (args.hidden, args.intermediate);
    println!("\nwhole MoE block (router GEMM, route, plan, permute, expert GEMMs, unpermute), H = {h}, I = {i}:");
    println!(
        "  {:<14} {:>6} {:>10} {:>10} {:>9} {:>10} {:>9}",
        "model", "T", "ms", "TFLOP/s", "/gemm", "weight GB/s", "/copy"
    );
    for &(name, e, k, shared) in &MODELS {
        let w = build_weights(e, h, i, shared)?;
        let cfg = RouterConfig::new(e, k, true)?;
        self_check(&w, &cfg)?;
        for &t in &block_tokens {
            let x = random(t * h, 3 + t as u64, -1.0, 1.0);
            let secs = time(args.min_time, || moe_block(&x, &w, &cfg).map(|_| ()))?;
            let out = moe_block(&x, &w, &cfg)?;
            let flops = block_flops(t, h, i, e, k, shared);
            // Expert weights actually touched: each distinct expert once.
            let mut hit = vec![false; e];
            for &id in &out.ids {
                hit[id as usize] = true;
            }
            let experts_hit = hit.iter().filter(|&&b| b).count() + shared as usize;
            let weight_bytes = (experts_hit * 3 * h * i + e * h) * 4;
            let wgbs = weight_bytes as f64 / secs / 1e9;
            println!(
                "  {name:<14} {t:>6} {:>10.3} {:>10.4} {:>9.3} {:>10.1} {:>9.3}",
                secs * 1e3,
                flops / secs / 1e12,
                flops / secs / 1e12 / gemm_tflops,
                wgbs,
                wgbs / copy_gbs
            );
        }
    }
    Ok(())
}

/// Random weights of one block, through the same loader as a checkpoint.
pub fn build_weights(e: usize, h: usize, i: usize, shared: bool) -> Result<MoeWeights> {
    let owned = random_block(e, h, i, shared);
    let tensors: HashMap<String, TensorRef<'_>> = owned
        .iter()
        .map(|(n, (shape, bytes))| {
            (
                n.clone(),
                TensorRef {
                    dtype: DType::F32,
                    shape,
                    data: bytes,
                },
            )
        })
        .collect();
    MoeWeights::from_tensors(&tensors, "")
}

/// Multiply-adds ×2 of router, expert and shared-expert GEMMs.
pub fn block_flops(t: usize, h: usize, i: usize, e: usize, k: usize, shared: bool) -> f64 {
    let (t, h, i, e, k) = (t as f64, h as f64, i as f64, e as f64, k as f64);
    let expert = 2.0 * 3.0 * h * i;
    2.0 * t * h * e + t * k * expert + if shared { t * (expert + 2.0 * h) } else { 0.0 }
}

/// Fast block against the f64 reference on a few tokens; fails the run on a mismatch.
fn self_check(w: &MoeWeights, cfg: &RouterConfig) -> Result<()> {
    let x = random(3 * w.hidden, 99, -1.0, 1.0);
    let fast = moe_block(&x, w, cfg)?;
    let reference = moe_block_reference(&x, w, cfg)?;
    let max_err = fast
        .out
        .iter()
        .zip(&reference.out)
        .map(|(a, b)| (a - b).abs() / (1e-3 + b.abs()))
        .fold(0f32, f32::max);
    if fast.ids != reference.ids || max_err > 1e-3 {
        return Err(Error::invalid(format!(
            "self-check failed: ids equal {}, max relative error {max_err}",
            fast.ids == reference.ids
        )));
    }
    println!(
        "  self-check E = {}: ids equal, max relative error {max_err:.2e}",
        w.num_experts
    );
    Ok(())
}

/// Named random f32 tensors of one block in the per-expert layout.
/// A named tensor: (name, (shape, f32 little-endian bytes)).
pub type NamedBytes = (String, (Vec<usize>, Vec<u8>));

pub fn random_block(e: usize, h: usize, i: usize, shared: bool) -> Vec<NamedBytes> {
    use rayon::prelude::*;
    let s = 1.0 / (h as f32).sqrt();
    let bytes = |n: usize, seed: u64| -> Vec<u8> {
        random(n, seed, -s, s)
            .into_iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    };
    let mlp = |prefix: String, seed: u64| -> Vec<NamedBytes> {
        vec![
            (format!("{prefix}gate_proj.weight"), (vec![i, h], bytes(i * h, seed))),
            (format!("{prefix}up_proj.weight"), (vec![i, h], bytes(i * h, seed + 1))),
            (
                format!("{prefix}down_proj.weight"),
                (vec![h, i], bytes(i * h, seed + 2)),
            ),
        ]
    };
    let mut v = vec![("gate.weight".to_string(), (vec![e, h], bytes(e * h, 1)))];
    // Experts are generated in parallel: full-size blocks hold billions of weights.
    let experts: Vec<Vec<NamedBytes>> = (0..e)
        .into_par_iter()
        .map(|x| mlp(format!("experts.{x}."), 10 + 3 * x as u64))
        .collect();
    v.extend(experts.into_iter().flatten());
    if shared {
        v.extend(mlp("shared_expert.".to_string(), 7));
        v.push(("shared_expert_gate.weight".to_string(), (vec![1, h], bytes(h, 8))));
    }
    v
}

/// Median seconds per call over at least `min_time` seconds (and 3 calls).
pub fn time(min_time: f64, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 3 || start.elapsed().as_secs_f64() < min_time {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed().as_secs_f64());
        if samples.len() >= 100_000 {
            break;
        }
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// Copy bandwidth of a 64 MiB buffer across the rayon pool, bytes read + written per second.
fn copy_bandwidth(min_time: f64) -> f64 {
    use rayon::prelude::*;
    let n = 16 << 20;
    let src = vec![1f32; n];
    let mut dst = vec![0f32; n];
    let secs = time(min_time, || {
        dst.par_chunks_mut(1 << 16)
            .zip(src.par_chunks(1 << 16))
            .for_each(|(d, s)| d.copy_from_slice(s));
        Ok(())
    })
    .unwrap_or(f64::INFINITY);
    (2 * n * 4) as f64 / secs / 1e9
}

/// f32 GEMM rate of the same crate on a dense 1024^3 product, TFLOP/s.
fn dense_gemm_rate(min_time: f64) -> Result<f64> {
    let n = 1024;
    let a = random(n * n, 1, -1.0, 1.0);
    let b = random(n * n, 2, -1.0, 1.0);
    let mut c = vec![0f32; n * n];
    let rhs = MatRef::new(&b, 0, n, n, n, 1)?;
    let secs = time(min_time, || {
        vlkernels::moe::expert::matmul(&a, n, n, &rhs, &mut c, true)
    })?;
    Ok(2.0 * (n * n * n) as f64 / secs / 1e12)
}

/// Deterministic uniform floats in [lo, hi).
pub fn random(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            lo + (hi - lo) * ((x >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}
