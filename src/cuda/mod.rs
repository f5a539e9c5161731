//! CUDA support: device handle (context, stream, cached modules), kernel loading and
//! launch helpers, over cudarc with the driver and NVRTC loaded at run time.
//!
//! Nothing here needs CUDA to build. When the driver library, a device or NVRTC is
//! missing, calls return [`Error::Unavailable`](crate::Error::Unavailable) (never panic).
//! Kernels come from `cuda/*.cu`: a fatbin embedded at build time when nvcc was found,
//! otherwise (or with `VLK_CUDA_LOADER=nvrtc`) the embedded source compiled by NVRTC
//! on first use.

mod context;
mod modules;

pub use context::{cuda_available, device_count, CudaDevice};
pub use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig};
pub use modules::{built_with_nvcc, module_names, nvrtc_available, nvrtc_compile, ptxas_report, LoaderKind};

/// Turns a cudarc driver error into [`crate::Error::Cuda`] naming what was attempted.
pub(crate) fn driver_err(what: impl std::fmt::Display) -> impl FnOnce(cudarc::driver::DriverError) -> crate::Error {
    move |e| crate::Error::Cuda(format!("{what}: {e}"))
}
