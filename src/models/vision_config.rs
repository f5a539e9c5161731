//! The `vision_config` of Qwen2.5-VL and Qwen3-VL(-MoE) checkpoints.

use super::config::JsonView;
use crate::{Error, Result};

/// Which vision tower a checkpoint carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VisionArch {
    /// Qwen2.5-VL: window attention, RMSNorm, SiLU-gated MLP, one merger.
    Qwen2_5,
    /// Qwen3-VL and Qwen3-VL-MoE: learned position table, LayerNorm, GELU MLP, DeepStack.
    Qwen3,
}

/// Geometry and options of a vision tower.
#[derive(Clone, Debug, PartialEq)]
pub struct VisionConfig {
    pub arch: VisionArch,
    pub depth: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_heads: usize,
    pub out_hidden_size: usize,
    pub in_channels: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub spatial_merge_size: usize,
    /// Qwen2.5-VL: window side in pixels and the blocks with full attention.
    pub window_size: usize,
    pub fullatt_block_indexes: Vec<usize>,
    /// Qwen3-VL: entries of the learned position table (a square number) and the
    /// blocks whose output feeds a DeepStack merger.
    pub num_position_embeddings: usize,
    pub deepstack_visual_indexes: Vec<usize>,
}

impl VisionConfig {
    /// Reads `vision_config` from a model's `config.json` (the root object); the
    /// architecture comes from the root's `model_type`.
    pub fn from_model_config(root: &JsonView) -> Result<Self> {
        let model_type = root.str("model_type")?;
        let arch = match model_type {
            "qwen2_5_vl" => VisionArch::Qwen2_5,
            "qwen3_vl" | "qwen3_vl_moe" => VisionArch::Qwen3,
            other => {
                return Err(Error::Format(format!(
                    "{}: model_type \"{other}\" has no supported vision tower (qwen2_5_vl, qwen3_vl, qwen3_vl_moe)",
                    root.origin
                )))
            }
        };
        let v = root.sub("vision_config")?;
        let hidden_size = v.usize("hidden_size")?;
        let cfg = VisionConfig {
            arch,
            depth: v.usize("depth")?,
            hidden_size,
            intermediate_size: v.usize("intermediate_size")?,
            num_heads: v.usize("num_heads")?,
            out_hidden_size: v.usize("out_hidden_size")?,
            in_channels: v.usize_or("in_channels", 3)?,
            patch_size: v.usize("patch_size")?,
            temporal_patch_size: v.usize_or("temporal_patch_size", 2)?,
            spatial_merge_size: v.usize_or("spatial_merge_size", 2)?,
            window_size: if arch == VisionArch::Qwen2_5 {
                v.usize("window_size")?
            } else {
                0
            },
            fullatt_block_indexes: if v.has("fullatt_block_indexes") {
                v.usize_list("fullatt_block_indexes")?
            } else {
                Vec::new()
            },
            num_position_embeddings: if arch == VisionArch::Qwen3 {
                v.usize("num_position_embeddings")?
            } else {
                0
            },
            deepstack_visual_indexes: if v.has("deepstack_visual_indexes") {
                v.usize_list("deepstack_visual_indexes")?
            } else {
                Vec::new()
            },
        };
        cfg.validate()
            .map_err(|e| Error::Format(format!("{}: {e}", v.origin)))?;
        Ok(cfg)
    }

    /// The tensor prefix transformers 4.57.1 saves the tower under.
    pub fn default_prefix(&self) -> &'static str {
        match self.arch {
            VisionArch::Qwen2_5 => "visual",
            VisionArch::Qwen3 => "model.visual",
        }
    }

    /// Elements in one pixel-values row: `in_channels × T × P × P`.
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// Head dimension.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads.max(1)
    }

    /// Checks divisibility and index ranges the forward pass relies on.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("depth", self.depth),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_heads", self.num_heads),
            ("out_hidden_size", self.out_hidden_size),
            ("in_channels", self.in_channels),
            ("patch_size", self.patch_size),
            ("temporal_patch_size", self.temporal_patch_size),
            ("spatial_merge_size", self.spatial_merge_size),
        ] {
            if v == 0 || v > 1 << 20 {
                return Err(Error::invalid(format!("{name} = {v}: must be in 1..=2^20")));
            }
        }
        if self.hidden_size % self.num_heads != 0 || self.head_dim() % 4 != 0 {
            return Err(Error::invalid(format!(
                "hidden_size {} / num_heads {}: the head dimension must be a whole multiple of 4 (2-D RoPE)",
                self.hidden_size, self.num_heads
            )));
        }
        for (name, list) in [
            ("fullatt_block_indexes", &self.fullatt_block_indexes),
            ("deepstack_visual_indexes", &self.deepstack_visual_indexes),
        ] {
            if let Some(&bad) = list.iter().find(|&&i| i >= self.depth) {
                return Err(Error::invalid(format!(
                    "{name} holds {bad}, beyond depth {}",
                    self.depth
                )));
            }
        }
        if self.arch == VisionArch::Qwen3 {
            let side = (self.num_position_embeddings as f64).sqrt() as usize;
            if side == 0 || side * side != self.num_position_embeddings {
                return Err(Error::invalid(format!(
                    "num_position_embeddings = {}: must be a positive square",
                    self.num_position_embeddings
                )));
            }
        }
        Ok(())
    }
}
