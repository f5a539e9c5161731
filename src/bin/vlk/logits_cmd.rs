//! `vlk logits`: one forward pass of a text decoder over given token ids; writes f32
//! logits `[seq_len, vocab]` as .npy.

use std::path::PathBuf;

use clap::Args;
use vlkernels::models::{DecoderInput, Positions, TextModel};
use vlkernels::npy::{write_npy, NpyArray};
use vlkernels::{DType, Error, Result};

#[derive(Args)]
pub struct LogitsArgs {
    /// Model directory (config.json + model.safetensors or a sharded index).
    #[arg(long)]
    pub model: PathBuf,
    /// Comma-separated token ids, e.g. 1,2,3.
    #[arg(long)]
    pub input_ids: String,
    /// Pixel values as transformers takes them (.npy; image prompts).
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

pub fn run(args: LogitsArgs) -> Result<()> {
    check_device(&args.device)?;
    if args.pixel_values.is_some() || !args.grid_thw.is_empty() {
        return Err(Error::Unavailable(
            "--pixel-values / --grid-thw: image inputs are not wired into vlk logits yet".into(),
        ));
    }
    crate::init_threads(args.threads)?;
    let ids = parse_ids(&args.input_ids)?;
    let model = TextModel::open(&args.model)?;
    let mut cache = model.new_cache()?;
    let out = model.forward(DecoderInput::Ids(&ids), Positions::Sequential, &mut cache, None)?;
    let vocab = model.config().vocab_size;
    let arr = NpyArray::from_slice(DType::F32, &[ids.len(), vocab], &out.logits)?;
    write_npy(&args.output, &arr)?;
    eprintln!("wrote {} ([{}, {vocab}] f32)", args.output.display(), ids.len());
    Ok(())
}
