//! `vlk bench attention`: attention throughput on Qwen2.5-VL / Qwen3 shapes, with a
//! spot check of each output against an f64 recomputation, and this CPU's FMA peak
//! measured in the same run.
//!
//! FLOPs: `4·D·Hq·Σ visible (query, key) pairs` (`4·Σ sᵢ²·H·D` without a mask, about
//! half with a causal one).

use std::time::Instant;

use half::bf16;
use vlkernels::attention::window::{get_window_index, WindowConfig};
use vlkernels::attention::{attention_with, AttentionArgs, AttnElem, CpuAttnKernel};
use vlkernels::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct AttentionBenchArgs {
    /// Where to run: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Element type of q, k, v and out: f32 or bf16 (f32 accumulation either way).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// The real shapes (ViT frames of N = 4900 and 16384 patches, LM prefill of
    /// N = 8192); the default is a short run on N = 1024.
    #[arg(long)]
    full: bool,
    /// Timed repetitions per shape after one warm-up (the best is reported).
    #[arg(long, default_value_t = 2)]
    reps: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// CPU micro-kernels: auto, portable or avx2.
    #[arg(long, default_value = "auto")]
    kernel: String,
}

/// One benchmark problem.
pub struct Shape {
    pub name: String,
    pub cu: Vec<usize>,
    pub hq: usize,
    pub hkv: usize,
    pub d: usize,
    pub causal: bool,
}

impl Shape {
    fn args(&self) -> AttentionArgs<'_> {
        AttentionArgs::new(&self.cu, &self.cu, self.hq, self.hkv, self.d).with_causal(self.causal)
    }

    fn tokens(&self) -> usize {
        *self.cu.last().unwrap_or(&0)
    }
}

/// Qwen2.5-VL-7B ViT (16 heads, d 80) in 64-patch windows and as whole frames, and
/// Qwen-style LM prefill (32 query / 8 key-value heads, d 128, causal).
pub fn shapes(full: bool) -> Result<Vec<Shape>> {
    // Square frames of 70×70 (4900) and 128×128 (16384) patches; 32×32 (1024) by default.
    let frames: &[usize] = if full { &[70, 128] } else { &[32] };
    let mut out = Vec::new();
    for &side in frames {
        let n = side * side;
        let wi = get_window_index(&[[1, side, side]], &WindowConfig::QWEN25_VL)?;
        out.push(Shape {
            name: format!("vit-window N={n}"),
            cu: wi.cu_window_seqlens,
            hq: 16,
            hkv: 16,
            d: 80,
            causal: false,
        });
        out.push(Shape {
            name: format!("vit-frame N={n}"),
            cu: vec![0, n],
            hq: 16,
            hkv: 16,
            d: 80,
            causal: false,
        });
    }
    let n = if full { 8192 } else { 1024 };
    out.push(Shape {
        name: format!("lm-prefill N={n}"),
        cu: vec![0, n],
        hq: 32,
        hkv: 8,
        d: 128,
        causal: true,
    });
    Ok(out)
}

pub fn run(args: AttentionBenchArgs) -> Result<()> {
    if args.reps == 0 {
        return Err(Error::invalid("--reps 0: need at least one repetition"));
    }
    match args.device.as_str() {
        "cpu" => {}
        "cuda" => return run_cuda(&args),
        other => return Err(Error::invalid(format!("--device '{other}': expected cpu or cuda"))),
    }
    let kernel = match args.kernel.as_str() {
        "auto" => CpuAttnKernel::Auto,
        "portable" => CpuAttnKernel::Portable,
        "avx2" => CpuAttnKernel::Avx2,
        other => {
            return Err(Error::invalid(format!(
                "--kernel '{other}': expected auto, portable or avx2"
            )))
        }
    };
    crate::init_threads(args.threads)?;
    let threads = rayon::current_num_threads();
    let peak = fma_peak_gflops();
    println!(
        "attention bench: cpu, {threads} threads, dtype {}, kernel {:?}; measured FMA peak {:.1} GFLOP/s (f32)",
        args.dtype, kernel, peak
    );
    println!(
        "{:<22} {:>6} {:>5} {:>4} {:>6} {:>10} {:>9} {:>7} {:>10}",
        "shape", "segs", "heads", "d", "causal", "time ms", "GFLOP/s", "% peak", "max err"
    );
    for shape in shapes(args.full)? {
        let r = match args.dtype.as_str() {
            "f32" => bench_cpu::<f32>(&shape, kernel, args.reps)?,
            "bf16" => bench_cpu::<bf16>(&shape, kernel, args.reps)?,
            other => return Err(Error::invalid(format!("--dtype '{other}': expected f32 or bf16"))),
        };
        let gflops = shape.args().flops() / r.secs / 1e9;
        println!(
            "{:<22} {:>6} {:>5} {:>4} {:>6} {:>10.2} {:>9.1} {:>6.1}% {:>10.2e}",
            shape.name,
            shape.cu.len() - 1,
            format!("{}/{}", shape.hq, shape.hkv),
            shape.d,
            shape.causal,
            r.secs * 1e3,
            gflops,
            100.0 * gflops / peak,
            r.max_err
        );
        if r.max_err > r.tol {
            return Err(Error::invalid(format!(
                "self-check failed on {}: max error {:.3e} > {:.1e}",
                shape.name, r.max_err, r.tol
            )));
        }
    }
    Ok(())
}

struct BenchResult {
    secs: f64,
    max_err: f64,
    tol: f64,
}

fn bench_cpu<T: AttnElem>(shape: &Shape, kernel: CpuAttnKernel, reps: usize) -> Result<BenchResult> {
    let n = shape.tokens();
    let q: Vec<T> = random(n * shape.hq * shape.d, 1);
    let k: Vec<T> = random(n * shape.hkv * shape.d, 2);
    let v: Vec<T> = random(n * shape.hkv * shape.d, 3);
    let mut out = vec![T::from_f32(f32::NAN); q.len()];
    let args = shape.args();
    attention_with(&args, &q, &k, &v, &mut out, kernel, None)?; // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        attention_with(&args, &q, &k, &v, &mut out, kernel, None)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    let tol = if T::DTYPE == vlkernels::DType::F32 { 1e-4 } else { 2e-2 };
    Ok(BenchResult {
        secs: best,
        max_err: spot_check(&args, &q, &k, &v, &out),
        tol,
    })
}

/// Largest error, relative to `1 + |ref|`, over a few (token, head) rows recomputed in f64.
pub fn spot_check<T: AttnElem>(args: &AttentionArgs, q: &[T], k: &[T], v: &[T], out: &[T]) -> f64 {
    let (hq, d, g) = (args.num_q_heads, args.head_dim, args.group_size());
    let segs = args.num_segments();
    let mut worst = 0f64;
    for probe in 0..16usize {
        let Some(s) = (0..segs)
            .map(|i| (i + probe * 7919) % segs)
            .find(|&i| args.segment(i).q_len > 0)
        else {
            return if out.iter().all(|x| !x.to_f32().is_nan()) {
                0.0
            } else {
                f64::INFINITY
            };
        };
        let seg = args.segment(s);
        let i = (probe * 104_729) % seg.q_len;
        let h = (probe * 31) % hq;
        let visible = if args.causal {
            (i + seg.k_len + 1).saturating_sub(seg.q_len).min(seg.k_len)
        } else {
            seg.k_len
        };
        let qrow = &q[(seg.q_start + i) * args.q_row_stride + h * d..][..d];
        let logits: Vec<f64> = (0..visible)
            .map(|j| {
                let krow = &k[(seg.k_start + j) * args.k_row_stride + (h / g) * d..][..d];
                qrow.iter()
                    .zip(krow)
                    .map(|(a, b)| a.to_f32() as f64 * b.to_f32() as f64)
                    .sum::<f64>()
                    * args.scale as f64
            })
            .collect();
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = logits.iter().map(|l| (l - max).exp()).sum();
        for c in 0..d {
            let want: f64 = if visible == 0 {
                0.0
            } else {
                (0..visible)
                    .map(|j| {
                        (logits[j] - max).exp() / sum
                            * v[(seg.k_start + j) * args.v_row_stride + (h / g) * d + c].to_f32() as f64
                    })
                    .sum()
            };
            let got = out[(seg.q_start + i) * args.out_row_stride + h * d + c].to_f32() as f64;
            let err = if got.is_nan() {
                f64::INFINITY
            } else {
                (got - want).abs() / (1.0 + want.abs())
            };
            worst = worst.max(err);
        }
    }
    worst
}

/// Deterministic uniform values in [-1, 1].
pub fn random<T: AttnElem>(n: usize, seed: u64) -> Vec<T> {
    let mut x = seed.wrapping_mul(0x2545F4914F6CDD1D);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            T::from_f32((x >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        })
        .collect()
}

/// f32 FMA throughput of all threads of rayon's pool together, in GFLOP/s: each thread runs
/// independent chains of fused multiply-adds (2 FLOPs per lane).
pub fn fma_peak_gflops() -> f64 {
    const ITERS: u64 = 20_000_000;
    let t = Instant::now();
    let flops: u64 = rayon::broadcast(|_| fma_loop(ITERS)).iter().sum();
    flops as f64 / t.elapsed().as_secs_f64() / 1e9
}

/// Runs `iters` rounds of independent FMAs; returns the FLOPs done.
fn fma_loop(iters: u64) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features were just detected.
        return unsafe { fma_loop_avx2(iters) };
    }
    // Portable: 8 scalar chains (what a core without wide FMA does at best here).
    let mut acc = [1.0f32; 8];
    for _ in 0..iters {
        for a in &mut acc {
            *a = a.mul_add(0.999_999, 1e-7);
        }
    }
    std::hint::black_box(acc);
    iters * 8 * 2
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop_avx2(iters: u64) -> u64 {
    use std::arch::x86_64::*;
    // 12 chains hide the FMA latency on two FMA ports.
    let mut acc = [_mm256_set1_ps(1.0); 12];
    let a = _mm256_set1_ps(0.999_999);
    let b = _mm256_set1_ps(1e-7);
    for _ in 0..iters {
        for x in &mut acc {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    std::hint::black_box(acc);
    iters * 12 * 8 * 2
}

/// The CUDA side: bf16 inputs, every shape, time per launch (CUDA has no FMA-peak
/// loop here: tools/attention_cuda_check.py measures the bf16 matmul peak and torch
/// SDPA on the same shapes in the same session).
fn run_cuda(args: &AttentionBenchArgs) -> Result<()> {
    use vlkernels::attention::cuda::CudaAttentionPlan;
    use vlkernels::cuda::CudaDevice;
    if args.dtype != "bf16" {
        return Err(Error::invalid(format!(
            "--device cuda takes --dtype bf16 (got '{}')",
            args.dtype
        )));
    }
    let dev = CudaDevice::get(0)?;
    println!("attention bench: {dev:?}, dtype bf16 (f32 accumulation)");
    println!(
        "{:<22} {:>6} {:>5} {:>4} {:>6} {:>10} {:>9} {:>7} {:>10}",
        "shape", "segs", "heads", "d", "causal", "time ms", "TFLOP/s", "splits", "max err"
    );
    let mut shapes = shapes(args.full)?;
    if args.full {
        // Full (non-causal) attention at d 128, for the tensor-core-peak comparison.
        shapes.push(Shape {
            name: "full-d128 N=8192".into(),
            cu: vec![0, 8192],
            hq: 32,
            hkv: 8,
            d: 128,
            causal: false,
        });
    }
    for shape in shapes {
        let n = shape.tokens();
        let q: Vec<bf16> = random(n * shape.hq * shape.d, 1);
        let k: Vec<bf16> = random(n * shape.hkv * shape.d, 2);
        let v: Vec<bf16> = random(n * shape.hkv * shape.d, 3);
        let (qd, kd, vd) = (dev.upload(&q)?, dev.upload(&k)?, dev.upload(&v)?);
        let mut od = dev.upload(&vec![bf16::NAN; q.len()])?;
        let a = shape.args();
        let plan = CudaAttentionPlan::new(&dev, &a, None)?;
        plan.run(&qd, &kd, &vd, &mut od)?;
        dev.synchronize()?;
        let out = dev.download(&od)?;
        let max_err = spot_check(&a, &q, &k, &v, &out);
        let mut best = f64::INFINITY;
        let launches = 10;
        for _ in 0..args.reps {
            let t = Instant::now();
            for _ in 0..launches {
                plan.run(&qd, &kd, &vd, &mut od)?;
            }
            dev.synchronize()?;
            best = best.min(t.elapsed().as_secs_f64() / launches as f64);
        }
        println!(
            "{:<22} {:>6} {:>5} {:>4} {:>6} {:>10.3} {:>9.1} {:>7} {:>10.2e}",
            shape.name,
            shape.cu.len() - 1,
            format!("{}/{}", shape.hq, shape.hkv),
            shape.d,
            shape.causal,
            best * 1e3,
            a.flops() / best / 1e12,
            plan.num_splits(),
            max_err
        );
        if max_err > 2e-2 {
            return Err(Error::invalid(format!(
                "self-check failed on {}: max error {max_err:.3e} > 2e-2",
                shape.name
            )));
        }
    }
    Ok(())
}
