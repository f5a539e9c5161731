//! CUDA path: one launch rotates q and k of every token (kernel `rope_fused_<dtype>` in
//! cuda/rope.cu). The per-pair tables are uploaded once per [`CudaRope`].

use super::params::{check_call, HeadsLayout, RopeParams, RopePlan};
use crate::cuda::{driver_err, CudaDevice, CudaSlice, DeviceRepr, LaunchConfig};
use crate::{DType, Error, FloatElem, Result};
use cudarc::driver::{DevicePtr, DevicePtrMut, PushKernelArg};
use std::sync::Arc;

/// Largest R/2 the kernel's shared tables hold (`ROPE_MAX_HALF` in cuda/rope.cu).
pub const CUDA_MAX_HALF: usize = 256;

/// Mirrors `struct RopeLaunch` in cuda/rope.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RopeLaunch {
    q: u64,
    k: u64,
    positions: u64,
    freq: u64,
    pair_axis: u64,
    head_axis: u64,
    n_tokens: i64,
    q_token_stride: i64,
    q_head_stride: i64,
    k_token_stride: i64,
    k_head_stride: i64,
    hq: i32,
    hkv: i32,
    half: i32,
    gptj: i32,
    per_head: i32,
    n_axes: i32,
    scale: f32,
}

// SAFETY: plain old data with the C layout the kernel expects.
unsafe impl DeviceRepr for RopeLaunch {}

/// A rotary embedding prepared for one device and one pair of head counts.
pub struct CudaRope {
    dev: Arc<CudaDevice>,
    params: RopeParams,
    hq: usize,
    hkv: usize,
    plan: RopePlan,
    freq: CudaSlice<f32>,
    pair_axis: CudaSlice<i32>,
    head_axis: CudaSlice<i32>,
}

impl CudaRope {
    /// Validates `p` for `hq` query and `hkv` KV heads and uploads its tables.
    pub fn new(dev: &Arc<CudaDevice>, p: &RopeParams, hq: usize, hkv: usize) -> Result<Self> {
        let plan = p.plan(hq, hkv)?;
        if plan.half > CUDA_MAX_HALF {
            return Err(Error::invalid(format!(
                "rotary_dim {}: the CUDA kernel handles at most {}",
                p.rotary_dim,
                2 * CUDA_MAX_HALF
            )));
        }
        if i32::try_from(hq + hkv).is_err() {
            return Err(Error::invalid(format!(
                "{hq} + {hkv} heads do not fit the kernel's 32-bit head index"
            )));
        }
        let pair_axis: Vec<i32> = plan.pair_axis.iter().map(|&a| a as i32).collect();
        let head_axis = plan.head_axis.clone().unwrap_or_else(|| vec![0]);
        Ok(CudaRope {
            dev: dev.clone(),
            params: p.clone(),
            hq,
            hkv,
            freq: dev.upload(&plan.freq)?,
            pair_axis: dev.upload(&pair_axis)?,
            head_axis: dev.upload(&head_axis)?,
            plan,
        })
    }

    pub fn params(&self) -> &RopeParams {
        &self.params
    }

    /// Rotates q and k (separate device buffers) in place; queued on the device's stream.
    pub fn apply<T: FloatElem>(
        &self,
        positions: &CudaSlice<i64>,
        q: &mut CudaSlice<T>,
        q_layout: &HeadsLayout,
        k: &mut CudaSlice<T>,
        k_layout: &HeadsLayout,
    ) -> Result<()> {
        self.check(q_layout, k_layout)?;
        check_call(
            &self.params,
            positions.len(),
            q_layout,
            q.len(),
            k_layout,
            k.len(),
            false,
        )?;
        let stream = self.dev.stream().clone();
        let (qp, _qg) = q.device_ptr_mut(&stream);
        let (kp, _kg) = k.device_ptr_mut(&stream);
        self.launch::<T>(positions, qp, q_layout, kp, k_layout)
    }

    /// As [`CudaRope::apply`], for q and k views inside one buffer (a fused qkv tensor).
    pub fn apply_fused<T: FloatElem>(
        &self,
        positions: &CudaSlice<i64>,
        qkv: &mut CudaSlice<T>,
        q_layout: &HeadsLayout,
        k_layout: &HeadsLayout,
    ) -> Result<()> {
        self.check(q_layout, k_layout)?;
        check_call(
            &self.params,
            positions.len(),
            q_layout,
            qkv.len(),
            k_layout,
            qkv.len(),
            true,
        )?;
        let stream = self.dev.stream().clone();
        let (p, _g) = qkv.device_ptr_mut(&stream);
        self.launch::<T>(positions, p, q_layout, p, k_layout)
    }

    fn check(&self, ql: &HeadsLayout, kl: &HeadsLayout) -> Result<()> {
        if ql.heads != self.hq || kl.heads != self.hkv {
            return Err(Error::ShapeMismatch(format!(
                "views have {} q / {} kv heads but this CudaRope was prepared for {} / {}",
                ql.heads, kl.heads, self.hq, self.hkv
            )));
        }
        Ok(())
    }

    /// Kernel name and elements per vector access for these views: the vector form
    /// needs 16-byte aligned rows and chunks that tile R/2.
    fn kernel_for<T: FloatElem>(&self, qp: u64, ql: &HeadsLayout, kp: u64, kl: &HeadsLayout) -> (String, usize) {
        let size = std::mem::size_of::<T>();
        let vb = 16 / size;
        let dtype = match T::DTYPE {
            DType::F32 => "f32",
            DType::F16 => "f16",
            _ => "bf16",
        };
        let pairs_per_chunk = if self.plan.gptj { vb / 2 } else { vb };
        let aligned = |p: u64, v: &HeadsLayout| {
            (p + (v.offset * size) as u64) % 16 == 0 && v.token_stride % vb == 0 && v.head_stride % vb == 0
        };
        if self.plan.half % pairs_per_chunk == 0 && aligned(qp, ql) && aligned(kp, kl) {
            (format!("rope_fused_{dtype}"), vb)
        } else {
            (format!("rope_fused_{dtype}_scalar"), 1)
        }
    }

    fn launch<T: FloatElem>(
        &self,
        positions: &CudaSlice<i64>,
        qp: u64,
        ql: &HeadsLayout,
        kp: u64,
        kl: &HeadsLayout,
    ) -> Result<()> {
        let tokens = ql.tokens;
        if tokens == 0 {
            return Ok(());
        }
        let (name, vb) = self.kernel_for::<T>(qp, ql, kp, kl);
        let func = self.dev.function("rope", &name)?;
        let stream = self.dev.stream().clone();
        let size = std::mem::size_of::<T>() as u64;
        let to_i64 = |x: usize, what: &str| {
            i64::try_from(x).map_err(|_| Error::Overflow(format!("{what} {x} exceeds the kernel's i64 index")))
        };
        let (pos_ptr, _pg) = positions.device_ptr(&stream);
        let (freq_ptr, _fg) = self.freq.device_ptr(&stream);
        let (pair_ptr, _ag) = self.pair_axis.device_ptr(&stream);
        let (head_ptr, _hg) = self.head_axis.device_ptr(&stream);
        let args = RopeLaunch {
            q: qp + ql.offset as u64 * size,
            k: kp + kl.offset as u64 * size,
            positions: pos_ptr,
            freq: freq_ptr,
            pair_axis: pair_ptr,
            head_axis: head_ptr,
            n_tokens: to_i64(tokens, "tokens")?,
            q_token_stride: to_i64(ql.token_stride, "q token_stride")?,
            q_head_stride: to_i64(ql.head_stride, "q head_stride")?,
            k_token_stride: to_i64(kl.token_stride, "k token_stride")?,
            k_head_stride: to_i64(kl.head_stride, "k head_stride")?,
            hq: self.hq as i32,
            hkv: self.hkv as i32,
            half: self.plan.half as i32,
            gptj: self.plan.gptj as i32,
            per_head: self.plan.head_axis.is_some() as i32,
            n_axes: self.plan.rows as i32,
            scale: self.plan.scale,
        };
        let pairs_per_chunk = if self.plan.gptj && vb > 1 { vb / 2 } else { vb };
        let items = (self.hq + self.hkv) * (self.plan.half / pairs_per_chunk);
        let threads = items.div_ceil(32).clamp(2, 8) as u32 * 32;
        let cfg = LaunchConfig {
            grid_dim: (tokens.min(i32::MAX as usize) as u32, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = stream.launch_builder(&func);
        b.arg(&args);
        // SAFETY: the arguments match the kernel's signature; the views were validated
        // to lie inside their buffers and not to overlap.
        unsafe { b.launch(cfg) }.map_err(driver_err(format!("launch of {name}")))?;
        Ok(())
    }
}
