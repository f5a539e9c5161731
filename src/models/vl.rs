//! Whole vision-language models (Qwen2.5-VL, Qwen3-VL, Qwen3-VL-MoE): the text decoder
//! and the vision tower of one checkpoint, joined as transformers 4.57.1 joins them.
//!
//! Data flow of an image prompt: pixel values (from [`super::processor`] or given as
//! transformers takes them) → [`VisionTower::forward`] → merged embeddings scattered, in
//! order, over the image-pad tokens of the embedded prompt → `[3, N]` MRoPE positions from
//! the token sequence and grids ([`segments_from_tokens`] + [`mrope_positions`]) →
//! [`TextModel`] with the DeepStack features (Qwen3-VL) added at the image positions
//! after the first decoder layers. Decoding continues at `index + rope delta`.
//!
//! ```no_run
//! use vlkernels::models::VlModel;
//! let model = VlModel::open("tests/fixtures/models/qwen3_vl")?;
//! let logits = model.logits(&[1, 2, 3], None)?;
//! assert_eq!(logits.len(), 3 * model.text().config().vocab_size);
//! # Ok::<(), vlkernels::Error>(())
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::config::{read_json, JsonView};
use super::decoder::{detect_prefix, DecoderInput, DeepStack, Positions, TextModel};
use super::generate::{generate_greedy, GenerateOptions, Generation, Prompt};
use super::processor::{preprocess, ProcessedImage, ProcessorConfig, RgbImage};
use super::text_config::{TextArch, TextConfig};
use super::vision::VisionTower;
use super::vision_config::{VisionArch, VisionConfig};
use super::weights::Weights;
use crate::rope::positions::{
    mrope_positions, segments_from_tokens, MropeOptions, MropePositions, PositionStyle, Segment,
};
use crate::{Error, Result};

/// The special token ids of a VL checkpoint (`config.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlTokens {
    /// `<|image_pad|>`: one per merged visual token.
    pub image: u32,
    /// `<|video_pad|>` (videos are not taken yet; a prompt holding one is an error).
    pub video: Option<u32>,
    /// `<|vision_start|>`, which precedes every image span.
    pub vision_start: u32,
    /// `<|vision_end|>`, which follows it.
    pub vision_end: u32,
}

/// Images of one prompt as transformers takes them.
#[derive(Clone, Copy, Debug)]
pub struct Images<'a> {
    /// `[rows, row_width]` row-major: every image's patches, concatenated in prompt order.
    pub pixel_values: &'a [f32],
    /// Elements per row (channels · temporal patch · patch²).
    pub row_width: usize,
    /// One `[t, h, w]` grid in patches per image.
    pub grid_thw: &'a [[usize; 3]],
}

/// A prompt ready for the decoder: embeddings with the image features in place,
/// positions and DeepStack features.
#[derive(Clone, Debug)]
pub struct VlPrompt {
    /// `[tokens, hidden]`.
    pub embeds: Vec<f32>,
    pub positions: MropePositions,
    /// Indices of the image-pad tokens, in order.
    pub visual_positions: Vec<usize>,
    /// Per DeepStack layer, `[visual_positions.len(), hidden]` (empty for Qwen2.5-VL or no image).
    pub deepstack: Vec<Vec<f32>>,
    /// Time spent in the vision tower.
    pub vision_time: Duration,
}

impl VlPrompt {
    /// The prompt as [`generate_greedy`] and the decoder take it.
    pub fn as_prompt(&self) -> Prompt<'_> {
        Prompt {
            input: DecoderInput::Embeds(&self.embeds),
            positions: Positions::Mrope(&self.positions.ids),
            deepstack: (!self.deepstack.is_empty()).then_some(DeepStack {
                visual_positions: &self.visual_positions,
                features: &self.deepstack,
            }),
            rope_delta: self.positions.delta,
        }
    }
}

/// Greedy generation from an image prompt, with the tower's share of the time.
#[derive(Clone, Debug)]
pub struct VlGeneration {
    /// Ids and timings of the decoder (its `ttft` starts at the prefill).
    pub generation: Generation,
    /// Tower time (and embedding/scatter) before the prefill.
    pub prepare_time: Duration,
}

/// A loaded Qwen2.5-VL / Qwen3-VL / Qwen3-VL-MoE checkpoint.
pub struct VlModel {
    text: TextModel,
    vision: VisionTower,
    tokens: VlTokens,
    mrope: MropeOptions,
}

/// A token id from `config.json` (top level, else `text_config`) if present, checked
/// against the vocabulary.
fn token_id(root: &JsonView<'_>, key: &str, vocab: usize) -> Result<Option<u32>> {
    let view = match root.sub_opt("text_config")? {
        Some(t) if !root.has(key) && t.has(key) => t,
        _ => root.clone(),
    };
    if !view.has(key) {
        return Ok(None);
    }
    let id = view.usize(key)?;
    if id >= vocab {
        return Err(Error::Format(format!(
            "{}: {key} {id} is outside the vocabulary of {vocab}",
            view.origin
        )));
    }
    Ok(Some(id as u32))
}

/// As [`token_id`], for a key the model cannot do without.
fn required_token_id(root: &JsonView<'_>, key: &str, vocab: usize) -> Result<u32> {
    token_id(root, key, vocab)?.ok_or_else(|| Error::Format(format!("{}: missing key \"{key}\"", root.origin)))
}

/// The tower's tensor prefix: transformers 4.57.1's default for the architecture, or the
/// other layout (`visual` / `model.visual`) when only that one is in the checkpoint.
fn vision_prefix(w: &Weights, cfg: &VisionConfig) -> &'static str {
    let default = cfg.default_prefix();
    let other = if default == "visual" { "model.visual" } else { "visual" };
    if !w.contains(&format!("{default}.patch_embed.proj.weight"))
        && w.contains(&format!("{other}.patch_embed.proj.weight"))
    {
        other
    } else {
        default
    }
}

impl VlModel {
    /// Reads `dir/config.json` and the checkpoint (single file or sharded) in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let config = read_json(dir, "config.json")?;
        let w = Weights::open(dir)?;
        Self::load(&w, &config)
    }

    /// Loads the decoder and the tower from one checkpoint; `config` is the parsed `config.json`.
    pub fn load(w: &Weights, config: &Value) -> Result<Self> {
        let text_cfg = TextConfig::from_json(config)?;
        if !text_cfg.arch.is_vision_language() {
            return Err(Error::invalid(format!(
                "config.json describes a text-only {:?} model; VlModel needs qwen2_5_vl, qwen3_vl or qwen3_vl_moe",
                text_cfg.arch
            )));
        }
        let root = JsonView::new("config.json", config)?;
        let vision_cfg = VisionConfig::from_model_config(&root)?;
        let vocab = text_cfg.vocab_size;
        let tokens = VlTokens {
            image: required_token_id(&root, "image_token_id", vocab)?,
            video: token_id(&root, "video_token_id", vocab)?,
            vision_start: required_token_id(&root, "vision_start_token_id", vocab)?,
            vision_end: required_token_id(&root, "vision_end_token_id", vocab)?,
        };
        let merge = vision_cfg.spatial_merge_size;
        let mrope = match (text_cfg.arch, vision_cfg.arch) {
            (TextArch::Qwen2_5Vl, VisionArch::Qwen2_5) => {
                // transformers' Qwen2_5_VLVisionConfig default is 4.
                let tps = root.sub("vision_config")?.usize_or("tokens_per_second", 4)?;
                MropeOptions {
                    style: PositionStyle::Qwen2_5Vl {
                        tokens_per_second: i64::try_from(tps)
                            .map_err(|_| Error::Format(format!("vision_config: tokens_per_second {tps}")))?,
                    },
                    spatial_merge_size: merge,
                    spatial_reset: false,
                }
            }
            (TextArch::Qwen3Vl | TextArch::Qwen3VlMoe, VisionArch::Qwen3) => MropeOptions {
                spatial_merge_size: merge,
                ..MropeOptions::qwen3_vl()
            },
            (t, v) => {
                return Err(Error::Format(format!(
                    "config.json: text model {t:?} with vision tower {v:?} is not a known pairing"
                )))
            }
        };
        if text_cfg.rope.mrope.is_none() {
            return Err(Error::Format(
                "config.json: a VL model needs mrope_section in its rope settings".into(),
            ));
        }
        let out = vision_cfg.out_hidden_size;
        if out != text_cfg.hidden_size {
            return Err(Error::ShapeMismatch(format!(
                "vision_config out_hidden_size {out} differs from the text hidden_size {}",
                text_cfg.hidden_size
            )));
        }
        let prefix = vision_prefix(w, &vision_cfg);
        let vision = VisionTower::load_with(w, vision_cfg, prefix)?;
        let text = TextModel::load(w, &text_cfg, detect_prefix(w)?)?;
        Ok(VlModel {
            text,
            vision,
            tokens,
            mrope,
        })
    }

    pub fn text(&self) -> &TextModel {
        &self.text
    }

    pub fn vision(&self) -> &VisionTower {
        &self.vision
    }

    pub fn tokens(&self) -> VlTokens {
        self.tokens
    }

    /// The position rules in use (style, merge size).
    pub fn mrope_options(&self) -> MropeOptions {
        self.mrope
    }

    /// Merged visual tokens of one image, `t·h·w / merge²`; the grid is checked.
    pub fn merged_tokens(&self, grid: [usize; 3]) -> Result<usize> {
        let m = self.mrope.spatial_merge_size;
        let [t, h, w] = grid;
        if t == 0 || h == 0 || w == 0 || h % m != 0 || w % m != 0 {
            return Err(Error::invalid(format!(
                "grid_thw [{t}, {h}, {w}]: sizes must be positive and h, w multiples of spatial_merge_size {m}"
            )));
        }
        t.checked_mul(h / m)
            .and_then(|v| v.checked_mul(w / m))
            .ok_or_else(|| Error::Overflow(format!("grid_thw [{t}, {h}, {w}]")))
    }

    /// `<|vision_start|> <|image_pad|> × n <|vision_end|>` for one image, as transformers'
    /// processor writes it into the prompt.
    pub fn image_span(&self, grid: [usize; 3]) -> Result<Vec<u32>> {
        let n = self.merged_tokens(grid)?;
        let mut span = Vec::with_capacity(n + 2);
        span.push(self.tokens.vision_start);
        span.extend(std::iter::repeat_n(self.tokens.image, n));
        span.push(self.tokens.vision_end);
        Ok(span)
    }

    /// Expands image spans written with a single image-pad token to the count of their
    /// image's grid (what transformers' processor does to `<|image_pad|>` in the text);
    /// spans that already have the full count are kept. Any other length, or a span count
    /// different from the grid count, is an error naming both.
    pub fn expand_image_pads(&self, ids: &[u32], grid_thw: &[[usize; 3]]) -> Result<Vec<u32>> {
        let image = self.tokens.image;
        let mut out = Vec::with_capacity(ids.len());
        let (mut i, mut span) = (0, 0);
        while i < ids.len() {
            let run = ids[i..].iter().take_while(|&&x| x == ids[i]).count();
            if ids[i] == image {
                let grid = *grid_thw.get(span).ok_or_else(|| {
                    Error::invalid(format!(
                        "image span {span} (token {image} at index {i}) has no grid: {} grid(s) given",
                        grid_thw.len()
                    ))
                })?;
                let need = self.merged_tokens(grid)?;
                if run != 1 && run != need {
                    return Err(Error::ShapeMismatch(format!(
                        "image span {span} at index {i} has {run} image tokens; grid {grid:?} needs {need} \
                         (or give one to have it expanded)"
                    )));
                }
                out.extend(std::iter::repeat_n(image, need));
                span += 1;
            } else {
                out.extend_from_slice(&ids[i..i + run]);
            }
            i += run;
        }
        if span != grid_thw.len() {
            return Err(Error::ShapeMismatch(format!(
                "the ids have {span} image span(s) (token {image}) but {} grid(s) were given",
                grid_thw.len()
            )));
        }
        Ok(out)
    }

    /// Runs the image processor after checking that its patch, temporal patch and merge
    /// sizes are the tower's.
    pub fn preprocess(&self, img: &RgbImage, cfg: &ProcessorConfig) -> Result<ProcessedImage> {
        let v = self.vision.config();
        for (name, p, t) in [
            ("patch_size", cfg.patch_size, v.patch_size),
            ("temporal_patch_size", cfg.temporal_patch_size, v.temporal_patch_size),
            ("merge_size", cfg.merge_size, v.spatial_merge_size),
        ] {
            if p != t {
                return Err(Error::invalid(format!(
                    "preprocessor {name} {p} differs from the vision tower's {t}"
                )));
            }
        }
        preprocess(img, cfg)
    }

    /// Checks the prompt against the images without running anything; returns the
    /// image-pad positions.
    fn check_prompt(&self, ids: &[u32], images: Option<&Images<'_>>) -> Result<Vec<usize>> {
        if ids.is_empty() {
            return Err(Error::invalid("empty prompt: no token ids"));
        }
        let tk = self.tokens;
        if let Some(v) = tk.video {
            if let Some(i) = ids.iter().position(|&x| x == v) {
                return Err(Error::Unavailable(format!(
                    "video token {v} at index {i}: video inputs are not supported yet"
                )));
            }
        }
        let visual: Vec<usize> = (0..ids.len()).filter(|&i| ids[i] == tk.image).collect();
        let span_starts: Vec<usize> = visual
            .iter()
            .copied()
            .filter(|&i| i == 0 || ids[i - 1] != tk.image)
            .collect();
        for &s in &span_starts {
            if s == 0 || ids[s - 1] != tk.vision_start {
                return Err(Error::invalid(format!(
                    "image span at index {s} is not preceded by vision_start_token_id {}",
                    tk.vision_start
                )));
            }
        }
        let Some(img) = images else {
            if !visual.is_empty() {
                return Err(Error::invalid(format!(
                    "the prompt has {} image tokens (id {}) but no pixel values were given",
                    visual.len(),
                    tk.image
                )));
            }
            return Ok(visual);
        };
        let cfg = self.vision.config();
        let dim = cfg.patch_dim();
        if img.row_width != dim {
            return Err(Error::ShapeMismatch(format!(
                "pixel_values rows are {} wide; the tower takes channels {} x temporal_patch_size {} x \
                 patch_size {}^2 = {dim}",
                img.row_width, cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size
            )));
        }
        if img.grid_thw.is_empty() {
            return Err(Error::invalid(
                "pixel values given with no grid_thw: need one grid per image",
            ));
        }
        let (mut patches, mut merged) = (0usize, 0usize);
        for &g in img.grid_thw {
            let n = self.merged_tokens(g)?;
            merged = merged
                .checked_add(n)
                .ok_or_else(|| Error::Overflow("total merged tokens".into()))?;
            patches = g[0]
                .checked_mul(g[1])
                .and_then(|v| v.checked_mul(g[2]))
                .and_then(|v| v.checked_add(patches))
                .ok_or_else(|| Error::Overflow(format!("patch count of grid {g:?}")))?;
        }
        let want = patches
            .checked_mul(dim)
            .ok_or_else(|| Error::Overflow(format!("{patches} patches x {dim}")))?;
        if img.pixel_values.len() != want {
            return Err(Error::ShapeMismatch(format!(
                "pixel_values has {} rows of {dim} ({} values); grid_thw {:?} needs {patches} rows (sum of t*h*w)",
                img.pixel_values.len() / dim,
                img.pixel_values.len(),
                img.grid_thw
            )));
        }
        if visual.len() != merged {
            return Err(Error::ShapeMismatch(format!(
                "the prompt has {} image tokens (id {}) but the images give {merged} merged vision embeddings \
                 (sum of t*h*w / {}^2 over grid_thw {:?})",
                visual.len(),
                tk.image,
                self.mrope.spatial_merge_size,
                img.grid_thw
            )));
        }
        if span_starts.len() != img.grid_thw.len() {
            return Err(Error::ShapeMismatch(format!(
                "the prompt has {} image span(s) but grid_thw has {} grid(s)",
                span_starts.len(),
                img.grid_thw.len()
            )));
        }
        Ok(visual)
    }

    /// `[3, N]` positions of the token sequence (images by the architecture's rule).
    fn positions(&self, ids: &[u32], grids: &[[usize; 3]]) -> Result<MropePositions> {
        let ids64: Vec<i64> = ids.iter().map(|&x| i64::from(x)).collect();
        // Ids never hold video tokens here (rejected in check_prompt); -1 matches no id.
        let video = self.tokens.video.map(i64::from).unwrap_or(-1);
        let mut segs = segments_from_tokens(&ids64, i64::from(self.tokens.image), video, grids, &[], &self.mrope)?;
        if let PositionStyle::Qwen2_5Vl { .. } = self.mrope.style {
            // Qwen2.5-VL gives every temporal patch of an image the temporal id 0
            // (second_per_grid_t = 0 for images in get_rope_index).
            for s in &mut segs {
                if let Segment::Image { t, h, w } = *s {
                    *s = Segment::Video {
                        t,
                        h,
                        w,
                        second_per_grid_t: 0.0,
                    };
                }
            }
        }
        mrope_positions(&segs, &self.mrope)
    }

    /// Embeds `ids`, runs the tower on `images` and puts its outputs in place.
    pub fn prepare(&self, ids: &[u32], images: Option<&Images<'_>>) -> Result<VlPrompt> {
        let visual = self.check_prompt(ids, images)?;
        let h = self.text.config().hidden_size;
        let mut embeds = self.text.embed(ids)?;
        let grids = images.map(|i| i.grid_thw).unwrap_or(&[]);
        let positions = self.positions(ids, grids)?;
        let (mut deepstack, mut vision_time) = (Vec::new(), Duration::ZERO);
        if let Some(img) = images {
            let t = Instant::now();
            let out = self.vision.forward(img.pixel_values, img.grid_thw)?;
            vision_time = t.elapsed();
            if out.out_hidden != h || out.embeds.len() != visual.len() * h {
                return Err(Error::ShapeMismatch(format!(
                    "vision tower gave {} values of width {}, expected {} image tokens x hidden {h}",
                    out.embeds.len(),
                    out.out_hidden,
                    visual.len()
                )));
            }
            for (row, &p) in out.embeds.chunks_exact(h).zip(&visual) {
                embeds[p * h..(p + 1) * h].copy_from_slice(row);
            }
            deepstack = out.deepstack;
        }
        Ok(VlPrompt {
            embeds,
            positions,
            visual_positions: visual,
            deepstack,
            vision_time,
        })
    }

    /// Logits `[ids.len(), vocab]` of the whole prompt.
    pub fn logits(&self, ids: &[u32], images: Option<&Images<'_>>) -> Result<Vec<f32>> {
        let p = self.prepare(ids, images)?;
        let prompt = p.as_prompt();
        let mut cache = self.text.new_cache()?;
        Ok(self
            .text
            .forward(prompt.input, prompt.positions, &mut cache, prompt.deepstack)?
            .logits)
    }

    /// Greedy generation with the KV cache, decoding at `index + rope delta`.
    pub fn generate(
        &self,
        ids: &[u32],
        images: Option<&Images<'_>>,
        opts: &GenerateOptions,
        on_token: impl FnMut(u32),
    ) -> Result<VlGeneration> {
        if opts.max_new_tokens == 0 {
            return Err(Error::invalid("max_new_tokens 0: nothing to generate"));
        }
        let t = Instant::now();
        let p = self.prepare(ids, images)?;
        let prepare_time = t.elapsed();
        let generation = generate_greedy(&self.text, p.as_prompt(), opts, on_token)?;
        Ok(VlGeneration {
            generation,
            prepare_time,
        })
    }
}
