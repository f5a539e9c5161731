//! `vlk bench rope`: RoPE throughput at Qwen2.5-VL-7B and Qwen3-VL-8B shapes against the
//! byte floor and the copy bandwidth measured in the same run, with a self-check.

use half::{bf16, f16};
use rayon::prelude::*;
use std::time::Instant;
use vlkernels::rope::{CudaRope, HeadsLayout, RopeParams, RopeVariant};
use vlkernels::{Device, Error, FloatElem, Result};

#[derive(clap::Args, Debug)]
pub struct RopeBenchArgs {
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// Tokens per call (N).
    #[arg(long, default_value_t = 8192)]
    pub tokens: usize,
    /// f32, f16 or bf16
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
    /// Timed calls per measurement.
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// CPU threads (default: all).
    #[arg(long)]
    pub threads: Option<usize>,
}

struct Shape {
    name: &'static str,
    hq: usize,
    hkv: usize,
    params: RopeParams,
}

fn shapes() -> Vec<Shape> {
    let plain = |p: &RopeParams| RopeParams {
        variant: RopeVariant::Plain,
        ..p.clone()
    };
    let mh = |p: &RopeParams, hkv: usize| RopeParams {
        variant: RopeVariant::MultiHead {
            sections: [hkv / 2, hkv / 4, hkv / 4],
        },
        ..p.clone()
    };
    let q25 = RopeParams::qwen2_5_vl();
    let q3 = RopeParams::qwen3_vl();
    vec![
        Shape {
            name: "qwen2.5-vl-7b  mrope",
            hq: 28,
            hkv: 4,
            params: q25.clone(),
        },
        Shape {
            name: "qwen2.5-vl-7b  rope",
            hq: 28,
            hkv: 4,
            params: plain(&q25),
        },
        Shape {
            name: "qwen3-vl-8b    mrope_i",
            hq: 32,
            hkv: 8,
            params: q3.clone(),
        },
        Shape {
            name: "qwen3-vl-8b    mhrope",
            hq: 32,
            hkv: 8,
            params: mh(&q3, 8),
        },
    ]
}

pub fn run(args: RopeBenchArgs) -> Result<()> {
    crate::init_threads(args.threads)?;
    if args.iters == 0 {
        return Err(Error::invalid("--iters 0: need at least one timed call"));
    }
    match args.dtype.as_str() {
        "f32" => bench::<f32>(&args),
        "f16" => bench::<f16>(&args),
        "bf16" => bench::<bf16>(&args),
        other => Err(Error::UnsupportedDType(format!(
            "--dtype {other} (expected f32, f16 or bf16)"
        ))),
    }
}

/// Bytes a RoPE call must move at least: read and write the rotated part of every q and
/// k row, and read the positions.
fn byte_floor<T>(s: &Shape, n: usize) -> usize {
    2 * n * (s.hq + s.hkv) * s.params.rotary_dim * std::mem::size_of::<T>() + s.params.variant.position_rows() * n * 8
}

fn gbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

fn bench<T: FloatElem>(args: &RopeBenchArgs) -> Result<()> {
    let n = args.tokens;
    let cuda = match args.device {
        Device::Cpu => None,
        Device::Cuda(i) => Some(vlkernels::cuda::CudaDevice::get(i)?),
    };
    let where_ = match &cuda {
        Some(d) => format!("{} ({})", args.device, d.name()),
        None => format!("cpu ({} threads)", rayon::current_num_threads()),
    };
    println!(
        "vlk bench rope: {where_}, {} , N = {n}, {} timed calls each",
        T::DTYPE,
        args.iters
    );
    // Copy bandwidth over the largest floor of the run: read + write of floor/2 bytes.
    let copy_bytes = shapes().iter().map(|s| byte_floor::<T>(s, n)).max().unwrap_or(0) / 2;
    let copy_gbps = match &cuda {
        Some(dev) => {
            let src = dev.alloc_zeros::<u8>(copy_bytes.max(1))?;
            let mut dst = dev.alloc_zeros::<u8>(copy_bytes.max(1))?;
            let ms = dev.time_ms(args.iters, || dev.copy_device(&src, &mut dst))?;
            gbps(2 * copy_bytes, ms / 1e3)
        }
        None => {
            let src = vec![1u8; copy_bytes];
            let mut dst = vec![0u8; copy_bytes];
            let secs = time_cpu(args.iters, || {
                dst.par_chunks_mut(1 << 20)
                    .zip(src.par_chunks(1 << 20))
                    .for_each(|(d, s)| d.copy_from_slice(s));
                Ok(())
            })?;
            gbps(2 * copy_bytes, secs)
        }
    };
    println!(
        "copy bandwidth: {copy_gbps:.1} GB/s ({} of {:.1} MB, read + write counted)",
        if cuda.is_some() {
            "cuMemcpyDtoD"
        } else {
            "parallel memcpy"
        },
        copy_bytes as f64 / 1e6
    );
    println!(
        "{:<24} {:>6} {:>10} {:>11} {:>9} {:>8}  check",
        "shape / variant", "heads", "time us", "floor MB", "GB/s", "of copy"
    );
    for s in shapes() {
        let (ql, kl) = HeadsLayout::fused_qkv(n, s.hq, s.hkv, s.params.head_dim);
        let len = n * (s.hq + 2 * s.hkv) * s.params.head_dim;
        let input: Vec<T> = (0..len)
            .map(|i| T::from_f32(((i * 7919) % 2001) as f32 / 1000.0 - 1.0))
            .collect();
        let rows = s.params.variant.position_rows();
        let pos: Vec<i64> = (0..rows * n).map(|i| ((i % n) + (i / n) * 3) as i64).collect();
        let (secs, out) = match &cuda {
            Some(dev) => {
                let rope = CudaRope::new(dev, &s.params, s.hq, s.hkv)?;
                let pos_d = dev.upload(&pos)?;
                let mut check = dev.upload(&input)?;
                rope.apply_fused(&pos_d, &mut check, &ql, &kl)?;
                let out = dev.download(&check)?;
                let mut buf = dev.upload(&input)?;
                let ms = dev.time_ms(args.iters, || rope.apply_fused(&pos_d, &mut buf, &ql, &kl))?;
                (ms / 1e3, out)
            }
            None => {
                let mut out = input.clone();
                vlkernels::rope::apply_fused(&s.params, &pos, &mut out, &ql, &kl)?;
                let mut buf = input.clone();
                let secs = time_cpu(args.iters, || {
                    vlkernels::rope::apply_fused(&s.params, &pos, &mut buf, &ql, &kl)
                })?;
                (secs, out)
            }
        };
        let check = self_check(&s.params, &pos, &input, &out, &ql, &kl)?;
        let floor = byte_floor::<T>(&s, n);
        let rate = gbps(floor, secs);
        println!(
            "{:<24} {:>6} {:>10.1} {:>11.1} {:>9.1} {:>7.0}%  {check}",
            s.name,
            format!("{}/{}", s.hq, s.hkv),
            secs * 1e6,
            floor as f64 / 1e6,
            rate,
            100.0 * rate / copy_gbps
        );
    }
    Ok(())
}

/// Median seconds per call over `iters` calls after one warm-up call.
fn time_cpu(iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut t = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        f()?;
        t.push(start.elapsed().as_secs_f64());
    }
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t[t.len() / 2])
}

/// Compares the first 64 tokens of one call with the f64 reference.
fn self_check<T: FloatElem>(
    p: &RopeParams,
    pos: &[i64],
    input: &[T],
    out: &[T],
    ql: &HeadsLayout,
    kl: &HeadsLayout,
) -> Result<String> {
    let n = ql.tokens;
    let m = n.min(64);
    let rows = p.variant.position_rows();
    let sub_pos: Vec<i64> = (0..rows).flat_map(|r| pos[r * n..r * n + m].to_vec()).collect();
    let (sq, sk) = (HeadsLayout { tokens: m, ..*ql }, HeadsLayout { tokens: m, ..*kl });
    let len = m * ql.token_stride;
    let mut want = input[..len].to_vec();
    vlkernels::rope::reference_fused(p, &sub_pos, &mut want, &sq, &sk)?;
    let tol = match T::DTYPE {
        vlkernels::DType::F32 => 1e-5,
        vlkernels::DType::F16 => 2e-3,
        _ => 1e-2,
    };
    let err = out[..len]
        .iter()
        .zip(&want)
        .map(|(g, w)| ((g.to_f32() - w.to_f32()).abs() / w.to_f32().abs().max(0.5)) as f64)
        .fold(0.0, f64::max);
    if err > tol {
        return Err(Error::invalid(format!(
            "self-check failed for {}: error {err:e} > {tol:e} against the reference",
            p.variant.name()
        )));
    }
    Ok(format!("ok ({err:.1e})"))
}
