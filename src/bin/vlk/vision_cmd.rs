//! `vlk vision`: a checkpoint's vision tower on pixel values, writing the merged
//! embeddings (and DeepStack features) as .npy files.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use vlkernels::models::{read_json, JsonView, VisionTower, Weights};
use vlkernels::npy::{read_npy, write_npy, NpyArray};
use vlkernels::{DType, Error, Result};

#[derive(Args)]
pub struct VisionArgs {
    /// Model folder (config.json and safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Pixel values .npy (f32 or f16), all images' patches concatenated.
    #[arg(long)]
    pixel_values: PathBuf,
    /// One grid per image, T,H,W in patches (repeat the flag for several images).
    #[arg(long = "grid-thw", required = true)]
    grid_thw: Vec<String>,
    /// Output .npy for the embeddings; DeepStack features go to OUTPUT with `.deepstack_J.npy`.
    #[arg(long)]
    output: PathBuf,
    /// Run the tower this many times and report the fastest and median time.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

pub fn run(args: VisionArgs) -> Result<()> {
    if args.repeat == 0 {
        return Err(Error::invalid("--repeat 0: need at least one run"));
    }
    let grids = args
        .grid_thw
        .iter()
        .map(|g| {
            let v = crate::parse_list("--grid-thw", g)?;
            <[usize; 3]>::try_from(v.as_slice())
                .map_err(|_| Error::invalid(format!("--grid-thw '{g}': need three values T,H,W")))
        })
        .collect::<Result<Vec<_>>>()?;
    let cfg = read_json(&args.model, "config.json")?;
    let weights = Weights::open(&args.model)?;
    let tower = VisionTower::load(&weights, &JsonView::new("config.json", &cfg)?)?;
    let pv = read_npy(&args.pixel_values)?;
    let pixels: Vec<f32> = match pv.dtype {
        DType::F32 => bytemuck::pod_collect_to_vec(&pv.data),
        DType::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(&pv.data)
            .into_iter()
            .map(f32::from)
            .collect(),
        other => {
            return Err(Error::UnsupportedDType(format!(
                "{}: pixel values of dtype {other} (need f32 or f16)",
                args.pixel_values.display()
            )))
        }
    };
    let mut times = Vec::with_capacity(args.repeat);
    let mut out = None;
    for _ in 0..args.repeat {
        let start = Instant::now();
        out = Some(tower.forward(&pixels, &grids)?);
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let out = out.expect("at least one run");
    times.sort_by(f64::total_cmp);
    let rows = out.embeds.len() / out.out_hidden;
    write_npy(
        &args.output,
        &NpyArray::from_slice(DType::F32, &[rows, out.out_hidden], &out.embeds)?,
    )?;
    for (j, feat) in out.deepstack.iter().enumerate() {
        let path = args.output.with_extension(format!("deepstack_{j}.npy"));
        write_npy(&path, &NpyArray::from_slice(DType::F32, &[rows, out.out_hidden], feat)?)?;
    }
    println!(
        "embeds [{rows}, {}], {} DeepStack feature(s); {} run(s): min {:.2} ms, median {:.2} ms",
        out.out_hidden,
        out.deepstack.len(),
        times.len(),
        times[0],
        times[times.len() / 2]
    );
    Ok(())
}
