//! The text decoder shared by Qwen3, Qwen3-MoE and the language models of Qwen2.5-VL,
//! Qwen3-VL and Qwen3-VL-MoE, f32 on the CPU, written against this crate's kernels.
//!
//! Per layer: RMSNorm → fused q/k/v projection (optional bias) → per-head q/k RMSNorm
//! (Qwen3 family) → RoPE / sectioned MRoPE / MRoPE-I ([`crate::rope::apply_fused`]) →
//! append k, v to the [`KvCache`] → causal GQA attention over the cache
//! ([`crate::attention::attention`]) → output projection + residual → RMSNorm → MLP
//! (SiLU-gated dense, or [`crate::moe::moe_block`]) + residual → optional DeepStack
//! addition at visual positions. A final RMSNorm and the LM head (or the tied embedding)
//! give the logits.
//!
//! ```no_run
//! use vlkernels::models::{DecoderInput, KvCache, Positions, TextModel};
//! let model = TextModel::open("tests/fixtures/models/qwen3_tied")?;
//! let mut cache = model.new_cache()?;
//! let ids = [1u32, 2, 3];
//! let out = model.forward(DecoderInput::Ids(&ids), Positions::Sequential, &mut cache, None)?;
//! assert_eq!(out.logits.len(), 3 * model.config().vocab_size);
//! # Ok::<(), vlkernels::Error>(())
//! ```

use std::collections::HashMap;
use std::path::Path;

use super::kv_cache::KvCache;
use super::ops::{rms_norm, silu, Linear};
use super::text_config::TextConfig;
use super::weights::{WeightDType, Weights};
use crate::attention::{attention, AttentionArgs};
use crate::moe::{moe_block, MoeWeights, RouterConfig, TensorRef};
use crate::rope::{apply_fused, HeadsLayout, RopeParams};
use crate::{DType, Error, Result};

/// What the decoder reads: token ids, or embeddings computed by the caller (the VL glue
/// merges image features into the text embeddings), `[n, hidden]`.
#[derive(Clone, Copy, Debug)]
pub enum DecoderInput<'a> {
    Ids(&'a [u32]),
    Embeds(&'a [f32]),
}

/// Rotary positions of the new tokens.
#[derive(Clone, Copy, Debug)]
pub enum Positions<'a> {
    /// Position = index in the sequence (cache length + i); all three MRoPE rows equal.
    Sequential,
    /// One position per token, `[n]` (all three MRoPE rows equal for VL models).
    Linear(&'a [i64]),
    /// `[3, n]` (t, h, w rows) for the MRoPE models.
    Mrope(&'a [i64]),
}

/// DeepStack features (Qwen3-VL): `features[i]` (`[visual_positions.len(), hidden]`) is
/// added to the hidden states at `visual_positions` (indices among the new tokens)
/// after decoder layer `i`.
#[derive(Clone, Copy, Debug)]
pub struct DeepStack<'a> {
    pub visual_positions: &'a [usize],
    pub features: &'a [Vec<f32>],
}

/// Which rows of logits to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitRows {
    All,
    /// Only the last new token's (enough for generation).
    Last,
}

/// Top-k expert ids chosen by one MoE layer, `[n, k]` best first.
#[derive(Clone, Debug)]
pub struct RouterTrace {
    pub layer: usize,
    pub top_k: usize,
    pub ids: Vec<u32>,
}

/// Logits (`[rows, vocab]`) and the router choices of every MoE layer.
#[derive(Clone, Debug)]
pub struct ForwardOutput {
    pub logits: Vec<f32>,
    pub router: Vec<RouterTrace>,
}

enum Mlp {
    Dense {
        gate_up: Linear,
        down: Linear,
        inter: usize,
    },
    Sparse {
        weights: MoeWeights,
        router: RouterConfig,
    },
}

struct Layer {
    input_norm: Vec<f32>,
    qkv: Linear,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    o: Linear,
    post_norm: Vec<f32>,
    mlp: Mlp,
}

/// A loaded text decoder.
pub struct TextModel {
    cfg: TextConfig,
    rope: RopeParams,
    /// `[vocab, hidden]`, also the LM head when tied (read as a `[out, in]` linear).
    embed: Linear,
    lm_head: Option<Linear>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
}

/// Where the decoder's tensors live: `model.` (Qwen3, Qwen2.5-VL as published) or
/// `model.language_model.` (Qwen3-VL, VL models saved by transformers 4.57+).
pub fn detect_prefix(w: &Weights) -> Result<&'static str> {
    for p in ["model.language_model.", "model."] {
        if w.contains(&format!("{p}embed_tokens.weight")) {
            return Ok(p);
        }
    }
    Err(Error::Format(
        "checkpoint has neither model.embed_tokens.weight nor model.language_model.embed_tokens.weight".into(),
    ))
}

fn concat_rows(parts: Vec<Vec<f32>>) -> Vec<f32> {
    let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for p in parts {
        out.extend(p);
    }
    out
}

/// The MoE block's tensors, as named views for [`MoeWeights::from_tensors`].
fn moe_tensors<'w>(w: &'w Weights, prefix: &str) -> Result<HashMap<String, TensorRef<'w>>> {
    let mut map = HashMap::new();
    for name in w.names().filter(|n| n.starts_with(prefix)) {
        let info = w.info(name)?;
        let dtype = match info.dtype {
            WeightDType::F32 => DType::F32,
            WeightDType::F16 => DType::F16,
            WeightDType::BF16 => DType::BF16,
            WeightDType::Other(t) => {
                return Err(Error::UnsupportedDType(format!(
                    "tensor {name} is {t}; runners read f32, f16 and bf16"
                )))
            }
        };
        map.insert(
            name.to_string(),
            TensorRef {
                dtype,
                shape: &info.shape,
                data: w.bytes(name)?,
            },
        );
    }
    Ok(map)
}

impl TextModel {
    /// Reads `dir/config.json` and the checkpoint in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg = TextConfig::from_dir(dir)?;
        let w = Weights::open(dir)?;
        Self::load(&w, &cfg, detect_prefix(&w)?)
    }

    /// Loads the decoder whose tensors start with `prefix` (`model.` or
    /// `model.language_model.`); the LM head is `lm_head.weight`, or the embedding when
    /// the checkpoint has none (tied). Missing or mis-shaped tensors are named.
    pub fn load(w: &Weights, cfg: &TextConfig, prefix: &str) -> Result<Self> {
        cfg.validate()?;
        let (h, v, d) = (cfg.hidden_size, cfg.vocab_size, cfg.head_dim);
        let (hq, hkv) = (cfg.num_heads, cfg.num_kv_heads);
        let embed = Linear::from_parts(w.f32(&format!("{prefix}embed_tokens.weight"), &[v, h])?, None, h, v)?;
        let lm_head = if w.contains("lm_head.weight") {
            Some(Linear::load(w, "lm_head", h, v, false)?)
        } else if cfg.tie_word_embeddings {
            None
        } else {
            return Err(Error::Format(
                "checkpoint has no tensor named lm_head.weight and config.json does not tie embeddings".into(),
            ));
        };
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("{prefix}layers.{i}.");
            let a = format!("{p}self_attn.");
            let proj = |name: &str, out: usize| -> Result<(Vec<f32>, Option<Vec<f32>>)> {
                let wt = w.f32(&format!("{a}{name}.weight"), &[out, h])?;
                let b = if cfg.qkv_bias {
                    Some(w.f32(&format!("{a}{name}.bias"), &[out])?)
                } else {
                    None
                };
                Ok((wt, b))
            };
            let (qw, qb) = proj("q_proj", hq * d)?;
            let (kw, kb) = proj("k_proj", hkv * d)?;
            let (vw, vb) = proj("v_proj", hkv * d)?;
            let bias = match (qb, kb, vb) {
                (Some(q), Some(k), Some(v)) => Some(concat_rows(vec![q, k, v])),
                _ => None,
            };
            let qkv = Linear::from_parts(concat_rows(vec![qw, kw, vw]), bias, h, (hq + 2 * hkv) * d)?;
            let (q_norm, k_norm) = if cfg.qk_norm {
                (
                    Some(w.f32(&format!("{a}q_norm.weight"), &[d])?),
                    Some(w.f32(&format!("{a}k_norm.weight"), &[d])?),
                )
            } else {
                (None, None)
            };
            let o = Linear::load(w, &format!("{a}o_proj"), hq * d, h, cfg.o_bias)?;
            let mlp = if cfg.is_moe_layer(i) {
                let m = cfg.moe.as_ref().expect("is_moe_layer implies a MoE config");
                let mp = format!("{p}mlp.");
                let weights = MoeWeights::from_tensors(&moe_tensors(w, &mp)?, &mp)?;
                if weights.num_experts != m.num_experts
                    || weights.hidden != h
                    || weights.intermediate != m.moe_intermediate_size
                {
                    return Err(Error::ShapeMismatch(format!(
                        "{mp}: tensors hold {} experts of hidden {} / intermediate {}, config.json says {} / {h} / {}",
                        weights.num_experts,
                        weights.hidden,
                        weights.intermediate,
                        m.num_experts,
                        m.moe_intermediate_size
                    )));
                }
                Mlp::Sparse {
                    weights,
                    router: RouterConfig::new(m.num_experts, m.top_k, m.norm_topk_prob)?,
                }
            } else {
                let inter = cfg.intermediate_size;
                let g = w.f32(&format!("{p}mlp.gate_proj.weight"), &[inter, h])?;
                let u = w.f32(&format!("{p}mlp.up_proj.weight"), &[inter, h])?;
                Mlp::Dense {
                    gate_up: Linear::from_parts(concat_rows(vec![g, u]), None, h, 2 * inter)?,
                    down: Linear::load(w, &format!("{p}mlp.down_proj"), inter, h, false)?,
                    inter,
                }
            };
            layers.push(Layer {
                input_norm: w.f32(&format!("{p}input_layernorm.weight"), &[h])?,
                qkv,
                q_norm,
                k_norm,
                o,
                post_norm: w.f32(&format!("{p}post_attention_layernorm.weight"), &[h])?,
                mlp,
            });
        }
        Ok(TextModel {
            rope: cfg.rope_params()?,
            cfg: cfg.clone(),
            embed,
            lm_head,
            layers,
            norm: w.f32(&format!("{prefix}norm.weight"), &[h])?,
        })
    }

    pub fn config(&self) -> &TextConfig {
        &self.cfg
    }

    /// An empty cache sized for this model.
    pub fn new_cache(&self) -> Result<KvCache> {
        KvCache::new(self.layers.len(), self.cfg.num_kv_heads, self.cfg.head_dim)
    }

    /// Token embeddings `[ids.len(), hidden]`; an id outside the vocabulary is an error naming it.
    pub fn embed(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let h = self.cfg.hidden_size;
        let mut out = Vec::with_capacity(ids.len() * h);
        for (i, &id) in ids.iter().enumerate() {
            let row = id as usize;
            if row >= self.cfg.vocab_size {
                return Err(Error::invalid(format!(
                    "token id {id} at index {i} is outside the vocabulary of {}",
                    self.cfg.vocab_size
                )));
            }
            out.extend_from_slice(&self.embed.weight[row * h..(row + 1) * h]);
        }
        Ok(out)
    }

    /// Runs the new tokens through the decoder, appending to `cache`; returns logits of
    /// every new token.
    pub fn forward(
        &self,
        input: DecoderInput<'_>,
        positions: Positions<'_>,
        cache: &mut KvCache,
        deepstack: Option<DeepStack<'_>>,
    ) -> Result<ForwardOutput> {
        self.forward_rows(input, positions, cache, deepstack, LogitRows::All)
    }

    /// [`forward`](Self::forward) with a choice of logit rows. On error the cache is
    /// left as it was.
    pub fn forward_rows(
        &self,
        input: DecoderInput<'_>,
        positions: Positions<'_>,
        cache: &mut KvCache,
        deepstack: Option<DeepStack<'_>>,
        rows: LogitRows,
    ) -> Result<ForwardOutput> {
        let start = cache.len();
        let r = self.forward_inner(input, positions, cache, deepstack, rows);
        if r.is_err() {
            cache.truncate(start);
        }
        r
    }

    fn forward_inner(
        &self,
        input: DecoderInput<'_>,
        positions: Positions<'_>,
        cache: &mut KvCache,
        deepstack: Option<DeepStack<'_>>,
        rows: LogitRows,
    ) -> Result<ForwardOutput> {
        let h = self.cfg.hidden_size;
        let mut x = match input {
            DecoderInput::Ids(ids) => self.embed(ids)?,
            DecoderInput::Embeds(e) => {
                if e.len() % h != 0 {
                    return Err(Error::ShapeMismatch(format!(
                        "inputs_embeds has {} elements, not a whole number of rows of hidden {h}",
                        e.len()
                    )));
                }
                e.to_vec()
            }
        };
        let n = x.len() / h;
        if n == 0 {
            return Err(Error::invalid("empty input: no tokens to run"));
        }
        if cache.num_layers() != self.layers.len() || cache.row() != self.cfg.num_kv_heads * self.cfg.head_dim {
            return Err(Error::invalid(format!(
                "kv cache made for {} layers of rows {}, model has {} layers of rows {}",
                cache.num_layers(),
                cache.row(),
                self.layers.len(),
                self.cfg.num_kv_heads * self.cfg.head_dim
            )));
        }
        let pos = self.rope_positions(positions, cache.len(), n)?;
        if let Some(ds) = &deepstack {
            check_deepstack(ds, n, h, self.layers.len())?;
        }
        let mut router = Vec::new();
        for (li, layer) in self.layers.iter().enumerate() {
            self.layer_forward(li, layer, &mut x, n, &pos, cache, &mut router)?;
            if let Some(ds) = &deepstack {
                if let Some(feat) = ds.features.get(li) {
                    for (j, &p) in ds.visual_positions.iter().enumerate() {
                        for (a, &b) in x[p * h..(p + 1) * h].iter_mut().zip(&feat[j * h..(j + 1) * h]) {
                            *a += b;
                        }
                    }
                }
            }
        }
        cache.commit(n)?;
        let (first, count) = match rows {
            LogitRows::All => (0, n),
            LogitRows::Last => (n - 1, 1),
        };
        let mut last = x[first * h..].to_vec();
        rms_norm(&mut last, &self.norm, self.cfg.rms_norm_eps as f32)?;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let logits = head.forward(&last, count)?;
        Ok(ForwardOutput { logits, router })
    }

    /// Positions in the layout the rope variant wants (`[n]` or `[3, n]`).
    fn rope_positions(&self, positions: Positions<'_>, start: usize, n: usize) -> Result<Vec<i64>> {
        let rows = self.rope.variant.position_rows();
        let linear: Vec<i64> = match positions {
            Positions::Sequential => (start..start + n).map(|p| p as i64).collect(),
            Positions::Linear(p) => p.to_vec(),
            Positions::Mrope(p) => {
                if rows != 3 {
                    return Err(Error::invalid(format!(
                        "[3, n] MRoPE positions given to a {:?} model, which uses 1-D positions",
                        self.cfg.arch
                    )));
                }
                if p.len() != 3 * n {
                    return Err(Error::ShapeMismatch(format!(
                        "MRoPE positions have {} values, expected 3 x {n}",
                        p.len()
                    )));
                }
                return Ok(p.to_vec());
            }
        };
        if linear.len() != n {
            return Err(Error::ShapeMismatch(format!(
                "positions have {} values for {n} tokens",
                linear.len()
            )));
        }
        Ok(linear.repeat(rows))
    }

    #[allow(clippy::too_many_arguments)]
    fn layer_forward(
        &self,
        li: usize,
        layer: &Layer,
        x: &mut [f32],
        n: usize,
        pos: &[i64],
        cache: &mut KvCache,
        router: &mut Vec<RouterTrace>,
    ) -> Result<()> {
        let cfg = &self.cfg;
        let (h, d, hq, hkv) = (cfg.hidden_size, cfg.head_dim, cfg.num_heads, cfg.num_kv_heads);
        let eps = cfg.rms_norm_eps as f32;
        let mut t = x.to_vec();
        rms_norm(&mut t, &layer.input_norm, eps)?;
        let mut qkv = layer.qkv.forward(&t, n)?;
        let row = (hq + 2 * hkv) * d;
        if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
            for r in qkv.chunks_exact_mut(row) {
                rms_norm(&mut r[..hq * d], qn, eps)?;
                rms_norm(&mut r[hq * d..(hq + hkv) * d], kn, eps)?;
            }
        }
        let (ql, kl) = HeadsLayout::fused_qkv(n, hq, hkv, d);
        apply_fused(&self.rope, pos, &mut qkv, &ql, &kl)?;
        let kv_row = hkv * d;
        let mut k_new = Vec::with_capacity(n * kv_row);
        let mut v_new = Vec::with_capacity(n * kv_row);
        for r in qkv.chunks_exact(row) {
            k_new.extend_from_slice(&r[hq * d..(hq + hkv) * d]);
            v_new.extend_from_slice(&r[(hq + hkv) * d..]);
        }
        let lc = cache.append(li, &k_new, &v_new)?;
        let total = lc.k.len() / kv_row;
        let (cq, ck) = ([0, n], [0, total]);
        let args = AttentionArgs::new(&cq, &ck, hq, hkv, d)
            .with_causal(true)
            .with_row_strides(row, kv_row, kv_row, hq * d);
        let mut attn = vec![f32::NAN; n * hq * d];
        attention(&args, &qkv, &lc.k, &lc.v, &mut attn)?;
        let o = layer.o.forward(&attn, n)?;
        for (a, b) in x.iter_mut().zip(&o) {
            *a += b;
        }
        let mut t = x.to_vec();
        rms_norm(&mut t, &layer.post_norm, eps)?;
        let y = match &layer.mlp {
            Mlp::Dense { gate_up, down, inter } => {
                let gu = gate_up.forward(&t, n)?;
                let mut act = Vec::with_capacity(n * inter);
                for r in gu.chunks_exact(2 * inter) {
                    let (g, u) = r.split_at(*inter);
                    act.extend(g.iter().zip(u).map(|(&g, &u)| silu(g) * u));
                }
                down.forward(&act, n)?
            }
            Mlp::Sparse { weights, router: rc } => {
                let out = moe_block(&t, weights, rc)?;
                router.push(RouterTrace {
                    layer: li,
                    top_k: rc.top_k,
                    ids: out.ids,
                });
                out.out
            }
        };
        debug_assert_eq!(y.len(), n * h);
        for (a, b) in x.iter_mut().zip(&y) {
            *a += b;
        }
        Ok(())
    }
}

fn check_deepstack(ds: &DeepStack<'_>, n: usize, h: usize, layers: usize) -> Result<()> {
    if ds.features.len() > layers {
        return Err(Error::invalid(format!(
            "{} DeepStack feature sets for a decoder of {layers} layers",
            ds.features.len()
        )));
    }
    if let Some(&p) = ds.visual_positions.iter().find(|&&p| p >= n) {
        return Err(Error::invalid(format!(
            "DeepStack visual position {p} is outside the {n} new tokens"
        )));
    }
    let want = ds.visual_positions.len() * h;
    if let Some((i, f)) = ds.features.iter().enumerate().find(|(_, f)| f.len() != want) {
        return Err(Error::ShapeMismatch(format!(
            "DeepStack features {i} have {} elements, expected {} visual positions x hidden {h}",
            f.len(),
            ds.visual_positions.len()
        )));
    }
    Ok(())
}
