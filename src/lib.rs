//! vlkernels: CPU SIMD and CUDA kernels for vision-language model inference.
//!
//! The first component is the tensor permutation engine: [`permute`],
//! [`permute_strided`] and the reusable [`PermutePlan`].

pub mod attention;
pub mod buffer;
pub mod cuda;
pub mod device;
pub mod error;
pub mod float;
pub mod models;
pub mod moe;
pub mod npy;
pub mod permute;
pub mod rng;
pub mod rope;
pub mod tensor;

pub use device::Device;
pub use error::{Error, Result};
pub use float::FloatElem;
pub use permute::{
    permute, permute_strided, BlockOrder, KernelFamily, NonTemporal, PermuteOptions, PermutePlan, Tuning,
};
pub use tensor::DType;

/// CPU features relevant to kernel dispatch, detected once.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuFeatures {
    pub avx2: bool,
    pub avx512: bool,
    pub neon: bool,
}

/// The host's features (cached after the first call).
pub fn cpu_features() -> CpuFeatures {
    static FEATURES: std::sync::OnceLock<CpuFeatures> = std::sync::OnceLock::new();
    *FEATURES.get_or_init(detect_features)
}

fn detect_features() -> CpuFeatures {
    #[allow(unused_mut)]
    let mut f = CpuFeatures::default();
    #[cfg(target_arch = "x86_64")]
    {
        f.avx2 = std::arch::is_x86_feature_detected!("avx2");
        f.avx512 = std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw");
    }
    #[cfg(target_arch = "aarch64")]
    {
        f.neon = std::arch::is_aarch64_feature_detected!("neon");
    }
    f
}
