//! Model runners written directly against this crate's kernels: checkpoint loading,
//! configs, preprocessing, the text decoders and vision towers of the Qwen family.

pub mod config;
pub mod decoder;
pub mod generate;
pub mod image_resize;
pub mod kv_cache;
pub mod ops;
pub mod processor;
pub mod text_config;
pub mod vision;
pub mod vision_config;
pub mod vision_qwen2_5;
pub mod vision_qwen3;
pub mod vl;
pub mod weights;

pub use config::{read_json, JsonView};
pub use decoder::{DecoderInput, DeepStack, ForwardOutput, LogitRows, Positions, RouterTrace, TextModel};
pub use generate::{generate_greedy, GenerateOptions, Generation, Prompt};
pub use kv_cache::KvCache;
pub use ops::Linear;
pub use text_config::{TextArch, TextConfig};
pub use vision::{VisionOutput, VisionTower};
pub use vision_config::{VisionArch, VisionConfig};
pub use vl::{Images, VlGeneration, VlModel, VlPrompt, VlTokens};
pub use weights::{TensorInfo, WeightDType, Weights};
