//! Model runners written directly against this crate's kernels: checkpoint loading,
//! configs, preprocessing, the text decoders and vision towers of the Qwen family.

pub mod config;
pub mod image_resize;
pub mod ops;
pub mod processor;
pub mod weights;

pub use config::{read_json, JsonView};
pub use ops::Linear;
pub use weights::{TensorInfo, WeightDType, Weights};
