//! Image preprocessing equal to transformers 4.57.1's Qwen2-VL image processor (used by
//! Qwen2-VL, Qwen2.5-VL and Qwen3-VL).
//!
//! Which implementation is the reference: in 4.57.1 `AutoImageProcessor` /
//! `AutoProcessor` load `Qwen2VLImageProcessor` checkpoints as the *fast*
//! `Qwen2VLImageProcessorFast` (torchvision) whenever torchvision is installed
//! (`FORCE_FAST_IMAGE_PROCESSOR`), and fall back to the slow Pillow/numpy
//! `Qwen2VLImageProcessor` when it is not. [`ProcessorFlavor::Fast`] (the default)
//! reproduces the first, [`ProcessorFlavor::Slow`] the second; they differ by at most
//! one 8-bit level per resized pixel (Pillow rounds between its two passes).
//!
//! Steps: decode (PNG/JPEG, to RGB8) → `smart_resize` (sides multiples of
//! `patch_size × merge_size`, area within `[min_pixels, max_pixels]`, aspect ratio
//! at most 200) → antialiased bicubic resize → rescale by `rescale_factor` and
//! normalise with `image_mean`/`image_std` → repeat the frame `temporal_patch_size`
//! times → patchify (the permutation engine) into `pixel_values
//! [grid_t·grid_h·grid_w, 3·temporal_patch_size·patch_size²]` in transformers' row
//! order (merge groups of `merge_size²` patches contiguous) and `grid_thw`.

use std::path::Path;

use serde_json::Value;

use super::config::{read_json, JsonView};
use super::image_resize::{resize_bicubic_rgb8, ResizeFlavor};
use crate::permute::permute;
use crate::{Error, Result};

const CHANNELS: usize = 3;
/// transformers' `OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD`, the processor's defaults.
const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];
/// Largest aspect ratio `smart_resize` accepts.
const MAX_ASPECT_RATIO: f64 = 200.0;

/// Which transformers implementation to reproduce (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ProcessorFlavor {
    /// `Qwen2VLImageProcessorFast` (torchvision): 4.57.1's default when torchvision is installed.
    #[default]
    Fast,
    /// `Qwen2VLImageProcessor` (Pillow + numpy).
    Slow,
}

/// The processor's settings (`preprocessor_config.json`).
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessorConfig {
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub merge_size: usize,
    pub min_pixels: usize,
    pub max_pixels: usize,
    pub do_resize: bool,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f64; 3],
    pub image_std: [f64; 3],
    pub flavor: ProcessorFlavor,
}

impl Default for ProcessorConfig {
    /// transformers' defaults for `Qwen2VLImageProcessor`.
    fn default() -> Self {
        ProcessorConfig {
            patch_size: 14,
            temporal_patch_size: 2,
            merge_size: 2,
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            do_resize: true,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
            flavor: ProcessorFlavor::Fast,
        }
    }
}

fn three(view: &JsonView, key: &str, default: [f64; 3]) -> Result<[f64; 3]> {
    match view.get(key) {
        None => Ok(default),
        Some(Value::Number(n)) => {
            let v = n.as_f64().unwrap_or(f64::NAN);
            Ok([v; 3])
        }
        Some(_) => {
            let list = view.f64_list(key)?;
            <[f64; 3]>::try_from(list.as_slice()).map_err(|_| {
                Error::Format(format!(
                    "{}: \"{key}\" should have 3 values (RGB), found {}",
                    view.origin,
                    list.len()
                ))
            })
        }
    }
}

impl ProcessorConfig {
    /// Reads `preprocessor_config.json` for `flavor` as transformers' constructors do.
    /// Fast: `size` (`shortest_edge`/`longest_edge`), overridden by `min_pixels`/`max_pixels`.
    /// Slow: 4.57.1's `__init__` discards `size` (its `else` branch always restores the
    /// defaults), so only `min_pixels`/`max_pixels` count.
    pub fn from_json(view: &JsonView, flavor: ProcessorFlavor) -> Result<Self> {
        let d = ProcessorConfig::default();
        let (mut min_pixels, mut max_pixels) = (None, None);
        if let Some(size) = view.sub_opt("size")? {
            if flavor == ProcessorFlavor::Fast {
                min_pixels = size
                    .get("shortest_edge")
                    .map(|_| size.usize("shortest_edge"))
                    .transpose()?;
                max_pixels = size
                    .get("longest_edge")
                    .map(|_| size.usize("longest_edge"))
                    .transpose()?;
            }
        }
        if view.has("min_pixels") {
            min_pixels = Some(view.usize("min_pixels")?);
        }
        if view.has("max_pixels") {
            max_pixels = Some(view.usize("max_pixels")?);
        }
        if flavor == ProcessorFlavor::Fast && view.has("size") && (min_pixels.is_none() || max_pixels.is_none()) {
            return Err(Error::Format(format!(
                "{}: size must contain 'shortest_edge' and 'longest_edge' keys",
                view.origin
            )));
        }
        let min_pixels = min_pixels.unwrap_or(d.min_pixels);
        let max_pixels = max_pixels.unwrap_or(d.max_pixels);
        match view.str_opt("image_processor_type")? {
            None | Some("Qwen2VLImageProcessor") | Some("Qwen2VLImageProcessorFast") => {}
            Some(other) => {
                return Err(Error::Format(format!(
                    "{}: image_processor_type \"{other}\" is not a Qwen2-VL image processor",
                    view.origin
                )))
            }
        }
        let cfg = ProcessorConfig {
            patch_size: view.usize_or("patch_size", d.patch_size)?,
            temporal_patch_size: view.usize_or("temporal_patch_size", d.temporal_patch_size)?,
            merge_size: view.usize_or("merge_size", d.merge_size)?,
            min_pixels,
            max_pixels,
            do_resize: view.bool_or("do_resize", true)?,
            do_rescale: view.bool_or("do_rescale", true)?,
            rescale_factor: view.f64_or("rescale_factor", d.rescale_factor)?,
            do_normalize: view.bool_or("do_normalize", true)?,
            image_mean: three(view, "image_mean", CLIP_MEAN)?,
            image_std: three(view, "image_std", CLIP_STD)?,
            flavor,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads `dir/preprocessor_config.json`; without one, the defaults with the patch,
    /// temporal patch and merge sizes of `config.json`'s `vision_config` when present.
    pub fn from_model_dir(dir: impl AsRef<Path>, flavor: ProcessorFlavor) -> Result<Self> {
        let dir = dir.as_ref();
        if dir.join("preprocessor_config.json").is_file() {
            let value = read_json(dir, "preprocessor_config.json")?;
            return Self::from_json(&JsonView::new("preprocessor_config.json", &value)?, flavor);
        }
        let mut cfg = ProcessorConfig {
            flavor,
            ..ProcessorConfig::default()
        };
        if dir.join("config.json").is_file() {
            let value = read_json(dir, "config.json")?;
            let root = JsonView::new("config.json", &value)?;
            if let Some(vision) = root.sub_opt("vision_config")? {
                cfg.patch_size = vision.usize_or("patch_size", cfg.patch_size)?;
                cfg.temporal_patch_size = vision.usize_or("temporal_patch_size", cfg.temporal_patch_size)?;
                cfg.merge_size = vision.usize_or("spatial_merge_size", cfg.merge_size)?;
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the values the processor divides by or sizes with.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("patch_size", self.patch_size),
            ("temporal_patch_size", self.temporal_patch_size),
            ("merge_size", self.merge_size),
        ] {
            if v == 0 {
                return Err(Error::invalid(format!("{name} = 0: must be positive")));
            }
        }
        self.factor()?;
        if self.min_pixels > self.max_pixels {
            return Err(Error::invalid(format!(
                "min_pixels {} exceeds max_pixels {}",
                self.min_pixels, self.max_pixels
            )));
        }
        if !self.rescale_factor.is_finite() {
            return Err(Error::invalid(format!(
                "rescale_factor {} is not finite",
                self.rescale_factor
            )));
        }
        for c in 0..CHANNELS {
            let (m, s) = (self.image_mean[c], self.image_std[c]);
            if !m.is_finite() || !s.is_finite() || s == 0.0 {
                return Err(Error::invalid(format!(
                    "image_mean[{c}] = {m}, image_std[{c}] = {s}: need finite values and a non-zero std"
                )));
            }
        }
        Ok(())
    }

    /// `patch_size × merge_size`: the multiple both resized sides must be.
    pub fn factor(&self) -> Result<usize> {
        self.patch_size.checked_mul(self.merge_size).ok_or_else(|| {
            Error::Overflow(format!(
                "patch_size {} × merge_size {}",
                self.patch_size, self.merge_size
            ))
        })
    }
}

/// Python's `round` (half to even) on a quotient.
fn round_half_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// transformers' `smart_resize`: the (height, width) an image is resized to.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize)> {
    if height == 0 || width == 0 || factor == 0 {
        return Err(Error::invalid(format!(
            "smart_resize of a {height}x{width} image with factor {factor}: all must be positive"
        )));
    }
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    let ratio = h.max(w) / h.min(w);
    if ratio > MAX_ASPECT_RATIO {
        return Err(Error::invalid(format!(
            "image {height}x{width}: absolute aspect ratio must be smaller than 200, got {ratio}"
        )));
    }
    let mut h_bar = round_half_even(h / f) * f;
    let mut w_bar = round_half_even(w / f) * f;
    if h_bar * w_bar > max_pixels as f64 {
        let beta = (h * w / max_pixels as f64).sqrt();
        h_bar = f.max((h / beta / f).floor() * f);
        w_bar = f.max((w / beta / f).floor() * f);
    } else if h_bar * w_bar < min_pixels as f64 {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = (h * beta / f).ceil() * f;
        w_bar = (w * beta / f).ceil() * f;
    }
    let limit = (1u64 << 32) as f64;
    if !(h_bar.is_finite() && w_bar.is_finite() && h_bar <= limit && w_bar <= limit) {
        return Err(Error::Overflow(format!(
            "smart_resize of {height}x{width} gives {h_bar}x{w_bar}"
        )));
    }
    Ok((h_bar as usize, w_bar as usize))
}

/// An 8-bit RGB image, `[height, width, 3]` interleaved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    /// Wraps interleaved RGB bytes, checking their count.
    pub fn new(height: usize, width: usize, data: Vec<u8>) -> Result<Self> {
        let n = height
            .checked_mul(width)
            .and_then(|n| n.checked_mul(CHANNELS))
            .ok_or_else(|| Error::Overflow(format!("image {height}x{width}x3")))?;
        if data.len() != n {
            return Err(Error::ShapeMismatch(format!(
                "{} bytes for a {height}x{width} RGB image ({n} bytes)",
                data.len()
            )));
        }
        Ok(RgbImage { height, width, data })
    }

    /// Decodes a PNG or JPEG file and converts it to RGB8 (as `convert_to_rgb` does;
    /// an alpha channel is dropped, grey is replicated).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let img = image::load_from_memory(&bytes)
            .map_err(|e| Error::Format(format!("{}: cannot decode image: {e}", path.display())))?;
        let rgb = img.to_rgb8();
        let (w, h) = rgb.dimensions();
        RgbImage::new(h as usize, w as usize, rgb.into_raw())
    }
}

/// One processed image: transformers' `pixel_values` rows and `image_grid_thw` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessedImage {
    /// `[grid_t·grid_h·grid_w, 3·temporal_patch_size·patch_size²]`, row-major.
    pub pixel_values: Vec<f32>,
    pub grid_thw: [usize; 3],
    /// Length of one row of `pixel_values`.
    pub patch_dim: usize,
}

/// Runs the whole processor on one image.
pub fn preprocess(img: &RgbImage, cfg: &ProcessorConfig) -> Result<ProcessedImage> {
    cfg.validate()?;
    if img.height == 0 || img.width == 0 {
        return Err(Error::invalid(format!("image {}x{} is empty", img.height, img.width)));
    }
    let (h, w) = if cfg.do_resize {
        smart_resize(img.height, img.width, cfg.factor()?, cfg.min_pixels, cfg.max_pixels)?
    } else {
        (img.height, img.width)
    };
    let factor = cfg.factor()?;
    if h % factor != 0 || w % factor != 0 {
        return Err(Error::invalid(format!(
            "image {h}x{w} (do_resize = false) is not a multiple of patch_size × merge_size = {factor}"
        )));
    }
    let resized = if (h, w) == (img.height, img.width) {
        img.data.clone()
    } else {
        let flavor = match cfg.flavor {
            ProcessorFlavor::Fast => ResizeFlavor::Torchvision,
            ProcessorFlavor::Slow => ResizeFlavor::Pil,
        };
        resize_bicubic_rgb8(&img.data, img.height, img.width, h, w, flavor)?
    };
    let normalized = normalize(&resized, cfg);
    patchify(&normalized, h, w, cfg)
}

/// Rescale and normalise with each implementation's own arithmetic: the slow one
/// rescales in f64, rounds to f32, then normalises in f32; the fast one folds the
/// rescale into mean and std (`mean/rescale_factor`) and normalises in f32.
fn normalize(rgb: &[u8], cfg: &ProcessorConfig) -> Vec<f32> {
    let mut lut = [[0f32; 256]; CHANNELS];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, out) in table.iter_mut().enumerate() {
            *out = match cfg.flavor {
                ProcessorFlavor::Slow => {
                    let x = if cfg.do_rescale {
                        (v as f64 * cfg.rescale_factor) as f32
                    } else {
                        v as f32
                    };
                    if cfg.do_normalize {
                        (x - cfg.image_mean[c] as f32) / cfg.image_std[c] as f32
                    } else {
                        x
                    }
                }
                ProcessorFlavor::Fast => match (cfg.do_rescale, cfg.do_normalize) {
                    (true, true) => {
                        let mean = (cfg.image_mean[c] * (1.0 / cfg.rescale_factor)) as f32;
                        let std = (cfg.image_std[c] * (1.0 / cfg.rescale_factor)) as f32;
                        (v as f32 - mean) / std
                    }
                    (true, false) => (v as f64 * cfg.rescale_factor) as f32,
                    (false, true) => (v as f32 - cfg.image_mean[c] as f32) / cfg.image_std[c] as f32,
                    (false, false) => v as f32,
                },
            };
        }
    }
    rgb.iter()
        .enumerate()
        .map(|(i, &v)| lut[i % CHANNELS][v as usize])
        .collect()
}

/// `[h, w, C]` → rows `(bh, bw, mh, mw)` of `(C, T, ph, pw)`: the permutation engine moves
/// `[bh, mh, ph, bw, mw, pw, C]` to `[bh, bw, mh, mw, C, ph, pw]`, then each channel's
/// `P²` block is repeated `T` times (the temporal duplication of a still image).
fn patchify(x: &[f32], h: usize, w: usize, cfg: &ProcessorConfig) -> Result<ProcessedImage> {
    let (p, m, t) = (cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size);
    let (gh, gw) = (h / p, w / p);
    let shape = [gh / m, m, p, gw / m, m, p, CHANNELS];
    let mut moved = vec![0f32; x.len()];
    permute(x, &shape, &[0, 3, 1, 4, 6, 2, 5], &mut moved)?;
    let pp = p * p;
    let patch_dim = CHANNELS
        .checked_mul(t)
        .and_then(|n| n.checked_mul(pp))
        .ok_or_else(|| Error::Overflow(format!("patch of 3×{t}×{p}×{p}")))?;
    let rows = gh * gw;
    let total = rows
        .checked_mul(patch_dim)
        .ok_or_else(|| Error::Overflow(format!("{rows} patches × {patch_dim}")))?;
    let mut out = Vec::with_capacity(total);
    for block in moved.chunks_exact(pp) {
        for _ in 0..t {
            out.extend_from_slice(block);
        }
    }
    Ok(ProcessedImage {
        pixel_values: out,
        grid_thw: [1, gh, gw],
        patch_dim,
    })
}

/// Processes several images for one prompt: their rows concatenated in order (as
/// transformers returns `pixel_values`) and one grid per image.
pub fn preprocess_many(images: &[RgbImage], cfg: &ProcessorConfig) -> Result<(Vec<f32>, Vec<[usize; 3]>)> {
    let mut pixel_values = Vec::new();
    let mut grids = Vec::with_capacity(images.len());
    for img in images {
        let p = preprocess(img, cfg)?;
        pixel_values.extend_from_slice(&p.pixel_values);
        grids.push(p.grid_thw);
    }
    Ok((pixel_values, grids))
}
