//! Tensor permutation: `dst = ascontiguousarray(transpose(src.reshape(shape), perm))`.
//!
//! [`PermutePlan::new`] validates and canonicalises a problem once
//! ([`plan`]), [`PermutePlan::execute`] runs it ([`exec`]) with the
//! micro-kernels of [`kernels`].

mod bands;
mod copy;
pub mod exec;
pub mod kernels;
pub mod options;
pub mod plan;
pub mod simd;
mod staged_runs;
mod strips;
pub mod suites;
pub mod tune;

pub use copy::stream_fence;
pub use kernels::KernelFamily;
pub use options::{NonTemporal, PermuteOptions};
pub use plan::{BlockOrder, Dim, PermutePlan, Strategy, Tuning};

use crate::{Error, Result};
use bytemuck::Pod;

impl PermutePlan {
    /// Runs the plan on typed slices. `src` must hold exactly the source
    /// elements (or, for a strided plan, cover every addressed element) and
    /// `dst` exactly `numel` elements.
    pub fn execute<T: Pod>(&self, src: &[T], dst: &mut [T]) -> Result<()> {
        if std::mem::size_of::<T>() != self.elem_bytes {
            return Err(Error::invalid(format!(
                "element type of {} bytes given to a plan for {}-byte elements",
                std::mem::size_of::<T>(),
                self.elem_bytes
            )));
        }
        if dst.len() != self.numel {
            return Err(Error::ShapeMismatch(format!(
                "destination has {} elements but the output of shape {:?} has {}",
                dst.len(),
                self.out_shape(),
                self.numel
            )));
        }
        self.execute_bytes(bytemuck::cast_slice(src), bytemuck::cast_slice_mut(dst))
    }

    /// Runs the plan on raw bytes (lengths in bytes).
    pub fn execute_bytes(&self, src: &[u8], dst: &mut [u8]) -> Result<()> {
        let es = self.elem_bytes;
        if src.len() % es != 0 || src.len() / es < self.src_len {
            return Err(Error::ShapeMismatch(format!(
                "source holds {} bytes but the plan for shape {:?} needs {} elements of {es} bytes",
                src.len(),
                self.shape,
                self.src_len
            )));
        }
        if dst.len() != self.numel * es {
            return Err(Error::ShapeMismatch(format!(
                "destination holds {} bytes but the output of shape {:?} is {} elements of {es} bytes",
                dst.len(),
                self.out_shape(),
                self.numel
            )));
        }
        // SAFETY: lengths were checked against the plan; & and &mut cannot overlap.
        unsafe { exec::run(self, src.as_ptr(), dst.as_mut_ptr()) };
        Ok(())
    }
}

fn check_pod_size<T>() -> Result<usize> {
    let es = std::mem::size_of::<T>();
    if !plan::SUPPORTED_ELEM_BYTES.contains(&es) {
        return Err(Error::invalid(format!(
            "element type of {es} bytes; supported sizes are 1, 2, 4, 8, 16"
        )));
    }
    Ok(es)
}

/// Permutes a row-major tensor: `dst = transpose(src.reshape(shape), perm)`,
/// written row-major. `src.len()` and `dst.len()` must equal the product of `shape`.
pub fn permute<T: Pod>(src: &[T], shape: &[usize], perm: &[usize], dst: &mut [T]) -> Result<()> {
    let es = check_pod_size::<T>()?;
    let plan = PermutePlan::new(shape, perm, es, &PermuteOptions::default())?;
    if src.len() != plan.numel {
        return Err(Error::ShapeMismatch(format!(
            "source has {} elements but shape {shape:?} has {}",
            src.len(),
            plan.numel
        )));
    }
    plan.execute(src, dst)
}

/// Copies `from` into `to` with the streaming stores the engine writes its
/// staged tiles with (32-byte stores on the aligned body, ordinary stores at the
/// ends; plain copies off x86-64). Call [`stream_fence`] before another thread
/// reads `to`. Lengths must match.
pub fn stream_copy(from: &[u8], to: &mut [u8]) -> Result<()> {
    if from.len() != to.len() {
        return Err(Error::ShapeMismatch(format!(
            "stream_copy of {} bytes into {} bytes",
            from.len(),
            to.len()
        )));
    }
    // SAFETY: both slices hold `len` bytes and cannot overlap (& and &mut).
    unsafe { copy::stream_bytes(from.as_ptr(), to.as_mut_ptr(), to.len()) };
    Ok(())
}

/// Permutes a strided source view: axis `i` has extent `shape[i]` and
/// stride `src_strides[i]` elements (e.g. one head slice of a fused qkv tensor).
/// The output is row-major in `shape[perm[i]]`.
pub fn permute_strided<T: Pod>(
    src: &[T],
    shape: &[usize],
    src_strides: &[usize],
    perm: &[usize],
    dst: &mut [T],
) -> Result<()> {
    let es = check_pod_size::<T>()?;
    let plan = PermutePlan::new_strided(shape, src_strides, perm, es, &PermuteOptions::default())?;
    plan.execute(src, dst)
}
