//! Rotary position embeddings: plain RoPE, sectioned MRoPE (Qwen2/2.5-VL), interleaved
//! MRoPE-I (Qwen3-VL), multi-head MHRoPE and the ViT's 2-D RoPE, rotating q and k in
//! place. One argument struct ([`RopeParams`]) drives the f64 reference
//! ([`reference`]), the CPU fast path ([`apply`]) and the CUDA kernel ([`CudaRope`]);
//! [`positions`] builds the position ids.

mod cpu;
mod cuda;
mod params;
pub mod positions;
mod reference;

pub use cpu::{apply, apply_fused};
pub use cuda::{CudaRope, CUDA_MAX_HALF};
pub use params::{HeadsLayout, Pairing, RopeParams, RopeVariant};
pub use reference::{angle, reference, reference_fused};
