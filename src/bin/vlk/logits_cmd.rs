//! `vlk logits`: one forward pass of a text decoder, or of a whole VL model over token
//! ids and pixel values; writes f32 logits `[seq_len, vocab]` as .npy.

use std::path::{Path, PathBuf};

use clap::Args;
use vlkernels::models::{DecoderInput, Images, Positions, TextConfig, TextModel, VlModel};
use vlkernels::npy::{read_npy, write_npy, NpyArray};
use vlkernels::{DType, Error, Result};

#[derive(Args)]
pub struct LogitsArgs {
    /// Model directory (config.json + model.safetensors or a sharded index).
    #[arg(long)]
    pub model: PathBuf,
    /// Comma-separated token ids, e.g. 1,2,3.
    #[arg(long)]
    pub input_ids: String,
    /// Pixel values as transformers takes them: f32 or f16 .npy `[Σ t·h·w, C·T·P²]`, all
    /// images' patches concatenated (VL models).
    #[arg(long)]
    pub pixel_values: Option<PathBuf>,
    /// Grid of one image in patches, T,H,W (repeat per image).
    #[arg(long)]
    pub grid_thw: Vec<String>,
    /// Where to write the f32 logits `[seq_len, vocab]`.
    #[arg(long)]
    pub output: PathBuf,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Parses `1,2,3` into token ids, naming the bad item.
pub fn parse_ids(s: &str) -> Result<Vec<u32>> {
    let ids: Vec<u32> = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u32>()
                .map_err(|_| Error::invalid(format!("--input-ids: \"{t}\" is not a token id")))
        })
        .collect::<Result<_>>()?;
    if ids.is_empty() {
        return Err(Error::invalid("--input-ids is empty: give at least one token id"));
    }
    Ok(ids)
}

/// Only the CPU path exists for the text decoder; anything else is a clear error.
pub fn check_device(device: &str) -> Result<()> {
    match device {
        "cpu" => Ok(()),
        "cuda" => Err(Error::Unavailable(
            "--device cuda: the model runners have no CUDA path yet; use --device cpu".into(),
        )),
        other => Err(Error::invalid(format!("--device \"{other}\": expected cpu or cuda"))),
    }
}

/// Parses repeated `--grid-thw T,H,W` values.
pub fn parse_grids(values: &[String]) -> Result<Vec<[usize; 3]>> {
    values
        .iter()
        .map(|g| {
            let v = crate::parse_list("--grid-thw", g)?;
            <[usize; 3]>::try_from(v.as_slice())
                .map_err(|_| Error::invalid(format!("--grid-thw '{g}': need three values T,H,W")))
        })
        .collect()
}

/// Reads a 2-D f32 or f16 pixel-values .npy as f32 rows; returns the values and the row width.
pub fn read_pixel_values(path: &Path) -> Result<(Vec<f32>, usize)> {
    let a = read_npy(path)?;
    let [_, width] = a.shape[..] else {
        return Err(Error::ShapeMismatch(format!(
            "{}: pixel values of shape {:?}; need 2-D [patches, channels*temporal*patch^2]",
            path.display(),
            a.shape
        )));
    };
    let values = match a.dtype {
        DType::F32 => bytemuck::pod_collect_to_vec(&a.data),
        DType::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(&a.data)
            .into_iter()
            .map(f32::from)
            .collect(),
        other => {
            return Err(Error::UnsupportedDType(format!(
                "{}: pixel values of dtype {other} (need f32 or f16)",
                path.display()
            )))
        }
    };
    Ok((values, width))
}

pub fn run(args: LogitsArgs) -> Result<()> {
    check_device(&args.device)?;
    crate::init_threads(args.threads)?;
    let ids = parse_ids(&args.input_ids)?;
    let cfg = TextConfig::from_dir(&args.model)?;
    let vocab = cfg.vocab_size;
    let logits = if cfg.arch.is_vision_language() {
        let grids = parse_grids(&args.grid_thw)?;
        let pixels = match (&args.pixel_values, grids.is_empty()) {
            (Some(p), false) => Some(read_pixel_values(p)?),
            (Some(_), true) => return Err(Error::invalid("--pixel-values needs --grid-thw T,H,W (one per image)")),
            (None, false) => return Err(Error::invalid("--grid-thw needs --pixel-values")),
            (None, true) => None,
        };
        let images = pixels.as_ref().map(|(values, width)| Images {
            pixel_values: values,
            row_width: *width,
            grid_thw: &grids,
        });
        VlModel::open(&args.model)?.logits(&ids, images.as_ref())?
    } else {
        if args.pixel_values.is_some() || !args.grid_thw.is_empty() {
            return Err(Error::invalid(format!(
                "--pixel-values / --grid-thw: {} is a text-only {:?} model",
                args.model.display(),
                cfg.arch
            )));
        }
        let model = TextModel::open(&args.model)?;
        let mut cache = model.new_cache()?;
        model
            .forward(DecoderInput::Ids(&ids), Positions::Sequential, &mut cache, None)?
            .logits
    };
    let arr = NpyArray::from_slice(DType::F32, &[ids.len(), vocab], &logits)?;
    write_npy(&args.output, &arr)?;
    eprintln!("wrote {} ([{}, {vocab}] f32)", args.output.display(), ids.len());
    Ok(())
}
