//! `vlk bench moe --device cuda`: routing + dispatch plan and whole-block times on the
//! GPU, with the device copy bandwidth and a large cuBLAS bf16 GEMM measured in the
//! same run as the limits to compare with.

use std::sync::Arc;
use std::time::Instant;

use cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_N;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT;
use half::bf16;
use vlkernels::cuda::CudaDevice;
use vlkernels::moe::cuda::{route_cuda, CudaDispatchPlan, CudaMoe};
use vlkernels::moe::{moe_block, RouterConfig};
use vlkernels::{Error, Result};

use crate::moe_bench::{block_flops, build_weights, random, MoeBenchArgs, MODELS};

fn cuda_err(what: &'static str) -> impl Fn(cudarc::driver::DriverError) -> Error {
    move |e| Error::Cuda(format!("{what}: {e}"))
}

/// GPU milliseconds of `iters` back-to-back calls of `f`, per call.
fn gpu_time(dev: &CudaDevice, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    dev.synchronize()?;
    let ctx = dev.context();
    let start = ctx.new_event(Some(CU_EVENT_DEFAULT)).map_err(cuda_err("event"))?;
    let end = ctx.new_event(Some(CU_EVENT_DEFAULT)).map_err(cuda_err("event"))?;
    start.record(dev.stream()).map_err(cuda_err("event record"))?;
    for _ in 0..iters {
        f()?;
    }
    end.record(dev.stream()).map_err(cuda_err("event record"))?;
    let ms = start.elapsed_ms(&end).map_err(cuda_err("event elapsed"))?;
    Ok(ms as f64 / iters as f64)
}

/// Device-to-device copy bandwidth of a 1 GiB buffer, bytes read + written per second.
fn copy_bandwidth(dev: &CudaDevice) -> Result<f64> {
    let n = 1usize << 28;
    let src = dev.alloc_zeros::<f32>(n)?;
    let mut dst = dev.alloc_zeros::<f32>(n)?;
    let ms = gpu_time(dev, 10, || {
        dev.stream()
            .memcpy_dtod(&src, &mut dst)
            .map_err(cuda_err("memcpy_dtod"))
    })?;
    Ok((2 * n * 4) as f64 / (ms * 1e-3) / 1e9)
}

/// bf16 cuBLAS rate on an 8192^3 product, TFLOP/s.
fn gemm_rate(dev: &Arc<CudaDevice>) -> Result<f64> {
    let n = 8192usize;
    let blas = CudaBlas::new(dev.stream().clone()).map_err(|e| Error::Cuda(format!("cuBLAS: {e}")))?;
    let a = dev.upload(&vec![bf16::from_f32(0.01); n * n])?;
    let b = dev.upload(&vec![bf16::from_f32(0.02); n * n])?;
    let mut c = dev.alloc_zeros::<bf16>(n * n)?;
    let cfg = GemmConfig {
        transa: CUBLAS_OP_N,
        transb: CUBLAS_OP_N,
        m: n as i32,
        n: n as i32,
        k: n as i32,
        alpha: bf16::ONE,
        lda: n as i32,
        ldb: n as i32,
        beta: bf16::ZERO,
        ldc: n as i32,
    };
    let ms = gpu_time(dev, 10, || {
        // SAFETY: all three buffers hold n x n elements.
        unsafe { blas.gemm(cfg, &a, &b, &mut c) }.map_err(|e| Error::Cuda(format!("gemm: {e}")))
    })?;
    Ok(2.0 * (n as f64).powi(3) / (ms * 1e-3) / 1e12)
}

pub fn run(args: &MoeBenchArgs, tokens: &[usize], block_tokens: &[usize]) -> Result<()> {
    let dev = CudaDevice::get(0)?;
    println!("vlk bench moe (cuda: {dev:?})");
    let copy_gbs = copy_bandwidth(&dev)?;
    let peak = gemm_rate(&dev)?;
    println!("  device copy bandwidth {copy_gbs:.0} GB/s (read + write); cuBLAS bf16 GEMM 8192^3 {peak:.0} TFLOP/s");

    println!("\nrouting (fused softmax + top-k + renormalise, f32 logits) + stable dispatch plan (block 64):");
    println!(
        "  {:<14} {:>6} {:>4} {:>3} {:>11} {:>11} {:>11} {:>11}",
        "model", "T", "E", "k", "route us", "plan us", "both us", "loop us"
    );
    for &(name, e, k, _) in &MODELS {
        let cfg = RouterConfig::new(e, k, true)?;
        for &t in tokens {
            let logits = dev.upload(&random(t * e, 11 + t as u64, -3.0, 3.0))?;
            let mut ids = dev.alloc_zeros::<i32>(t * k)?;
            let mut w = dev.alloc_zeros::<f32>(t * k)?;
            let mut plan = CudaDispatchPlan::new(&dev, t, e, k, 64)?;
            // Single calls bracketed by events (GPU time incl. the gap between the two
            // launches), and a loop of 200 back-to-back pairs (per pair, as launched).
            let route_us = 1e3 * gpu_time(&dev, 1, || route_cuda(&dev, &logits, &cfg, &mut ids, &mut w))?;
            let plan_us = 1e3 * gpu_time(&dev, 1, || plan.compute(&dev, &ids))?;
            let both_us = 1e3
                * gpu_time(&dev, 1, || {
                    route_cuda(&dev, &logits, &cfg, &mut ids, &mut w)?;
                    plan.compute(&dev, &ids)
                })?;
            let loop_us = 1e3
                * gpu_time(&dev, 200, || {
                    route_cuda(&dev, &logits, &cfg, &mut ids, &mut w)?;
                    plan.compute(&dev, &ids)
                })?;
            plan.host_offsets(&dev)?;
            println!(
                "  {name:<14} {t:>6} {e:>4} {k:>3} {route_us:>11.2} {plan_us:>11.2} {both_us:>11.2} {loop_us:>11.2}"
            );
        }
    }

    if block_tokens.is_empty() {
        return Ok(());
    }
    let (h, i) = (args.hidden, args.intermediate);
    println!(
        "\nwhole MoE block, bf16 (cuBLAS per expert segment; includes allocation and one host sync), H = {h}, I = {i}:"
    );
    println!(
        "  {:<14} {:>6} {:>10} {:>10} {:>9}",
        "model", "T", "ms", "TFLOP/s", "/peak"
    );
    for &(name, e, k, shared) in &MODELS {
        let t0 = Instant::now();
        let w = build_weights(e, h, i, shared)?;
        let cfg = RouterConfig::new(e, k, true)?;
        let g = CudaMoe::<bf16>::new(&dev, &w, &cfg)?;
        println!(
            "  ({name}: weights built and uploaded in {:.1} s)",
            t0.elapsed().as_secs_f64()
        );
        // Self-check against the CPU block on a few tokens (bf16 tolerance).
        let xc = random(4 * h, 5, -1.0, 1.0);
        let cpu = moe_block(&xc, &w, &cfg)?;
        let xb: Vec<bf16> = xc.iter().map(|&v| bf16::from_f32(v)).collect();
        let out = g.forward(&dev.upload(&xb)?)?;
        let got: Vec<f32> = dev.download(&out.out)?.iter().map(|v| v.to_f32()).collect();
        let ids: Vec<u32> = dev.download(&out.ids)?.into_iter().map(|v| v as u32).collect();
        let err = got
            .iter()
            .zip(&cpu.out)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let scale = cpu.out.iter().fold(0f32, |m, v| m.max(v.abs()));
        println!(
            "  self-check vs CPU f32: ids equal {}, max |diff| {err:.3e} (max |out| {scale:.3e})",
            ids == cpu.ids
        );
        for &t in block_tokens {
            let x = dev.upload(
                &random(t * h, 3 + t as u64, -1.0, 1.0)
                    .into_iter()
                    .map(bf16::from_f32)
                    .collect::<Vec<_>>(),
            )?;
            let secs = crate::moe_bench::time(args.min_time, || {
                g.forward(&x)?;
                dev.synchronize()
            })?;
            let flops = block_flops(t, h, i, e, k, shared);
            println!(
                "  {name:<14} {t:>6} {:>10.3} {:>10.2} {:>9.4}",
                secs * 1e3,
                flops / secs / 1e12,
                flops / secs / 1e12 / peak
            );
        }
    }
    Ok(())
}
