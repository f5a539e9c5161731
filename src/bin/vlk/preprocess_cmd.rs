//! `vlk preprocess`: one image through the Qwen2-VL image processor, written as the
//! `pixel_values` .npy that `vlk logits --pixel-values` reads.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use vlkernels::models::processor::{preprocess, ProcessorConfig, ProcessorFlavor, RgbImage};
use vlkernels::npy::{write_npy, NpyArray};
use vlkernels::{DType, Result};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Flavor {
    /// transformers' Qwen2VLImageProcessorFast (torchvision), the 4.57.1 default.
    Fast,
    /// transformers' Qwen2VLImageProcessor (Pillow).
    Slow,
}

#[derive(Args)]
pub struct PreprocessArgs {
    /// Model folder (reads preprocessor_config.json, else config.json's vision_config).
    #[arg(long)]
    model: PathBuf,
    /// PNG or JPEG image.
    #[arg(long)]
    image: PathBuf,
    /// Output .npy: f32 [grid_t*grid_h*grid_w, 3*T*P*P].
    #[arg(long)]
    output: PathBuf,
    /// Which transformers implementation to reproduce.
    #[arg(long, value_enum, default_value = "fast")]
    flavor: Flavor,
    /// Run the processor this many times and report the fastest and median time.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

pub fn run(args: PreprocessArgs) -> Result<()> {
    let flavor = match args.flavor {
        Flavor::Fast => ProcessorFlavor::Fast,
        Flavor::Slow => ProcessorFlavor::Slow,
    };
    let cfg = ProcessorConfig::from_model_dir(&args.model, flavor)?;
    if args.repeat == 0 {
        return Err(vlkernels::Error::invalid("--repeat 0: need at least one run"));
    }
    let img = RgbImage::open(&args.image)?;
    let mut times = Vec::with_capacity(args.repeat);
    let mut out = None;
    for _ in 0..args.repeat {
        let start = Instant::now();
        out = Some(preprocess(&img, &cfg)?);
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let out = out.expect("at least one run");
    times.sort_by(f64::total_cmp);
    let rows = out.pixel_values.len() / out.patch_dim;
    let arr = NpyArray::from_slice(DType::F32, &[rows, out.patch_dim], &out.pixel_values)?;
    write_npy(&args.output, &arr)?;
    let [t, h, w] = out.grid_thw;
    println!("grid_thw: {t},{h},{w}");
    eprintln!(
        "{}x{} image -> pixel_values [{rows}, {}]: {} run(s), min {:.2} ms, median {:.2} ms",
        img.height,
        img.width,
        out.patch_dim,
        times.len(),
        times[0],
        times[times.len() / 2]
    );
    Ok(())
}
