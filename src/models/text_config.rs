//! The text decoder's configuration, read from `config.json` of Qwen3, Qwen3-MoE,
//! Qwen2.5-VL, Qwen3-VL and Qwen3-VL-MoE, in the form transformers 4.57 writes
//! (`rope_theta` + `rope_scaling`) or 5.x writes (`rope_parameters`).
//!
//! Text fields live at the top level (Qwen3, Qwen3-MoE, published Qwen2.5-VL) or under
//! `text_config` (Qwen2.5-VL saved by 4.57, Qwen3-VL); `text_config` wins when both exist.
//! The rope description is normalised into one [`RopeConfig`]: θ, a scaling rule
//! (none, linear, YaRN) and, for the VL models, the MRoPE sections and whether they
//! are interleaved (MRoPE-I). Unsupported rope types are an error naming the value.

use std::path::Path;

use serde_json::Value;

use super::config::{read_json, JsonView};
use crate::rope::{RopeParams, RopeVariant};
use crate::{Error, Result};

/// The model families the text decoder runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextArch {
    Qwen3,
    Qwen3Moe,
    Qwen2_5Vl,
    Qwen3Vl,
    Qwen3VlMoe,
}

impl TextArch {
    /// From `model_type` (preferred) or the first of `architectures`.
    fn detect(root: &JsonView<'_>) -> Result<Self> {
        let model_type = root.str_opt("model_type")?;
        let by_type = match model_type {
            Some("qwen3") => Some(TextArch::Qwen3),
            Some("qwen3_moe") => Some(TextArch::Qwen3Moe),
            Some("qwen2_5_vl") => Some(TextArch::Qwen2_5Vl),
            Some("qwen3_vl") => Some(TextArch::Qwen3Vl),
            Some("qwen3_vl_moe") => Some(TextArch::Qwen3VlMoe),
            _ => None,
        };
        if let Some(a) = by_type {
            return Ok(a);
        }
        let arch = root
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str);
        match arch {
            Some("Qwen3ForCausalLM") => Ok(TextArch::Qwen3),
            Some("Qwen3MoeForCausalLM") => Ok(TextArch::Qwen3Moe),
            Some("Qwen2_5_VLForConditionalGeneration") => Ok(TextArch::Qwen2_5Vl),
            Some("Qwen3VLForConditionalGeneration") => Ok(TextArch::Qwen3Vl),
            Some("Qwen3VLMoeForConditionalGeneration") => Ok(TextArch::Qwen3VlMoe),
            _ => Err(Error::invalid(format!(
                "{}: unsupported architecture (model_type {:?}, architectures {:?}); supported: qwen3, \
                 qwen3_moe, qwen2_5_vl, qwen3_vl, qwen3_vl_moe",
                root.origin,
                model_type.unwrap_or("<none>"),
                arch.unwrap_or("<none>")
            ))),
        }
    }

    /// Whether the model takes images (and `[3, N]` MRoPE positions).
    pub fn is_vision_language(self) -> bool {
        matches!(self, TextArch::Qwen2_5Vl | TextArch::Qwen3Vl | TextArch::Qwen3VlMoe)
    }
}

/// How the inverse frequencies are derived from θ.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// `1 / θ^(2i/R)` (rope types `default` and `mrope`).
    None,
    /// Positions divided by `factor` (frequencies divided by it).
    Linear { factor: f64 },
    /// YaRN: frequencies blended between interpolation and extrapolation over a ramp,
    /// cos/sin scaled by `attention_factor`.
    Yarn {
        factor: f64,
        original_max_position_embeddings: usize,
        beta_fast: f64,
        beta_slow: f64,
        attention_factor: f64,
        truncate: bool,
    },
}

/// Multimodal rotary sections (pairs per t, h, w axis).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mrope {
    pub sections: [usize; 3],
    /// MRoPE-I (Qwen3-VL) rather than contiguous sections (Qwen2.5-VL).
    pub interleaved: bool,
}

/// The normalised rope description.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    pub scaling: RopeScaling,
    pub mrope: Option<Mrope>,
}

/// Sparse-MLP settings of the MoE models.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoeConfig {
    pub num_experts: usize,
    pub top_k: usize,
    pub moe_intermediate_size: usize,
    pub norm_topk_prob: bool,
    /// Every `decoder_sparse_step`-th layer is sparse (layer `i` when `(i + 1) % step == 0`).
    pub decoder_sparse_step: usize,
    /// Layers that keep the dense MLP.
    pub mlp_only_layers: Vec<usize>,
}

/// Everything the text decoder needs from `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct TextConfig {
    pub arch: TextArch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    /// Biases on q, k and v projections.
    pub qkv_bias: bool,
    /// Bias on the output projection.
    pub o_bias: bool,
    /// Per-head RMSNorm of q and k (Qwen3 family).
    pub qk_norm: bool,
    pub tie_word_embeddings: bool,
    pub rope: RopeConfig,
    pub moe: Option<MoeConfig>,
    /// `image_token_id` of VL models.
    pub image_token_id: Option<usize>,
}

/// Looks a key up under `text_config` first, then at the top level.
struct TextView<'a> {
    text: Option<JsonView<'a>>,
    root: JsonView<'a>,
}

impl<'a> TextView<'a> {
    fn pick(&self, key: &str) -> &JsonView<'a> {
        match &self.text {
            Some(t) if t.has(key) => t,
            _ => &self.root,
        }
    }
}

impl TextConfig {
    /// Reads `dir/config.json`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let value = read_json(dir, "config.json")?;
        Self::from_json(&value)
    }

    /// Parses a parsed `config.json`.
    pub fn from_json(value: &Value) -> Result<Self> {
        let root = JsonView::new("config.json", value)?;
        let arch = TextArch::detect(&root)?;
        let v = TextView {
            text: root.sub_opt("text_config")?,
            root: root.clone(),
        };
        let hidden_size = v.pick("hidden_size").usize("hidden_size")?;
        let num_heads = v.pick("num_attention_heads").usize("num_attention_heads")?;
        let num_kv_heads = v
            .pick("num_key_value_heads")
            .usize_or("num_key_value_heads", num_heads)?;
        let head_dim = match v.pick("head_dim").usize_or("head_dim", 0)? {
            0 if num_heads > 0 => hidden_size / num_heads,
            d => d,
        };
        let attention_bias = v.pick("attention_bias").bool_or("attention_bias", false)?;
        let (qkv_bias, o_bias, qk_norm) = match arch {
            TextArch::Qwen2_5Vl => (true, false, false),
            _ => (attention_bias, attention_bias, true),
        };
        // The top-level flag governs tying in the VL models; text_config may repeat it, and
        // holds it alone in configs 4.57.1 saves when the top-level value is the default.
        let tie_key = "tie_word_embeddings";
        let tie_word_embeddings = if root.has(tie_key) { &root } else { v.pick(tie_key) }.bool_or(tie_key, false)?;
        let moe = match arch {
            TextArch::Qwen3Moe | TextArch::Qwen3VlMoe => Some(Self::moe(&v, arch)?),
            _ => None,
        };
        let cfg = TextConfig {
            arch,
            vocab_size: v.pick("vocab_size").usize("vocab_size")?,
            hidden_size,
            intermediate_size: v.pick("intermediate_size").usize("intermediate_size")?,
            num_layers: v.pick("num_hidden_layers").usize("num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: v.pick("rms_norm_eps").f64_or("rms_norm_eps", 1e-6)?,
            qkv_bias,
            o_bias,
            qk_norm,
            tie_word_embeddings,
            rope: Self::rope(&v, arch)?,
            moe,
            image_token_id: root.get("image_token_id").and_then(Value::as_u64).map(|x| x as usize),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn moe(v: &TextView<'_>, arch: TextArch) -> Result<MoeConfig> {
        // 5.x writes `num_local_experts` where 4.57 wrote `num_experts`.
        let num_experts = match v.pick("num_experts").usize_or("num_experts", 0)? {
            0 => v.pick("num_local_experts").usize("num_local_experts")?,
            n => n,
        };
        let mlp_only_layers = match v.pick("mlp_only_layers").get("mlp_only_layers") {
            Some(_) => v.pick("mlp_only_layers").usize_list("mlp_only_layers")?,
            None => Vec::new(),
        };
        Ok(MoeConfig {
            num_experts,
            top_k: v.pick("num_experts_per_tok").usize("num_experts_per_tok")?,
            moe_intermediate_size: v.pick("moe_intermediate_size").usize("moe_intermediate_size")?,
            // Qwen3-VL-MoE always renormalises the chosen probabilities (4.57 ignores the flag).
            norm_topk_prob: arch == TextArch::Qwen3VlMoe
                || v.pick("norm_topk_prob").bool_or("norm_topk_prob", false)?,
            decoder_sparse_step: v.pick("decoder_sparse_step").usize_or("decoder_sparse_step", 1)?,
            mlp_only_layers,
        })
    }

    fn rope(v: &TextView<'_>, arch: TextArch) -> Result<RopeConfig> {
        // 5.x: everything under rope_parameters; 4.57: rope_theta + optional rope_scaling.
        let (params, theta) = if let Some(p) = v.pick("rope_parameters").sub_opt("rope_parameters")? {
            let theta = p.f64("rope_theta")?;
            (Some(p), theta)
        } else {
            let theta = v.pick("rope_theta").f64_or("rope_theta", 10000.0)?;
            (v.pick("rope_scaling").sub_opt("rope_scaling")?, theta)
        };
        let max_pos = v
            .pick("max_position_embeddings")
            .usize_or("max_position_embeddings", 0)?;
        let (scaling, mrope) = match &params {
            None => (RopeScaling::None, None),
            Some(p) => (Self::scaling(p, max_pos)?, Self::mrope(p, arch)?),
        };
        if arch.is_vision_language() && mrope.is_none() {
            return Err(Error::Format(format!(
                "config.json: {arch:?} needs mrope_section in rope_scaling / rope_parameters"
            )));
        }
        Ok(RopeConfig { theta, scaling, mrope })
    }

    fn scaling(p: &JsonView<'_>, max_pos: usize) -> Result<RopeScaling> {
        let kind = match p.str_opt("rope_type")? {
            Some(k) => k,
            None => p.str_opt("type")?.unwrap_or("default"),
        };
        match kind {
            "default" | "mrope" => Ok(RopeScaling::None),
            "linear" => Ok(RopeScaling::Linear {
                factor: p.f64("factor")?,
            }),
            "yarn" => {
                let factor = p.f64("factor")?;
                let mscale = |s: f64, m: f64| if s <= 1.0 { 1.0 } else { 0.1 * m * s.ln() + 1.0 };
                let attention_factor = match (p.get("attention_factor"), p.get("mscale"), p.get("mscale_all_dim")) {
                    (Some(_), _, _) => p.f64("attention_factor")?,
                    (None, Some(_), Some(_)) => {
                        mscale(factor, p.f64("mscale")?) / mscale(factor, p.f64("mscale_all_dim")?)
                    }
                    _ => mscale(factor, 1.0),
                };
                let original = p.usize_or("original_max_position_embeddings", max_pos)?;
                Ok(RopeScaling::Yarn {
                    factor,
                    original_max_position_embeddings: original,
                    beta_fast: p.f64_or("beta_fast", 32.0)?,
                    beta_slow: p.f64_or("beta_slow", 1.0)?,
                    attention_factor,
                    truncate: p.bool_or("truncate", true)?,
                })
            }
            other => Err(Error::invalid(format!(
                "{}: rope type \"{other}\" is not supported (default, mrope, linear, yarn are)",
                p.origin
            ))),
        }
    }

    fn mrope(p: &JsonView<'_>, arch: TextArch) -> Result<Option<Mrope>> {
        if !p.has("mrope_section") {
            return Ok(None);
        }
        let s = p.usize_list("mrope_section")?;
        let sections: [usize; 3] = s.as_slice().try_into().map_err(|_| {
            Error::invalid(format!(
                "{}: mrope_section {s:?} must have 3 entries (t, h, w)",
                p.origin
            ))
        })?;
        // Qwen3-VL always interleaves; the flag is informative there.
        let default = matches!(arch, TextArch::Qwen3Vl | TextArch::Qwen3VlMoe);
        let interleaved = p.bool_or("mrope_interleaved", default)?;
        Ok(Some(Mrope { sections, interleaved }))
    }

    /// Checks the sizes that the decoder relies on, naming the bad value.
    pub fn validate(&self) -> Result<()> {
        let nonzero = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
        ];
        if let Some((k, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return Err(Error::invalid(format!("config.json: {k} is 0")));
        }
        if self.num_heads % self.num_kv_heads != 0 {
            return Err(Error::invalid(format!(
                "config.json: num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_heads, self.num_kv_heads
            )));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(Error::invalid(format!(
                "config.json: rms_norm_eps {}",
                self.rms_norm_eps
            )));
        }
        if let Some(m) = &self.moe {
            if m.decoder_sparse_step == 0 {
                return Err(Error::invalid("config.json: decoder_sparse_step is 0"));
            }
            crate::moe::RouterConfig::new(m.num_experts, m.top_k, m.norm_topk_prob)?;
        }
        self.rope_params()?.validate()
    }

    /// Whether decoder layer `i` uses the sparse MoE MLP.
    pub fn is_moe_layer(&self, i: usize) -> bool {
        match &self.moe {
            Some(m) => m.num_experts > 0 && !m.mlp_only_layers.contains(&i) && (i + 1) % m.decoder_sparse_step == 0,
            None => false,
        }
    }

    /// The rotary parameters of the decoder's attention.
    pub fn rope_params(&self) -> Result<RopeParams> {
        let variant = match self.rope.mrope {
            None => RopeVariant::Plain,
            Some(Mrope {
                sections,
                interleaved: false,
            }) => RopeVariant::Sectioned { sections },
            Some(Mrope {
                sections,
                interleaved: true,
            }) => RopeVariant::Interleaved { sections },
        };
        let base = RopeParams::new(self.head_dim, variant).with_theta(self.rope.theta);
        Ok(match &self.rope.scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => {
                if !(factor.is_finite() && *factor > 0.0) {
                    return Err(Error::invalid(format!("config.json: linear rope factor {factor}")));
                }
                let f: Vec<f32> = base.inv_freq().iter().map(|&x| x / *factor as f32).collect();
                base.with_inv_freq(f)
            }
            RopeScaling::Yarn { attention_factor, .. } => {
                let f = yarn_inv_freq(self.head_dim, self.rope.theta, &self.rope.scaling)?;
                base.with_inv_freq(f).with_attention_scaling(*attention_factor as f32)
            }
        })
    }
}

/// YaRN inverse frequencies as transformers computes them (`_compute_yarn_parameters`).
fn yarn_inv_freq(dim: usize, base: f64, scaling: &RopeScaling) -> Result<Vec<f32>> {
    let RopeScaling::Yarn {
        factor,
        original_max_position_embeddings: orig,
        beta_fast,
        beta_slow,
        truncate,
        ..
    } = *scaling
    else {
        return Err(Error::invalid("yarn_inv_freq called without yarn scaling"));
    };
    if !(factor.is_finite() && factor > 0.0) || orig == 0 {
        return Err(Error::invalid(format!(
            "config.json: yarn factor {factor} / original_max_position_embeddings {orig}"
        )));
    }
    let d = dim as f64;
    let corr = |rot: f64| (d * (orig as f64 / (rot * 2.0 * std::f64::consts::PI)).ln()) / (2.0 * base.ln());
    let (mut low, mut high) = (corr(beta_fast), corr(beta_slow));
    if truncate {
        low = low.floor();
        high = high.ceil();
    }
    let (low, mut high) = (low.max(0.0), high.min(d - 1.0));
    if low == high {
        high += 0.001;
    }
    Ok((0..dim / 2)
        .map(|i| {
            // torch computes these in f32; follow it so frequencies match to the last bit.
            let pos_freq = (base as f32).powf((2 * i) as f32 / dim as f32);
            let extra = 1.0 / pos_freq;
            let inter = 1.0 / (factor as f32 * pos_freq);
            let ramp = ((i as f32 - low as f32) / (high as f32 - low as f32)).clamp(0.0, 1.0);
            let extra_factor = 1.0 - ramp;
            inter * (1.0 - extra_factor) + extra * extra_factor
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn qwen3(rope: Value) -> Value {
        let mut v = json!({
            "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 100,
            "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "rms_norm_eps": 1e-6,
        });
        for (k, x) in rope.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    #[test]
    fn both_rope_forms_normalise_alike() {
        let old = TextConfig::from_json(&qwen3(json!({"rope_theta": 1e6}))).unwrap();
        let new = TextConfig::from_json(&qwen3(
            json!({"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}),
        ))
        .unwrap();
        assert_eq!(old, new);
        assert_eq!(old.rope.scaling, RopeScaling::None);
        let yarn = json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64});
        let old = TextConfig::from_json(&qwen3(json!({"rope_theta": 1e6, "rope_scaling": yarn}))).unwrap();
        let mut p = yarn.clone();
        p["rope_theta"] = json!(1e6);
        let new = TextConfig::from_json(&qwen3(json!({"rope_parameters": p}))).unwrap();
        assert_eq!(old, new);
        let RopeScaling::Yarn { attention_factor, .. } = old.rope.scaling else {
            panic!("{:?}", old.rope.scaling)
        };
        assert!((attention_factor - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-12);
        let lin = TextConfig::from_json(&qwen3(json!({"rope_scaling": {"type": "linear", "factor": 2.0}}))).unwrap();
        let p = lin.rope_params().unwrap();
        assert_eq!(
            p.inv_freq()[1],
            RopeParams::new(16, RopeVariant::Plain).inv_freq()[1] / 2.0
        );
    }

    #[test]
    fn vl_text_config_and_mrope() {
        let v = json!({
            "model_type": "qwen3_vl", "tie_word_embeddings": true, "image_token_id": 7,
            "text_config": {"vocab_size": 100, "hidden_size": 64, "intermediate_size": 96,
                "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                "rope_theta": 5e6, "rope_scaling": {"rope_type": "default", "mrope_section": [2, 3, 3],
                "mrope_interleaved": true}}
        });
        let c = TextConfig::from_json(&v).unwrap();
        assert_eq!(c.arch, TextArch::Qwen3Vl);
        assert!(c.tie_word_embeddings && c.qk_norm && !c.qkv_bias);
        assert_eq!(c.image_token_id, Some(7));
        assert_eq!(
            c.rope_params().unwrap().variant,
            RopeVariant::Interleaved { sections: [2, 3, 3] }
        );
        let v5 = json!({
            "model_type": "qwen2_5_vl",
            "text_config": {"vocab_size": 100, "hidden_size": 64, "intermediate_size": 96,
                "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
                "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]}}
        });
        let c = TextConfig::from_json(&v5).unwrap();
        assert!(c.qkv_bias && !c.qk_norm && !c.o_bias && !c.tie_word_embeddings);
        let mut tied_inside = v5.clone();
        tied_inside["text_config"]["tie_word_embeddings"] = json!(true);
        assert!(TextConfig::from_json(&tied_inside).unwrap().tie_word_embeddings);
        assert_eq!(
            c.rope_params().unwrap().variant,
            RopeVariant::Sectioned { sections: [2, 3, 3] }
        );
    }

    #[test]
    fn published_qwen2_5_vl_form_with_top_level_text_fields() {
        let v = json!({
            "architectures": ["Qwen2_5_VLForConditionalGeneration"], "vocab_size": 151936,
            "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
            "num_attention_heads": 16, "num_key_value_heads": 2, "rope_theta": 1e6,
            "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "tie_word_embeddings": true,
        });
        let c = TextConfig::from_json(&v).unwrap();
        assert_eq!(
            (c.arch, c.head_dim, c.tie_word_embeddings),
            (TextArch::Qwen2_5Vl, 128, true)
        );
        assert_eq!(c.rope_params().unwrap(), RopeParams::qwen2_5_vl());
    }

    #[test]
    fn errors_name_the_value() {
        let e = TextConfig::from_json(&qwen3(json!({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}})))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"dynamic\""), "{e}");
        let mut v = qwen3(json!({}));
        v["model_type"] = json!("llama");
        v["architectures"] = json!(["LlamaForCausalLM"]);
        let e = TextConfig::from_json(&v).unwrap_err().to_string();
        assert!(e.contains("llama") && e.contains("LlamaForCausalLM"), "{e}");
        let mut v = qwen3(json!({}));
        v["num_key_value_heads"] = json!(3);
        assert!(TextConfig::from_json(&v).unwrap_err().to_string().contains("3"));
        let mut v = qwen3(json!({}));
        v.as_object_mut().unwrap().remove("hidden_size");
        assert!(TextConfig::from_json(&v)
            .unwrap_err()
            .to_string()
            .contains("hidden_size"));
    }

    #[test]
    fn sparse_layers_follow_step_and_mlp_only() {
        let mut v = qwen3(
            json!({"num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
            "decoder_sparse_step": 2, "mlp_only_layers": [3], "num_hidden_layers": 6}),
        );
        v["model_type"] = json!("qwen3_moe");
        let c = TextConfig::from_json(&v).unwrap();
        let sparse: Vec<usize> = (0..6).filter(|&i| c.is_moe_layer(i)).collect();
        assert_eq!(sparse, vec![1, 5]);
    }
}
