//! The vision towers behind one type: [`VisionTower`] loads either architecture and
//! turns `pixel_values` (as the processor or transformers emit them) into merged
//! visual tokens plus, for Qwen3-VL, the DeepStack features.
//!
//! Wiring into a language model: `embeds` row `i` replaces the text embedding of the
//! `i`-th image-pad token of the prompt (images in order, each contributing
//! `t·h·w / merge²` rows); for Qwen3-VL, `deepstack[j]` (same shape) is added to the
//! hidden states at those positions after decoder layer `j`.

use super::config::JsonView;
use super::ops::{layer_norm, rms_norm, Linear};
use super::vision_config::{VisionArch, VisionConfig};
use super::vision_qwen2_5::Qwen2_5Vision;
use super::vision_qwen3::Qwen3Vision;
use super::weights::Weights;
use crate::attention::{attention, AttentionArgs};
use crate::rope::{apply_fused, HeadsLayout, RopeParams, RopeVariant};
use crate::{Error, Result};

/// What a vision tower returns.
#[derive(Clone, Debug, PartialEq)]
pub struct VisionOutput {
    /// `[n_merged_tokens, out_hidden]`, row-major.
    pub embeds: Vec<f32>,
    /// One `[n_merged_tokens, out_hidden]` tensor per DeepStack layer (empty for Qwen2.5-VL).
    pub deepstack: Vec<Vec<f32>>,
    /// Width of a row.
    pub out_hidden: usize,
}

/// Either architecture's tower.
pub enum VisionTower {
    Qwen2_5(Qwen2_5Vision),
    Qwen3(Qwen3Vision),
}

impl VisionTower {
    /// Loads the tower described by `config.json` (root view) from `weights`, under the
    /// prefix transformers 4.57.1 uses (`visual` / `model.visual`).
    pub fn load(weights: &Weights, root_config: &JsonView) -> Result<Self> {
        let cfg = VisionConfig::from_model_config(root_config)?;
        let prefix = cfg.default_prefix();
        Self::load_with(weights, cfg, prefix)
    }

    /// Loads a tower of `cfg` whose tensors are named `{prefix}.*`.
    pub fn load_with(weights: &Weights, cfg: VisionConfig, prefix: &str) -> Result<Self> {
        cfg.validate()?;
        Ok(match cfg.arch {
            VisionArch::Qwen2_5 => VisionTower::Qwen2_5(Qwen2_5Vision::load(weights, cfg, prefix)?),
            VisionArch::Qwen3 => VisionTower::Qwen3(Qwen3Vision::load(weights, cfg, prefix)?),
        })
    }

    pub fn config(&self) -> &VisionConfig {
        match self {
            VisionTower::Qwen2_5(t) => &t.cfg,
            VisionTower::Qwen3(t) => &t.cfg,
        }
    }

    /// Runs the tower on `pixel_values` `[Σ t·h·w, patch_dim]` for the images `grid_thw`.
    pub fn forward(&self, pixel_values: &[f32], grid_thw: &[[usize; 3]]) -> Result<VisionOutput> {
        match self {
            VisionTower::Qwen2_5(t) => t.forward(pixel_values, grid_thw),
            VisionTower::Qwen3(t) => t.forward(pixel_values, grid_thw),
        }
    }
}

/// Checks grids against the pixel rows; returns the patch count.
pub(crate) fn check_inputs(cfg: &VisionConfig, pixel_values: &[f32], grid_thw: &[[usize; 3]]) -> Result<usize> {
    if grid_thw.is_empty() {
        return Err(Error::invalid("grid_thw is empty: need at least one image"));
    }
    let m = cfg.spatial_merge_size;
    let mut n = 0usize;
    for (i, &[t, h, w]) in grid_thw.iter().enumerate() {
        if t == 0 || h == 0 || w == 0 || h % m != 0 || w % m != 0 {
            return Err(Error::invalid(format!(
                "grid_thw[{i}] = [{t}, {h}, {w}]: sizes must be positive and h, w multiples of spatial_merge_size {m}"
            )));
        }
        let thw = t
            .checked_mul(h)
            .and_then(|v| v.checked_mul(w))
            .ok_or_else(|| Error::Overflow(format!("grid_thw[{i}] = [{t}, {h}, {w}]")))?;
        n = n
            .checked_add(thw)
            .ok_or_else(|| Error::Overflow("total patch count".into()))?;
    }
    let dim = cfg.patch_dim();
    let want = n
        .checked_mul(dim)
        .ok_or_else(|| Error::Overflow(format!("{n} patches × {dim}")))?;
    if pixel_values.len() != want {
        return Err(Error::ShapeMismatch(format!(
            "pixel_values has {} elements but grid_thw {grid_thw:?} needs {n} patches × {dim} = {want}",
            pixel_values.len()
        )));
    }
    Ok(n)
}

/// Flattened Conv3d patch embedding: weight `[hidden, C, T, P, P]` read as `[hidden, patch_dim]`.
pub(crate) fn load_patch_embed(w: &Weights, cfg: &VisionConfig, prefix: &str, bias: bool) -> Result<Linear> {
    let name = format!("{prefix}.patch_embed.proj");
    let shape = [
        cfg.hidden_size,
        cfg.in_channels,
        cfg.temporal_patch_size,
        cfg.patch_size,
        cfg.patch_size,
    ];
    let weight = w.f32(&format!("{name}.weight"), &shape)?;
    let bias = if bias {
        Some(w.f32(&format!("{name}.bias"), &[cfg.hidden_size])?)
    } else {
        None
    };
    Linear::from_parts(weight, bias, cfg.patch_dim(), cfg.hidden_size)
}

/// The 2-D rotary embedding of the ViT (θ = 10000, NeoX pairing over the head).
pub(crate) fn vision_rope(cfg: &VisionConfig) -> RopeParams {
    RopeParams::new(cfg.head_dim(), RopeVariant::Vision2d)
}

/// Self-attention of a ViT block: fused qkv (with bias), 2-D RoPE on q and k,
/// non-causal attention inside each `cu_seqlens` segment, output projection.
pub(crate) struct VisionAttention {
    pub qkv: Linear,
    pub proj: Linear,
}

impl VisionAttention {
    pub fn load(w: &Weights, prefix: &str, hidden: usize) -> Result<Self> {
        Ok(VisionAttention {
            qkv: Linear::load(w, &format!("{prefix}.qkv"), hidden, 3 * hidden, true)?,
            proj: Linear::load(w, &format!("{prefix}.proj"), hidden, hidden, true)?,
        })
    }

    /// `x` `[n, hidden]` (already normalised); `positions` `[2, n]` in the same token order.
    pub fn forward(
        &self,
        x: &[f32],
        n: usize,
        heads: usize,
        rope: &RopeParams,
        positions: &[i64],
        cu_seqlens: &[usize],
    ) -> Result<Vec<f32>> {
        let hidden = self.proj.in_dim;
        let head_dim = hidden / heads;
        let mut qkv = self.qkv.forward(x, n)?;
        let (ql, kl) = HeadsLayout::fused_qkv(n, heads, heads, head_dim);
        apply_fused(rope, positions, &mut qkv, &ql, &kl)?;
        let row = 3 * hidden;
        let args =
            AttentionArgs::new(cu_seqlens, cu_seqlens, heads, heads, head_dim).with_row_strides(row, row, row, hidden);
        let mut out = vec![f32::NAN; n * hidden];
        if n > 0 {
            attention(&args, &qkv, &qkv[hidden..], &qkv[2 * hidden..], &mut out)?;
        }
        self.proj.forward(&out, n)
    }
}

/// Normalisation of a block: RMSNorm (Qwen2.5-VL) or LayerNorm (Qwen3-VL), eps 1e-6.
pub(crate) enum Norm {
    Rms(Vec<f32>),
    Layer(Vec<f32>, Vec<f32>),
}

pub(crate) const VISION_NORM_EPS: f32 = 1e-6;

impl Norm {
    pub fn load(w: &Weights, prefix: &str, dim: usize, layer: bool) -> Result<Self> {
        let weight = w.f32(&format!("{prefix}.weight"), &[dim])?;
        Ok(if layer {
            Norm::Layer(weight, w.f32(&format!("{prefix}.bias"), &[dim])?)
        } else {
            Norm::Rms(weight)
        })
    }

    /// A normalised copy of `x`.
    pub fn apply(&self, x: &[f32]) -> Result<Vec<f32>> {
        let mut y = x.to_vec();
        match self {
            Norm::Rms(wt) => rms_norm(&mut y, wt, VISION_NORM_EPS)?,
            Norm::Layer(wt, b) => layer_norm(&mut y, wt, b, VISION_NORM_EPS)?,
        }
        Ok(y)
    }
}

/// Applies `f` to every element, in parallel chunks (activations are a visible share of
/// a tower's time at real widths).
pub(crate) fn map_in_place(x: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    use rayon::prelude::*;
    x.par_chunks_mut(1 << 14)
        .for_each(|c| c.iter_mut().for_each(|v| *v = f(*v)));
}

/// `x += y`, element by element.
pub(crate) fn add_into(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}
