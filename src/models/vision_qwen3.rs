//! Qwen3-VL's vision tower (transformers 4.57.1 `Qwen3VLVisionModel`, shared by
//! Qwen3-VL-MoE): patch embedding with bias, plus the learned position table
//! bilinearly interpolated to each grid (`fast_pos_embed_interpolate`), 2-D RoPE,
//! blocks of LayerNorm → attention (one segment per frame) → LayerNorm → GELU(tanh)
//! MLP, the final merger (LayerNorm over patches, then Linear → GELU → Linear over
//! groups of `merge²`) and DeepStack mergers after `deepstack_visual_indexes` blocks
//! (LayerNorm over the grouped `merge²·hidden` row: `use_postshuffle_norm`).

use super::ops::{gelu_erf, gelu_tanh, Linear};
use super::vision::{
    add_into, check_inputs, load_patch_embed, map_in_place, vision_rope, Norm, VisionAttention, VisionOutput,
};
use super::vision_config::VisionConfig;
use super::weights::Weights;
use crate::attention::window::frame_cu_seqlens;
use crate::rope::positions::vision_positions;
use crate::rope::RopeParams;
use crate::Result;

struct Block {
    norm1: Norm,
    norm2: Norm,
    attn: VisionAttention,
    fc1: Linear,
    fc2: Linear,
}

/// LayerNorm (before or after grouping `merge²` patches) → Linear → GELU(erf) → Linear.
struct Merger {
    norm: Norm,
    fc1: Linear,
    fc2: Linear,
}

impl Merger {
    fn load(w: &Weights, prefix: &str, cfg: &VisionConfig, postshuffle: bool) -> Result<Self> {
        let grouped = cfg.hidden_size * cfg.spatial_merge_size * cfg.spatial_merge_size;
        let norm_dim = if postshuffle { grouped } else { cfg.hidden_size };
        Ok(Merger {
            norm: Norm::load(w, &format!("{prefix}.norm"), norm_dim, true)?,
            fc1: Linear::load(w, &format!("{prefix}.linear_fc1"), grouped, grouped, true)?,
            fc2: Linear::load(w, &format!("{prefix}.linear_fc2"), grouped, cfg.out_hidden_size, true)?,
        })
    }

    /// `x` `[n, hidden]` → `[n / merge², out_hidden]`. The norm's width decides whether it
    /// runs over patches or over grouped rows; on contiguous rows both are one call.
    fn forward(&self, x: &[f32], units: usize) -> Result<Vec<f32>> {
        let mut y = self.fc1.forward(&self.norm.apply(x)?, units)?;
        map_in_place(&mut y, gelu_erf);
        self.fc2.forward(&y, units)
    }
}

/// The loaded tower.
pub struct Qwen3Vision {
    pub cfg: VisionConfig,
    patch_embed: Linear,
    pos_embed: Vec<f32>,
    blocks: Vec<Block>,
    merger: Merger,
    deepstack: Vec<Merger>,
    rope: RopeParams,
}

impl Qwen3Vision {
    /// Reads `{prefix}.patch_embed`, `{prefix}.pos_embed`, `{prefix}.blocks.{i}.*`,
    /// `{prefix}.merger.*` and `{prefix}.deepstack_merger_list.{j}.*`.
    pub fn load(w: &Weights, cfg: VisionConfig, prefix: &str) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let blocks = (0..cfg.depth)
            .map(|b| {
                let p = format!("{prefix}.blocks.{b}");
                Ok(Block {
                    norm1: Norm::load(w, &format!("{p}.norm1"), h, true)?,
                    norm2: Norm::load(w, &format!("{p}.norm2"), h, true)?,
                    attn: VisionAttention::load(w, &format!("{p}.attn"), h)?,
                    fc1: Linear::load(w, &format!("{p}.mlp.linear_fc1"), h, i, true)?,
                    fc2: Linear::load(w, &format!("{p}.mlp.linear_fc2"), i, h, true)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let deepstack = (0..cfg.deepstack_visual_indexes.len())
            .map(|j| Merger::load(w, &format!("{prefix}.deepstack_merger_list.{j}"), &cfg, true))
            .collect::<Result<Vec<_>>>()?;
        Ok(Qwen3Vision {
            patch_embed: load_patch_embed(w, &cfg, prefix, true)?,
            pos_embed: w.f32(&format!("{prefix}.pos_embed.weight"), &[cfg.num_position_embeddings, h])?,
            blocks,
            merger: Merger::load(w, &format!("{prefix}.merger"), &cfg, false)?,
            deepstack,
            rope: vision_rope(&cfg),
            cfg,
        })
    }

    pub fn forward(&self, pixel_values: &[f32], grid_thw: &[[usize; 3]]) -> Result<VisionOutput> {
        let cfg = &self.cfg;
        let n = check_inputs(cfg, pixel_values, grid_thw)?;
        let mut h = self.patch_embed.forward(pixel_values, n)?;
        add_into(&mut h, &self.interpolated_positions(grid_thw)?);
        let positions = vision_positions(grid_thw, cfg.spatial_merge_size)?;
        let cu = frame_cu_seqlens(grid_thw)?;
        let units = n / (cfg.spatial_merge_size * cfg.spatial_merge_size);

        let mut deepstack = Vec::with_capacity(self.deepstack.len());
        for (b, block) in self.blocks.iter().enumerate() {
            let a = block
                .attn
                .forward(&block.norm1.apply(&h)?, n, cfg.num_heads, &self.rope, &positions, &cu)?;
            add_into(&mut h, &a);
            let mut y = block.fc1.forward(&block.norm2.apply(&h)?, n)?;
            map_in_place(&mut y, gelu_tanh);
            add_into(&mut h, &block.fc2.forward(&y, n)?);
            if let Some(j) = cfg.deepstack_visual_indexes.iter().position(|&d| d == b) {
                deepstack.push(self.deepstack[j].forward(&h, units)?);
            }
        }
        Ok(VisionOutput {
            embeds: self.merger.forward(&h, units)?,
            deepstack,
            out_hidden: cfg.out_hidden_size,
        })
    }

    /// `fast_pos_embed_interpolate`: for each grid, the `side × side` table sampled
    /// bilinearly at `linspace(0, side-1, h) × linspace(0, side-1, w)` (f32 as torch),
    /// repeated per frame, in merge-block order.
    fn interpolated_positions(&self, grid_thw: &[[usize; 3]]) -> Result<Vec<f32>> {
        let cfg = &self.cfg;
        let dim = cfg.hidden_size;
        let side = (cfg.num_position_embeddings as f64).sqrt() as usize;
        let m = cfg.spatial_merge_size;
        let mut out = Vec::new();
        for &[t, gh, gw] in grid_thw {
            let (hs, ws) = (linspace(side, gh), linspace(side, gw));
            // One interpolated row per (row, column) of the grid, in raster order.
            let mut table = vec![0f32; gh * gw * dim];
            for (r, &hy) in hs.iter().enumerate() {
                let (h0, h1, dh) = corners(hy, side);
                for (c, &wx) in ws.iter().enumerate() {
                    let (w0, w1, dw) = corners(wx, side);
                    let taps = [
                        (h0 * side + w0, (1.0 - dh) * (1.0 - dw)),
                        (h0 * side + w1, (1.0 - dh) * dw),
                        (h1 * side + w0, dh * (1.0 - dw)),
                        (h1 * side + w1, dh * dw),
                    ];
                    let dst = &mut table[(r * gw + c) * dim..(r * gw + c + 1) * dim];
                    for (k, d) in dst.iter_mut().enumerate() {
                        // Summed in torch's order: ((e0 + e1) + e2) + e3.
                        *d = taps
                            .iter()
                            .fold(0f32, |acc, &(idx, wt)| acc + self.pos_embed[idx * dim + k] * wt);
                    }
                }
            }
            for _ in 0..t {
                for br in 0..gh / m {
                    for bc in 0..gw / m {
                        for ir in 0..m {
                            for ic in 0..m {
                                let (r, c) = (br * m + ir, bc * m + ic);
                                out.extend_from_slice(&table[(r * gw + c) * dim..(r * gw + c + 1) * dim]);
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// `torch.linspace(0, side - 1, steps)` in f32 (the first half counted up from the
/// start, the second half down from the end, as ATen does).
fn linspace(side: usize, steps: usize) -> Vec<f32> {
    let end = (side - 1) as f32;
    if steps == 1 {
        return vec![0.0];
    }
    let step = end / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                step * i as f32
            } else {
                end - step * (steps - 1 - i) as f32
            }
        })
        .collect()
}

/// Floor index, ceil index (clipped to the table) and fraction of a sample point.
fn corners(x: f32, side: usize) -> (usize, usize, f32) {
    let lo = x as usize;
    let hi = (lo + 1).min(side - 1);
    (lo, hi, x - lo as f32)
}
