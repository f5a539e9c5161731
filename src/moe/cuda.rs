//! CUDA path of the MoE stages (kernels in cuda/moe.cu) and the whole block with
//! cuBLAS GEMMs per expert segment. Same contracts as the CPU path: ties go to the
//! lower expert index, the dispatch order is stable, the unpermute sums slots in order.

use std::sync::Arc;

use cudarc::cublas::sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{DevicePtr, DevicePtrMut, PushKernelArg, ValidAsZeroBits};

use super::dispatch::DispatchPlan;
use super::router::RouterConfig;
use super::weights::MoeWeights;
use crate::cuda::{driver_err, CudaDevice, CudaSlice, DeviceRepr, LaunchConfig};
use crate::{DType, Error, FloatElem, Result};

fn dtype_name<T: FloatElem>() -> Result<&'static str> {
    match T::DTYPE {
        DType::F32 => Ok("f32"),
        DType::BF16 => Ok("bf16"),
        other => Err(Error::UnsupportedDType(format!(
            "{other}: the CUDA MoE kernels take f32 or bf16"
        ))),
    }
}

fn i64_of(x: usize, what: &str) -> Result<i64> {
    i64::try_from(x).map_err(|_| Error::Overflow(format!("{what} {x} exceeds the kernel's 64-bit index")))
}

fn launch<A: DeviceRepr>(dev: &CudaDevice, kernel: &str, args: &A, cfg: LaunchConfig) -> Result<()> {
    let func = dev.function("moe", kernel)?;
    let stream = dev.stream().clone();
    let mut b = stream.launch_builder(&func);
    b.arg(args);
    // SAFETY: each caller passes the repr(C) mirror of the kernel's argument struct,
    // with every pointer and extent checked against its buffer.
    unsafe { b.launch(cfg) }.map_err(driver_err(format!("launch of {kernel}")))?;
    Ok(())
}

fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::ShapeMismatch(format!(
            "{what} has {got} elements, expected {want}"
        )));
    }
    Ok(())
}

/// Mirrors `struct TopkLaunch` in cuda/moe.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct TopkLaunch {
    logits: u64,
    ids: u64,
    weights: u64,
    tokens: i64,
    experts: i32,
    k: i32,
    norm: i32,
}
// SAFETY: plain data in the kernel's C layout.
unsafe impl DeviceRepr for TopkLaunch {}

/// Fused softmax + top-k (+ renormalisation) on the GPU: `logits [T, E]` (f32 or bf16)
/// → `ids [T, k]` (a token with a non-finite logit gets ids -1, which
/// [`CudaDispatchPlan::compute`] then reports) and f32 `weights [T, k]`.
pub fn route_cuda<T: FloatElem>(
    dev: &CudaDevice,
    logits: &CudaSlice<T>,
    cfg: &RouterConfig,
    ids: &mut CudaSlice<i32>,
    weights: &mut CudaSlice<f32>,
) -> Result<()> {
    cfg.validate()?;
    let name = dtype_name::<T>()?;
    if logits.len() % cfg.num_experts != 0 {
        return Err(Error::ShapeMismatch(format!(
            "{} logits is not a whole number of rows of {} experts",
            logits.len(),
            cfg.num_experts
        )));
    }
    let tokens = logits.len() / cfg.num_experts;
    check_len("ids", ids.len(), tokens * cfg.top_k)?;
    check_len("weights", weights.len(), tokens * cfg.top_k)?;
    if tokens == 0 {
        return Ok(());
    }
    let per_lane = cfg.num_experts.div_ceil(32).next_power_of_two();
    let stream = dev.stream().clone();
    let (lp, _lg) = logits.device_ptr(&stream);
    let (ip, _ig) = ids.device_ptr_mut(&stream);
    let (wp, _wg) = weights.device_ptr_mut(&stream);
    let args = TopkLaunch {
        logits: lp,
        ids: ip,
        weights: wp,
        tokens: i64_of(tokens, "tokens")?,
        experts: cfg.num_experts as i32,
        k: cfg.top_k as i32,
        norm: cfg.norm_topk_prob as i32,
    };
    const WARPS: usize = 4;
    let blocks = tokens.div_ceil(WARPS);
    let grid = u32::try_from(blocks).map_err(|_| Error::Overflow(format!("{tokens} tokens: grid too large")))?;
    let cfg_l = LaunchConfig {
        grid_dim: (grid, 1, 1),
        block_dim: (WARPS as u32 * 32, 1, 1),
        shared_mem_bytes: 0,
    };
    launch(dev, &format!("moe_topk_softmax_{name}_v{per_lane}"), &args, cfg_l)
}

/// Mirrors `struct AlignLaunch` in cuda/moe.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct AlignLaunch {
    ids: u64,
    counts: u64,
    offsets: u64,
    padded_offsets: u64,
    sorted: u64,
    inverse: u64,
    padded_sorted: u64,
    block_experts: u64,
    status: u64,
    n: i64,
    experts: i32,
    block: i32,
}
// SAFETY: plain data in the kernel's C layout.
unsafe impl DeviceRepr for AlignLaunch {}

/// A dispatch plan in device memory (int32 arrays, same meaning as [`DispatchPlan`]).
/// `padded_sorted` and `block_experts` are allocated for the worst case; their used
/// length is `padded_offsets[E]` (and that divided by the block size).
pub struct CudaDispatchPlan {
    pub num_experts: usize,
    pub top_k: usize,
    pub tokens: usize,
    pub block_size: usize,
    pub counts: CudaSlice<i32>,
    pub offsets: CudaSlice<i32>,
    pub padded_offsets: CudaSlice<i32>,
    pub sorted: CudaSlice<i32>,
    pub inverse: CudaSlice<i32>,
    pub padded_sorted: CudaSlice<i32>,
    pub block_experts: CudaSlice<i32>,
    status: CudaSlice<i64>,
}

impl CudaDispatchPlan {
    /// Buffers for `tokens * top_k` assignments over `num_experts` experts.
    pub fn new(dev: &CudaDevice, tokens: usize, num_experts: usize, top_k: usize, block_size: usize) -> Result<Self> {
        if num_experts == 0 || num_experts > super::MAX_EXPERTS {
            return Err(Error::invalid(format!(
                "num_experts {num_experts} is outside 1..={}",
                super::MAX_EXPERTS
            )));
        }
        if top_k == 0 || top_k > num_experts {
            return Err(Error::invalid(format!("top_k {top_k} is outside 1..={num_experts}")));
        }
        if block_size == 0 || block_size > 1 << 16 {
            return Err(Error::invalid(format!("block_size {block_size} is outside 1..=65536")));
        }
        let n = tokens
            .checked_mul(top_k)
            .ok_or_else(|| Error::Overflow(format!("{tokens} tokens x top_k {top_k}")))?;
        let capacity = num_experts as u64 * (block_size as u64 - 1) + n as u64;
        if capacity >= i32::MAX as u64 {
            return Err(Error::Overflow(format!(
                "{n} assignments plus padding ({capacity}) do not fit the kernel's 32-bit positions"
            )));
        }
        let capacity = capacity as usize;
        Ok(CudaDispatchPlan {
            num_experts,
            top_k,
            tokens,
            block_size,
            counts: dev.alloc_zeros(num_experts)?,
            offsets: dev.alloc_zeros(num_experts + 1)?,
            padded_offsets: dev.alloc_zeros(num_experts + 1)?,
            sorted: dev.alloc_zeros(n.max(1))?,
            inverse: dev.alloc_zeros(n.max(1))?,
            padded_sorted: dev.alloc_zeros(capacity.max(1))?,
            block_experts: dev.alloc_zeros(capacity.div_ceil(block_size).max(1))?,
            status: dev.alloc_zeros(1)?,
        })
    }

    /// Assignments in the plan (`tokens * top_k`).
    pub fn assignments(&self) -> usize {
        self.tokens * self.top_k
    }

    /// Builds the plan from `ids [T, k]` with one launch (no host synchronisation).
    pub fn compute(&mut self, dev: &CudaDevice, ids: &CudaSlice<i32>) -> Result<()> {
        check_len("ids", ids.len(), self.assignments())?;
        let n = i64_of(self.assignments(), "assignments")?;
        let (experts, block) = (self.num_experts as i32, self.block_size as i32);
        let stream = dev.stream().clone();
        let (idp, _g0) = ids.device_ptr(&stream);
        let (c, _g1) = self.counts.device_ptr_mut(&stream);
        let (o, _g2) = self.offsets.device_ptr_mut(&stream);
        let (po, _g3) = self.padded_offsets.device_ptr_mut(&stream);
        let (s, _g4) = self.sorted.device_ptr_mut(&stream);
        let (inv, _g5) = self.inverse.device_ptr_mut(&stream);
        let (ps, _g6) = self.padded_sorted.device_ptr_mut(&stream);
        let (be, _g7) = self.block_experts.device_ptr_mut(&stream);
        let (st, _g8) = self.status.device_ptr_mut(&stream);
        let args = AlignLaunch {
            ids: idp,
            counts: c,
            offsets: o,
            padded_offsets: po,
            sorted: s,
            inverse: inv,
            padded_sorted: ps,
            block_experts: be,
            status: st,
            n,
            experts,
            block,
        };
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (512, 1, 1),
            shared_mem_bytes: 0,
        };
        launch(dev, "moe_align_stable", &args, cfg)
    }

    /// Segment starts `[E + 1]` on the host, after checking every id was valid.
    pub fn host_offsets(&self, dev: &CudaDevice) -> Result<Vec<usize>> {
        self.check_status(dev)?;
        Ok(dev.download(&self.offsets)?.into_iter().map(|v| v as usize).collect())
    }

    fn check_status(&self, dev: &CudaDevice) -> Result<()> {
        let first_bad = dev.download(&self.status)?[0];
        if first_bad != self.assignments() as i64 {
            let (t, j) = (first_bad as usize / self.top_k, first_bad as usize % self.top_k);
            return Err(Error::invalid(format!(
                "expert id at token {t}, slot {j} is not in 0..{} (a non-finite router logit gives -1)",
                self.num_experts
            )));
        }
        Ok(())
    }

    /// Copies the whole plan to the host (for tests and inspection).
    pub fn to_host(&self, dev: &CudaDevice) -> Result<DispatchPlan> {
        self.check_status(dev)?;
        let n = self.assignments();
        let us = |v: Vec<i32>| v.into_iter().map(|x| x as usize).collect::<Vec<_>>();
        let u32s = |v: Vec<i32>, len: usize| v.into_iter().take(len).map(|x| x as u32).collect::<Vec<_>>();
        let padded_offsets = us(dev.download(&self.padded_offsets)?);
        let total = padded_offsets[self.num_experts];
        Ok(DispatchPlan {
            num_experts: self.num_experts,
            top_k: self.top_k,
            tokens: self.tokens,
            block_size: self.block_size,
            counts: u32s(dev.download(&self.counts)?, self.num_experts),
            offsets: us(dev.download(&self.offsets)?),
            sorted: u32s(dev.download(&self.sorted)?, n),
            inverse: u32s(dev.download(&self.inverse)?, n),
            padded_sorted: u32s(dev.download(&self.padded_sorted)?, total),
            block_experts: u32s(dev.download(&self.block_experts)?, total / self.block_size),
            padded_offsets,
        })
    }
}

/// Mirrors `struct PermuteLaunch` in cuda/moe.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct PermuteLaunch {
    x: u64,
    idx: u64,
    out: u64,
    rows: i64,
    hidden: i64,
    pad: i64,
    k: i32,
}
// SAFETY: plain data in the kernel's C layout.
unsafe impl DeviceRepr for PermuteLaunch {}

fn vector_ok<T>(ptrs: &[u64], hidden: usize) -> bool {
    let size = std::mem::size_of::<T>();
    ptrs.iter().all(|p| p % 16 == 0) && (hidden * size) % 16 == 0
}

fn grid_for(rows: usize) -> u32 {
    rows.clamp(1, 65535 * 16) as u32
}

/// Gathers token rows into expert order: `out [rows, H]`, row `p` is the token of
/// `sorted[p]` (or, with `padded`, of `padded_sorted[p]`, padding rows zero-filled).
/// With `padded`, `out` holds the plan's padded length (`padded_offsets[E]` rows, known
/// on the host after [`CudaDispatchPlan::to_host`] or from a worst-case bound); rows
/// past that length are not meaningful.
pub fn permute_tokens_cuda<T: FloatElem>(
    dev: &CudaDevice,
    x: &CudaSlice<T>,
    hidden: usize,
    plan: &CudaDispatchPlan,
    padded: bool,
    out: &mut CudaSlice<T>,
) -> Result<()> {
    let name = dtype_name::<T>()?;
    check_len("x", x.len(), plan.tokens * hidden)?;
    let idx = if padded { &plan.padded_sorted } else { &plan.sorted };
    let rows = if padded {
        out.len() / hidden.max(1)
    } else {
        plan.assignments()
    };
    if padded && (rows > idx.len() || out.len() % hidden.max(1) != 0) {
        return Err(Error::ShapeMismatch(format!(
            "padded output of {} elements: more rows than the plan's capacity {}",
            out.len(),
            idx.len()
        )));
    }
    check_len("permuted output", out.len(), rows * hidden)?;
    if rows == 0 || hidden == 0 {
        return Ok(());
    }
    let stream = dev.stream().clone();
    let (xp, _g0) = x.device_ptr(&stream);
    let (ip, _g1) = idx.device_ptr(&stream);
    let (op, _g2) = out.device_ptr_mut(&stream);
    let vec = vector_ok::<T>(&[xp, op], hidden);
    let args = PermuteLaunch {
        x: xp,
        idx: ip,
        out: op,
        rows: i64_of(rows, "rows")?,
        hidden: i64_of(hidden, "hidden")?,
        pad: i64_of(plan.assignments(), "assignments")?,
        k: plan.top_k as i32,
    };
    let kernel = format!("moe_permute_{name}{}", if vec { "" } else { "_scalar" });
    let threads = (hidden * std::mem::size_of::<T>() / 16).clamp(32, 256) as u32;
    let cfg = LaunchConfig {
        grid_dim: (grid_for(rows), 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    };
    launch(dev, &kernel, &args, cfg)
}

/// Mirrors `struct SiluMulLaunch` in cuda/moe.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct SiluMulLaunch {
    input: u64,
    out: u64,
    rows: i64,
    inter: i64,
}
// SAFETY: plain data in the kernel's C layout.
unsafe impl DeviceRepr for SiluMulLaunch {}

/// `out [rows, I] = silu(in[:, :I]) * in[:, I:]` for `in [rows, 2I]`.
pub fn silu_mul_cuda<T: FloatElem>(
    dev: &CudaDevice,
    input: &CudaSlice<T>,
    inter: usize,
    out: &mut CudaSlice<T>,
) -> Result<()> {
    let name = dtype_name::<T>()?;
    if inter == 0 || input.len() % (2 * inter) != 0 {
        return Err(Error::ShapeMismatch(format!(
            "input of {} elements is not rows of 2 x intermediate {inter}",
            input.len()
        )));
    }
    let rows = input.len() / (2 * inter);
    check_len("silu_mul output", out.len(), rows * inter)?;
    if rows == 0 {
        return Ok(());
    }
    let stream = dev.stream().clone();
    let (ip, _g0) = input.device_ptr(&stream);
    let (op, _g1) = out.device_ptr_mut(&stream);
    let args = SiluMulLaunch {
        input: ip,
        out: op,
        rows: i64_of(rows, "rows")?,
        inter: i64_of(inter, "intermediate")?,
    };
    let blocks = (rows * inter).div_ceil(256).clamp(1, 65535 * 8) as u32;
    let cfg = LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    launch(dev, &format!("moe_silu_mul_{name}"), &args, cfg)
}

/// Mirrors `struct UnpermuteLaunch` in cuda/moe.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct UnpermuteLaunch {
    y: u64,
    weights: u64,
    inverse: u64,
    out: u64,
    shared_y: u64,
    shared_gate: u64,
    tokens: i64,
    hidden: i64,
    k: i32,
}
// SAFETY: plain data in the kernel's C layout.
unsafe impl DeviceRepr for UnpermuteLaunch {}

/// Weighted sum back to token order: `out[t] = Σ_j w[t, j] · y[inverse[t k + j]]`,
/// plus `sigmoid(gate[t]) · shared_y[t]` when `shared = Some((shared_y, gate))`.
pub fn unpermute_tokens_cuda<T: FloatElem>(
    dev: &CudaDevice,
    y: &CudaSlice<T>,
    hidden: usize,
    plan: &CudaDispatchPlan,
    weights: &CudaSlice<f32>,
    shared: Option<(&CudaSlice<T>, &CudaSlice<T>)>,
    out: &mut CudaSlice<T>,
) -> Result<()> {
    let name = dtype_name::<T>()?;
    let n = plan.assignments();
    check_len("expert output", y.len(), n * hidden)?;
    check_len("weights", weights.len(), n)?;
    check_len("out", out.len(), plan.tokens * hidden)?;
    if let Some((sy, sg)) = shared {
        check_len("shared expert output", sy.len(), plan.tokens * hidden)?;
        check_len("shared expert gate", sg.len(), plan.tokens)?;
    }
    if plan.tokens == 0 || hidden == 0 {
        return Ok(());
    }
    let stream = dev.stream().clone();
    let (yp, _g0) = y.device_ptr(&stream);
    let (wp, _g1) = weights.device_ptr(&stream);
    let (ip, _g2) = plan.inverse.device_ptr(&stream);
    let (op, _g3) = out.device_ptr_mut(&stream);
    let (sy, _g4) = match shared {
        Some((s, _)) => {
            let (p, g) = s.device_ptr(&stream);
            (p, Some(g))
        }
        None => (0, None),
    };
    let (sg, _g5) = match shared {
        Some((_, g)) => {
            let (p, gg) = g.device_ptr(&stream);
            (p, Some(gg))
        }
        None => (0, None),
    };
    let args = UnpermuteLaunch {
        y: yp,
        weights: wp,
        inverse: ip,
        out: op,
        shared_y: sy,
        shared_gate: sg,
        tokens: i64_of(plan.tokens, "tokens")?,
        hidden: i64_of(hidden, "hidden")?,
        k: plan.top_k as i32,
    };
    let cfg = LaunchConfig {
        grid_dim: (grid_for(plan.tokens), 1, 1),
        block_dim: (hidden.clamp(32, 256) as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    launch(dev, &format!("moe_unpermute_{name}"), &args, cfg)
}

/// A whole MoE block on one GPU: weights uploaded once (as `T`), cuBLAS GEMMs per
/// expert segment, the kernels above for everything else.
pub struct CudaMoe<T: FloatElem> {
    dev: Arc<CudaDevice>,
    blas: CudaBlas,
    cfg: RouterConfig,
    hidden: usize,
    inter: usize,
    in_out: bool,
    router: CudaSlice<T>,
    gate_up: CudaSlice<T>,
    down: CudaSlice<T>,
    shared: Option<SharedOnDevice<T>>,
}

struct SharedOnDevice<T> {
    inter: usize,
    gate_up: CudaSlice<T>,
    down: CudaSlice<T>,
    gate: CudaSlice<T>,
}

/// Results of [`CudaMoe::forward`], on the device.
pub struct CudaMoeOutput<T> {
    /// `[T, H]`.
    pub out: CudaSlice<T>,
    /// `[T, E]`.
    pub logits: CudaSlice<T>,
    /// `[T, k]`.
    pub ids: CudaSlice<i32>,
    /// `[T, k]`.
    pub weights: CudaSlice<f32>,
    pub plan: CudaDispatchPlan,
}

impl<T: FloatElem + ValidAsZeroBits> CudaMoe<T>
where
    CudaBlas: Gemm<T>,
{
    /// Uploads `w` (rounded to `T`) for routing with `cfg`.
    pub fn new(dev: &Arc<CudaDevice>, w: &MoeWeights, cfg: &RouterConfig) -> Result<Self> {
        dtype_name::<T>()?;
        cfg.validate()?;
        if cfg.num_experts != w.num_experts {
            return Err(Error::ShapeMismatch(format!(
                "router config has {} experts, the weights {}",
                cfg.num_experts, w.num_experts
            )));
        }
        let up = |v: &[f32]| -> Result<CudaSlice<T>> {
            let host: Vec<T> = v.iter().map(|&x| T::from_f32(x)).collect();
            dev.upload(&host)
        };
        let (gate_up, down, in_out) = w.fused_storage();
        let shared = match &w.shared {
            None => None,
            Some(s) => {
                let (gu, dn, g) = s.storage();
                Some(SharedOnDevice {
                    inter: s.intermediate,
                    gate_up: up(gu)?,
                    down: up(dn)?,
                    gate: up(g)?,
                })
            }
        };
        let blas = CudaBlas::new(dev.stream().clone()).map_err(|e| Error::Cuda(format!("cuBLAS handle: {e}")))?;
        Ok(CudaMoe {
            dev: dev.clone(),
            blas,
            cfg: *cfg,
            hidden: w.hidden,
            inter: w.intermediate,
            in_out,
            router: up(&w.router)?,
            gate_up: up(gate_up)?,
            down: up(down)?,
            shared,
        })
    }

    /// `C (m x n, col-major, ldc) = op(A) · B`, B col-major `k x n` with `ldb`.
    #[allow(clippy::too_many_arguments)]
    fn gemm<A: DevicePtr<T>, B: DevicePtr<T>, C: DevicePtrMut<T>>(
        &self,
        trans_a: bool,
        m: usize,
        n: usize,
        k: usize,
        a: &A,
        lda: usize,
        b: &B,
        ldb: usize,
        c: &mut C,
        ldc: usize,
    ) -> Result<()> {
        let int = |v: usize, what: &str| {
            i32::try_from(v).map_err(|_| Error::Overflow(format!("GEMM {what} {v} exceeds cuBLAS's int")))
        };
        let cfg = GemmConfig {
            transa: if trans_a { CUBLAS_OP_T } else { CUBLAS_OP_N },
            transb: CUBLAS_OP_N,
            m: int(m, "m")?,
            n: int(n, "n")?,
            k: int(k, "k")?,
            alpha: T::from_f32(1.0),
            lda: int(lda, "lda")?,
            ldb: int(ldb, "ldb")?,
            beta: T::from_f32(0.0),
            ldc: int(ldc, "ldc")?,
        };
        // SAFETY: callers pass views whose extents cover the (m, n, k) problem with
        // these leading dimensions (checked by the slicing that made them).
        unsafe { self.blas.gemm(cfg, a, b, c) }.map_err(|e| Error::Cuda(format!("cuBLAS gemm: {e}")))
    }

    /// Runs the block on `x [T, H]` (device memory, `T` tokens).
    pub fn forward(&self, x: &CudaSlice<T>) -> Result<CudaMoeOutput<T>> {
        let (h, i, e, k) = (self.hidden, self.inter, self.cfg.num_experts, self.cfg.top_k);
        if x.len() % h != 0 {
            return Err(Error::ShapeMismatch(format!(
                "x has {} elements, not a whole number of rows of hidden {h}",
                x.len()
            )));
        }
        let tokens = x.len() / h;
        let dev = &*self.dev;
        let mut logits = dev.alloc_zeros::<T>(tokens * e)?;
        let mut ids = dev.alloc_zeros::<i32>(tokens * k)?;
        let mut weights = dev.alloc_zeros::<f32>(tokens * k)?;
        let mut plan = CudaDispatchPlan::new(dev, tokens, e, k, 1)?;
        let mut out = dev.alloc_zeros::<T>(tokens * h)?;
        if tokens == 0 {
            return Ok(CudaMoeOutput {
                out,
                logits,
                ids,
                weights,
                plan,
            });
        }
        // logitsᵀ [E, T] = W_gate [E, H] · xᵀ: row-major W is a col-major H x E, so op T.
        self.gemm(true, e, tokens, h, &self.router, h, x, h, &mut logits, e)?;
        route_cuda(dev, &logits, &self.cfg, &mut ids, &mut weights)?;
        plan.compute(dev, &ids)?;
        let n = tokens * k;
        let mut xs = dev.alloc_zeros::<T>(n * h)?;
        permute_tokens_cuda(dev, x, h, &plan, false, &mut xs)?;
        let offsets = plan.host_offsets(dev)?;
        let mut gu = dev.alloc_zeros::<T>(n * 2 * i)?;
        for ex in 0..e {
            let (r0, r1) = (offsets[ex], offsets[ex + 1]);
            if r0 == r1 {
                continue;
            }
            let w = self.gate_up.slice(ex * 2 * i * h..(ex + 1) * 2 * i * h);
            let xin = xs.slice(r0 * h..r1 * h);
            let mut yout = gu.slice_mut(r0 * 2 * i..r1 * 2 * i);
            // [H, 2I] row-major is col-major 2I x H (op N, ld 2I); [2I, H] is H x 2I (op T, ld H).
            let (trans, lda) = if self.in_out { (false, 2 * i) } else { (true, h) };
            self.gemm(trans, 2 * i, r1 - r0, h, &w, lda, &xin, h, &mut yout, 2 * i)?;
        }
        let mut act = dev.alloc_zeros::<T>(n * i)?;
        silu_mul_cuda(dev, &gu, i, &mut act)?;
        let mut ys = dev.alloc_zeros::<T>(n * h)?;
        for ex in 0..e {
            let (r0, r1) = (offsets[ex], offsets[ex + 1]);
            if r0 == r1 {
                continue;
            }
            let w = self.down.slice(ex * i * h..(ex + 1) * i * h);
            let ain = act.slice(r0 * i..r1 * i);
            let mut yout = ys.slice_mut(r0 * h..r1 * h);
            let (trans, lda) = if self.in_out { (false, h) } else { (true, i) };
            self.gemm(trans, h, r1 - r0, i, &w, lda, &ain, i, &mut yout, h)?;
        }
        match &self.shared {
            None => unpermute_tokens_cuda(dev, &ys, h, &plan, &weights, None, &mut out)?,
            Some(s) => {
                let si = s.inter;
                let mut sgu = dev.alloc_zeros::<T>(tokens * 2 * si)?;
                self.gemm(true, 2 * si, tokens, h, &s.gate_up, h, x, h, &mut sgu, 2 * si)?;
                let mut sact = dev.alloc_zeros::<T>(tokens * si)?;
                silu_mul_cuda(dev, &sgu, si, &mut sact)?;
                let mut sy = dev.alloc_zeros::<T>(tokens * h)?;
                self.gemm(true, h, tokens, si, &s.down, si, &sact, si, &mut sy, h)?;
                let mut sg = dev.alloc_zeros::<T>(tokens)?;
                self.gemm(true, 1, tokens, h, &s.gate, h, x, h, &mut sg, 1)?;
                unpermute_tokens_cuda(dev, &ys, h, &plan, &weights, Some((&sy, &sg)), &mut out)?;
            }
        }
        Ok(CudaMoeOutput {
            out,
            logits,
            ids,
            weights,
            plan,
        })
    }
}
