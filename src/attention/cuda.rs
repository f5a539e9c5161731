//! CUDA path: kernels `attn_fwd_{bf16,f16}_d{64,72,80,96,128}` and `attn_combine_*` of
//! cuda/attention.cu. One launch covers every segment: the host builds a table of
//! (segment, first token) blocks of 64 rows (token × grouped query head). For decode
//! (few blocks, long caches) the keys are split across blocks (split-KV) and a second
//! launch merges the partial results.
//!
//! [`CudaAttentionPlan`] uploads the segment tables once; [`attention_cuda`] is the
//! one-shot form.

use super::{AttentionArgs, AttnElem};
use crate::cuda::{driver_err, CudaDevice, CudaSlice, LaunchConfig};
use crate::{DType, Error, Result};
use cudarc::driver::{DevicePtr, DevicePtrMut, PushKernelArg};
use std::sync::Arc;

/// Rows per block (`BLOCK_M` in cuda/attention.cu).
const BLOCK_M: usize = 64;
/// Keys per tile (`BLOCK_N`).
const BLOCK_N: usize = 64;
/// Head dimensions with a compiled kernel.
pub const CUDA_HEAD_DIMS: [usize; 5] = [64, 72, 80, 96, 128];
/// Most key splits of the split-KV mode.
pub const MAX_SPLITS: usize = 64;

/// An attention problem prepared for one device: validated shape and uploaded tables.
pub struct CudaAttentionPlan {
    dev: Arc<CudaDevice>,
    cu_q: Vec<usize>,
    cu_k: Vec<usize>,
    seqused_k: Option<Vec<usize>>,
    hq: usize,
    hkv: usize,
    d: usize,
    scale: f32,
    causal: bool,
    strides: [usize; 4],
    tokens_per_tile: usize,
    n_tiles: usize,
    splits: usize,
    cu_q_dev: CudaSlice<i32>,
    cu_k_dev: CudaSlice<i32>,
    seqused_dev: Option<CudaSlice<i32>>,
    tiles_dev: CudaSlice<i32>,
    ws_o: Option<CudaSlice<f32>>,
    ws_ml: Option<CudaSlice<f32>>,
}

impl CudaAttentionPlan {
    /// Validates `args` for the CUDA kernels and uploads the segment tables.
    /// `num_splits`: key splits per block (`None` picks: more when the blocks would not
    /// fill the GPU, as in decode; 1 for prefill).
    pub fn new(dev: &Arc<CudaDevice>, args: &AttentionArgs, num_splits: Option<usize>) -> Result<Self> {
        let (major, minor) = dev.compute_capability();
        if major < 8 {
            return Err(Error::Unavailable(format!(
                "CUDA attention needs sm_80 or newer (mma.sync bf16); device is sm_{major}{minor}"
            )));
        }
        if !CUDA_HEAD_DIMS.contains(&args.head_dim) {
            return Err(Error::invalid(format!(
                "head_dim {} has no CUDA kernel (compiled: {CUDA_HEAD_DIMS:?})",
                args.head_dim
            )));
        }
        // Structural checks (buffer lengths are checked at each run).
        let nq = args.num_q_tokens();
        let hq_d = args.num_q_heads.saturating_mul(args.head_dim);
        let hkv_d = args.num_kv_heads.saturating_mul(args.head_dim);
        let span = |rows: usize, stride: usize, width: usize| if rows == 0 { 0 } else { (rows - 1) * stride + width };
        args.validate(
            span(nq, args.q_row_stride, hq_d),
            span(args.num_k_tokens(), args.k_row_stride, hkv_d),
            span(args.num_k_tokens(), args.v_row_stride, hkv_d),
            span(nq, args.out_row_stride, hq_d),
        )?;
        let group = args.group_size();
        if group > BLOCK_M {
            return Err(Error::invalid(format!(
                "{group} query heads per key/value head: the CUDA kernel packs at most {BLOCK_M}"
            )));
        }
        for (name, s) in [
            ("q", args.q_row_stride),
            ("k", args.k_row_stride),
            ("v", args.v_row_stride),
            ("out", args.out_row_stride),
        ] {
            if s % 8 != 0 {
                return Err(Error::invalid(format!(
                    "{name} row stride {s}: the CUDA kernel needs a multiple of 8 elements (16-byte rows)"
                )));
            }
        }
        let fits_i32 = |what: &str, x: usize| {
            i32::try_from(x).map_err(|_| Error::Overflow(format!("{what} {x} exceeds the kernel's 32-bit token index")))
        };
        fits_i32("query tokens", nq)?;
        fits_i32("key tokens", args.num_k_tokens())?;

        let tokens_per_tile = (BLOCK_M / group).max(1);
        let mut tiles = Vec::new();
        let mut max_key_tiles = 0;
        for s in 0..args.num_segments() {
            let seg = args.segment(s);
            max_key_tiles = max_key_tiles.max(seg.k_len.div_ceil(BLOCK_N));
            let mut t0 = 0;
            while t0 < seg.q_len {
                tiles.push(s as i32);
                tiles.push(t0 as i32);
                t0 += tokens_per_tile;
            }
        }
        let n_tiles = tiles.len() / 2;
        if tiles.is_empty() {
            tiles = vec![0, 0]; // never read: nothing is launched
        }
        let blocks = n_tiles * args.num_kv_heads;
        let splits = match num_splits {
            Some(0) => return Err(Error::invalid("num_splits 0: need at least one")),
            Some(n) if n > MAX_SPLITS => {
                return Err(Error::invalid(format!("num_splits {n} exceeds {MAX_SPLITS}")));
            }
            Some(n) => n,
            None => {
                let sms = dev
                    .context()
                    .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
                    .map_err(driver_err("multiprocessor count"))?
                    .max(1) as usize;
                // Aim at two waves of blocks, keep ≥ 4 key tiles per split.
                if blocks == 0 || blocks >= sms {
                    1
                } else {
                    (2 * sms).div_ceil(blocks).min(max_key_tiles / 4).clamp(1, MAX_SPLITS)
                }
            }
        };
        if splits > 1 && nq.saturating_mul(args.num_q_heads) > u32::MAX as usize {
            return Err(Error::invalid(format!(
                "{nq} tokens × {} heads exceed the split-KV combine grid",
                args.num_q_heads
            )));
        }
        let to_i32 = |v: &[usize]| v.iter().map(|&x| x as i32).collect::<Vec<i32>>();
        let (ws_o, ws_ml) = if splits > 1 {
            let rows = nq
                .checked_mul(args.num_q_heads)
                .and_then(|r| r.checked_mul(splits))
                .ok_or_else(|| Error::Overflow("split-KV workspace size".into()))?;
            (
                Some(dev.alloc_zeros::<f32>(rows * args.head_dim)?),
                Some(dev.alloc_zeros::<f32>(rows * 2)?),
            )
        } else {
            (None, None)
        };
        Ok(CudaAttentionPlan {
            dev: dev.clone(),
            cu_q: args.cu_seqlens_q.to_vec(),
            cu_k: args.cu_seqlens_k.to_vec(),
            seqused_k: args.seqused_k.map(|u| u.to_vec()),
            hq: args.num_q_heads,
            hkv: args.num_kv_heads,
            d: args.head_dim,
            scale: args.scale,
            causal: args.causal,
            strides: [
                args.q_row_stride,
                args.k_row_stride,
                args.v_row_stride,
                args.out_row_stride,
            ],
            tokens_per_tile,
            n_tiles,
            splits,
            cu_q_dev: dev.upload(&to_i32(args.cu_seqlens_q))?,
            cu_k_dev: dev.upload(&to_i32(args.cu_seqlens_k))?,
            seqused_dev: match args.seqused_k {
                Some(u) => Some(dev.upload(&to_i32(u))?),
                None => None,
            },
            tiles_dev: dev.upload(&tiles)?,
            ws_o,
            ws_ml,
        })
    }

    /// Key splits this plan launches with.
    pub fn num_splits(&self) -> usize {
        self.splits
    }

    fn args(&self) -> AttentionArgs<'_> {
        let mut a = AttentionArgs::new(&self.cu_q, &self.cu_k, self.hq, self.hkv, self.d)
            .with_scale(self.scale)
            .with_causal(self.causal)
            .with_row_strides(self.strides[0], self.strides[1], self.strides[2], self.strides[3]);
        if let Some(u) = &self.seqused_k {
            a = a.with_seqused_k(u);
        }
        a
    }

    /// Queues the attention of `q`, `k`, `v` into `out` on the device's stream.
    /// Buffers (or views of them) must start 16-byte aligned.
    pub fn run<T, Q, K, V, O>(&self, q: &Q, k: &K, v: &V, out: &mut O) -> Result<()>
    where
        T: AttnElem,
        Q: DevicePtr<T>,
        K: DevicePtr<T>,
        V: DevicePtr<T>,
        O: DevicePtrMut<T>,
    {
        let dtype = match T::DTYPE {
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            other => {
                return Err(Error::UnsupportedDType(format!(
                    "{other}: the CUDA attention kernels take bf16 or f16"
                )))
            }
        };
        self.args().validate(q.len(), k.len(), v.len(), out.len())?;
        if self.n_tiles == 0 {
            return Ok(());
        }
        let stream = self.dev.stream().clone();
        let (qp, _qg) = q.device_ptr(&stream);
        let (kp, _kg) = k.device_ptr(&stream);
        let (vp, _vg) = v.device_ptr(&stream);
        let (op, _og) = out.device_ptr_mut(&stream);
        for (name, p) in [("q", qp), ("k", kp), ("v", vp), ("out", op)] {
            if p % 16 != 0 {
                return Err(Error::invalid(format!(
                    "{name} device address {p:#x} is not 16-byte aligned (start views at a multiple of 8 elements)"
                )));
            }
        }
        let (cuq, _g1) = self.cu_q_dev.device_ptr(&stream);
        let (cuk, _g2) = self.cu_k_dev.device_ptr(&stream);
        let (tiles, _g3) = self.tiles_dev.device_ptr(&stream);
        let used = self.seqused_dev.as_ref().map(|u| u.device_ptr(&stream));
        let wso = self.ws_o.as_ref().map(|w| w.device_ptr(&stream));
        let wsml = self.ws_ml.as_ref().map(|w| w.device_ptr(&stream));
        let ptr_or_null = |x: &Option<(u64, _)>| x.as_ref().map_or(0u64, |(p, _)| *p);
        let (used_p, wso_p, wsml_p) = (ptr_or_null(&used), ptr_or_null(&wso), ptr_or_null(&wsml));
        let [qs, ks, vs, os] = self.strides.map(|s| s as i64);
        let (hq, hkv, tpt) = (self.hq as i32, self.hkv as i32, self.tokens_per_tile as i32);
        let scale_log2 = self.scale * std::f32::consts::LOG2_E;
        let causal = self.causal as i32;
        let splits = self.splits as i32;
        let nq = *self.cu_q.last().unwrap_or(&0) as i64;

        let name = format!("attn_fwd_{dtype}_d{}", self.d);
        let func = self.dev.function("attention", &name)?;
        let dp = self.d.div_ceil(16) * 16;
        let cfg = LaunchConfig {
            grid_dim: (self.n_tiles as u32, self.hkv as u32, self.splits as u32),
            block_dim: (128, 1, 1),
            shared_mem_bytes: (2 * BLOCK_N * (dp + 8) * 2) as u32,
        };
        if self.n_tiles > u32::MAX as usize || self.hkv > 65535 {
            return Err(Error::invalid(format!(
                "{} blocks × {} heads exceed the CUDA grid",
                self.n_tiles, self.hkv
            )));
        }
        let mut b = stream.launch_builder(&func);
        b.arg(&qp)
            .arg(&kp)
            .arg(&vp)
            .arg(&op)
            .arg(&cuq)
            .arg(&cuk)
            .arg(&used_p)
            .arg(&tiles);
        b.arg(&wso_p).arg(&wsml_p).arg(&qs).arg(&ks).arg(&vs).arg(&os);
        b.arg(&hq)
            .arg(&hkv)
            .arg(&tpt)
            .arg(&scale_log2)
            .arg(&causal)
            .arg(&splits)
            .arg(&nq);
        // SAFETY: the arguments match the kernel's signature; `validate` checked that
        // every addressed row lies inside its buffer; the tables were built for this shape.
        unsafe { b.launch(cfg) }.map_err(driver_err(format!("launch of {name}")))?;

        if self.splits > 1 {
            let name = format!("attn_combine_{dtype}");
            let func = self.dev.function("attention", &name)?;
            let rows = nq as usize * self.hq;
            let cfg = LaunchConfig {
                grid_dim: (rows as u32, 1, 1),
                block_dim: (self.d as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            let d = self.d as i32;
            let mut b = stream.launch_builder(&func);
            b.arg(&wso_p)
                .arg(&wsml_p)
                .arg(&op)
                .arg(&os)
                .arg(&hq)
                .arg(&d)
                .arg(&splits)
                .arg(&nq);
            // SAFETY: as above; the workspace holds splits × rows partials.
            unsafe { b.launch(cfg) }.map_err(driver_err(format!("launch of {name}")))?;
        }
        Ok(())
    }
}

/// One-shot CUDA attention: plans (uploading the tables) and runs on `dev`'s stream.
pub fn attention_cuda<T, Q, K, V, O>(
    dev: &Arc<CudaDevice>,
    args: &AttentionArgs,
    q: &Q,
    k: &K,
    v: &V,
    out: &mut O,
    num_splits: Option<usize>,
) -> Result<()>
where
    T: AttnElem,
    Q: DevicePtr<T>,
    K: DevicePtr<T>,
    V: DevicePtr<T>,
    O: DevicePtrMut<T>,
{
    CudaAttentionPlan::new(dev, args, num_splits)?.run(q, k, v, out)
}
