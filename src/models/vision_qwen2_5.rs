//! Qwen2.5-VL's vision tower (transformers 4.57.1
//! `Qwen2_5_VisionTransformerPretrainedModel`): patch embedding (Conv3d without bias as
//! a linear), 2-D RoPE, blocks of RMSNorm → attention → RMSNorm → SiLU-gated MLP (with
//! biases) that attend inside windows except the `fullatt_block_indexes` blocks (one
//! segment per frame), the PatchMerger (RMSNorm → Linear → GELU → Linear over groups of
//! `merge²` patches), and the window order undone at the end.

use super::ops::{gelu_erf, silu, Linear};
use super::vision::{
    add_into, check_inputs, load_patch_embed, map_in_place, vision_rope, Norm, VisionAttention, VisionOutput,
};
use super::vision_config::VisionConfig;
use super::weights::Weights;
use crate::attention::window::{
    frame_cu_seqlens, get_window_index, layer_cu_seqlens, reorder, reverse_index, Order, WindowConfig,
};
use crate::rope::positions::vision_positions;
use crate::rope::RopeParams;
use crate::Result;

struct Block {
    norm1: Norm,
    norm2: Norm,
    attn: VisionAttention,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// The loaded tower.
pub struct Qwen2_5Vision {
    pub cfg: VisionConfig,
    patch_embed: Linear,
    blocks: Vec<Block>,
    merger_norm: Norm,
    merger_fc1: Linear,
    merger_fc2: Linear,
    rope: RopeParams,
}

impl Qwen2_5Vision {
    /// Reads `{prefix}.patch_embed`, `{prefix}.blocks.{i}.*` and `{prefix}.merger.*`.
    pub fn load(w: &Weights, cfg: VisionConfig, prefix: &str) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let blocks = (0..cfg.depth)
            .map(|b| {
                let p = format!("{prefix}.blocks.{b}");
                Ok(Block {
                    norm1: Norm::load(w, &format!("{p}.norm1"), h, false)?,
                    norm2: Norm::load(w, &format!("{p}.norm2"), h, false)?,
                    attn: VisionAttention::load(w, &format!("{p}.attn"), h)?,
                    gate: Linear::load(w, &format!("{p}.mlp.gate_proj"), h, i, true)?,
                    up: Linear::load(w, &format!("{p}.mlp.up_proj"), h, i, true)?,
                    down: Linear::load(w, &format!("{p}.mlp.down_proj"), i, h, true)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let merged = h * cfg.spatial_merge_size * cfg.spatial_merge_size;
        Ok(Qwen2_5Vision {
            patch_embed: load_patch_embed(w, &cfg, prefix, false)?,
            blocks,
            merger_norm: Norm::load(w, &format!("{prefix}.merger.ln_q"), h, false)?,
            merger_fc1: Linear::load(w, &format!("{prefix}.merger.mlp.0"), merged, merged, true)?,
            merger_fc2: Linear::load(w, &format!("{prefix}.merger.mlp.2"), merged, cfg.out_hidden_size, true)?,
            rope: vision_rope(&cfg),
            cfg,
        })
    }

    pub fn forward(&self, pixel_values: &[f32], grid_thw: &[[usize; 3]]) -> Result<VisionOutput> {
        let cfg = &self.cfg;
        let n = check_inputs(cfg, pixel_values, grid_thw)?;
        let hidden = cfg.hidden_size;
        let x = self.patch_embed.forward(pixel_values, n)?;

        let wcfg = WindowConfig {
            window_size: cfg.window_size,
            patch_size: cfg.patch_size,
            spatial_merge_size: cfg.spatial_merge_size,
        };
        let index = get_window_index(grid_thw, &wcfg)?;
        let mut h = vec![f32::NAN; x.len()];
        reorder(&x, hidden, grid_thw, &index, Order::ToWindows, &mut h)?;
        let positions = window_positions(grid_thw, cfg.spatial_merge_size, &index, n)?;
        let frame_cu = frame_cu_seqlens(grid_thw)?;

        for (b, block) in self.blocks.iter().enumerate() {
            let cu = layer_cu_seqlens(b, &cfg.fullatt_block_indexes, &frame_cu, &index.cu_window_seqlens);
            let a = block
                .attn
                .forward(&block.norm1.apply(&h)?, n, cfg.num_heads, &self.rope, &positions, cu)?;
            add_into(&mut h, &a);
            let y = block.norm2.apply(&h)?;
            let mut g = block.gate.forward(&y, n)?;
            let u = block.up.forward(&y, n)?;
            map_in_place(&mut g, silu);
            g.iter_mut().zip(&u).for_each(|(g, u)| *g *= u);
            add_into(&mut h, &block.down.forward(&g, n)?);
        }

        let units = n / (cfg.spatial_merge_size * cfg.spatial_merge_size);
        let mut m = self.merger_fc1.forward(&self.merger_norm.apply(&h)?, units)?;
        map_in_place(&mut m, gelu_erf);
        let merged = self.merger_fc2.forward(&m, units)?;

        // Merged rows are in window order; row `inv[u]` belongs to unit `u`.
        let inv = reverse_index(&index.window_index)?;
        let out_dim = cfg.out_hidden_size;
        let mut embeds = vec![f32::NAN; merged.len()];
        for (u, &src) in inv.iter().enumerate() {
            embeds[u * out_dim..(u + 1) * out_dim].copy_from_slice(&merged[src * out_dim..(src + 1) * out_dim]);
        }
        Ok(VisionOutput {
            embeds,
            deepstack: Vec::new(),
            out_hidden: out_dim,
        })
    }
}

/// `[2, n]` (row, column) positions of the patches in window order.
fn window_positions(
    grid_thw: &[[usize; 3]],
    merge: usize,
    index: &crate::attention::window::WindowIndex,
    n: usize,
) -> Result<Vec<i64>> {
    let planar = vision_positions(grid_thw, merge)?;
    let pairs: Vec<i64> = (0..n).flat_map(|i| [planar[i], planar[n + i]]).collect();
    let mut moved = vec![0i64; pairs.len()];
    reorder(&pairs, 2, grid_thw, index, Order::ToWindows, &mut moved)?;
    let mut out = vec![0i64; 2 * n];
    for i in 0..n {
        out[i] = moved[2 * i];
        out[n + i] = moved[2 * i + 1];
    }
    Ok(out)
}
