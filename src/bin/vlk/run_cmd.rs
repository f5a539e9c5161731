//! `vlk run`: greedy generation from a prompt (text through tokenizer.json, or ids) and,
//! for VL models, optional images, printing the ids (and text), time to first token and
//! decode tokens/s. Image prompts: with `--prompt`, the ids are one
//! `<|vision_start|> <|image_pad|> × n <|vision_end|>` span per image, in the order of the
//! `--image` flags, followed by the text (no chat template); with `--input-ids`, the ids
//! must hold one such span per image, and a span written with a single `<|image_pad|>` is
//! expanded to its image's n tokens as transformers' processor does.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use vlkernels::models::processor::{ProcessorConfig, ProcessorFlavor, RgbImage};
use vlkernels::models::{
    generate_greedy, read_json, GenerateOptions, Generation, Images, Prompt, TextConfig, TextModel, VlModel,
};
use vlkernels::{Error, Result};

use crate::logits_cmd::{check_device, parse_ids};

#[derive(Args)]
pub struct RunArgs {
    /// Model directory (config.json, safetensors, optional tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// An image (PNG/JPEG) for a vision-language model, preprocessed with the folder's
    /// preprocessor_config.json; repeat the flag for several images, in prompt order.
    #[arg(long)]
    pub image: Vec<PathBuf>,
    /// Prompt text (needs tokenizer.json in the model directory).
    #[arg(long, conflicts_with = "input_ids", required_unless_present = "input_ids")]
    pub prompt: Option<String>,
    /// Comma-separated prompt token ids.
    #[arg(long)]
    pub input_ids: Option<String>,
    /// Tokens to generate at most.
    #[arg(long)]
    pub max_new_tokens: usize,
    /// Keep going past the end-of-sequence token(s) of config.json.
    #[arg(long)]
    pub ignore_eos: bool,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// `eos_token_id` (a number or a list) from config.json, top level or text_config.
fn eos_ids(model: &PathBuf) -> Result<Vec<u32>> {
    let cfg = read_json(model, "config.json")?;
    let v = cfg
        .get("eos_token_id")
        .or_else(|| cfg.get("text_config").and_then(|t| t.get("eos_token_id")));
    Ok(match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect(),
        _ => Vec::new(),
    })
}

fn load_tokenizer(model: &std::path::Path) -> Result<Option<tokenizers::Tokenizer>> {
    let path = model.join("tokenizer.json");
    if !path.is_file() {
        return Ok(None);
    }
    tokenizers::Tokenizer::from_file(&path)
        .map(Some)
        .map_err(|e| Error::Format(format!("{}: {e}", path.display())))
}

fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// Prompt ids from `--prompt` (through the tokenizer) or `--input-ids`, before any image span.
fn prompt_ids(args: &RunArgs, tokenizer: Option<&tokenizers::Tokenizer>) -> Result<Vec<u32>> {
    let ids = match (&args.prompt, &args.input_ids) {
        (Some(text), _) => {
            let tok = tokenizer.ok_or_else(|| {
                Error::invalid(format!(
                    "--prompt needs {}/tokenizer.json; give --input-ids instead",
                    args.model.display()
                ))
            })?;
            let enc = tok
                .encode(text.as_str(), false)
                .map_err(|e| Error::invalid(format!("cannot tokenize the prompt: {e}")))?;
            enc.get_ids().to_vec()
        }
        (None, Some(list)) => parse_ids(list)?,
        (None, None) => return Err(Error::invalid("give --prompt or --input-ids")),
    };
    if ids.is_empty() && args.image.is_empty() {
        return Err(Error::invalid("the prompt has no tokens"));
    }
    Ok(ids)
}

/// What a run produced, for the report.
struct Outcome {
    prompt: Vec<u32>,
    generation: Generation,
    /// Image decode + resize + patchify (all images), and tower + scatter, before the prefill.
    preprocess: Option<Duration>,
    prepare: Duration,
}

/// A VL model: the images (if any) through the processor and the tower, their spans in the ids.
fn run_vl(args: &RunArgs, tokenizer: Option<&tokenizers::Tokenizer>, opts: &GenerateOptions) -> Result<Outcome> {
    let mut ids = prompt_ids(args, tokenizer)?;
    eprintln!("loading {} ...", args.model.display());
    let t = Instant::now();
    let model = VlModel::open(&args.model)?;
    eprintln!("loaded in {:.2} s", t.elapsed().as_secs_f64());
    let mut processed = Vec::with_capacity(args.image.len());
    let images_start = Instant::now();
    if !args.image.is_empty() {
        let cfg = ProcessorConfig::from_model_dir(&args.model, ProcessorFlavor::Fast)?;
        for path in &args.image {
            let t = Instant::now();
            let p = model.preprocess(&RgbImage::open(path)?, &cfg)?;
            let [gt, gh, gw] = p.grid_thw;
            eprintln!(
                "{}: grid_thw {gt},{gh},{gw} ({} image tokens), preprocessed in {:.1} ms",
                path.display(),
                model.merged_tokens(p.grid_thw)?,
                t.elapsed().as_secs_f64() * 1e3
            );
            processed.push(p);
        }
    }
    let preprocess = (!processed.is_empty()).then(|| images_start.elapsed());
    let grids: Vec<[usize; 3]> = processed.iter().map(|p| p.grid_thw).collect();
    if !processed.is_empty() {
        ids = if args.prompt.is_some() {
            // Chat-less prompt: the image spans, then the text.
            let mut spans = Vec::new();
            for &g in &grids {
                spans.extend(model.image_span(g)?);
            }
            [spans, ids].concat()
        } else {
            model.expand_image_pads(&ids, &grids)?
        };
    }
    // Every image's patches, concatenated in prompt order (rows of the same width).
    let pixel_values: Vec<f32> = processed.iter().flat_map(|p| p.pixel_values.iter().copied()).collect();
    let images = processed.first().map(|p| Images {
        pixel_values: &pixel_values,
        row_width: p.patch_dim,
        grid_thw: &grids,
    });
    let g = model.generate(&ids, images.as_ref(), opts, print_token)?;
    Ok(Outcome {
        prompt: ids,
        generation: g.generation,
        preprocess,
        prepare: g.prepare_time,
    })
}

fn print_token(tok: u32) {
    eprint!("{tok} ");
    let _ = std::io::stderr().flush();
}

pub fn run(args: RunArgs) -> Result<()> {
    check_device(&args.device)?;
    if args.max_new_tokens == 0 {
        return Err(Error::invalid("--max-new-tokens 0: nothing to generate"));
    }
    crate::init_threads(args.threads)?;
    let cfg = TextConfig::from_dir(&args.model)?;
    if !args.image.is_empty() && !cfg.arch.is_vision_language() {
        return Err(Error::invalid(format!(
            "--image: {} is a text-only {:?} model",
            args.model.display(),
            cfg.arch
        )));
    }
    let tokenizer = load_tokenizer(&args.model)?;
    let opts = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        eos_token_ids: if args.ignore_eos {
            Vec::new()
        } else {
            eos_ids(&args.model)?
        },
    };
    let out = if cfg.arch.is_vision_language() {
        run_vl(&args, tokenizer.as_ref(), &opts)?
    } else {
        let ids = prompt_ids(&args, tokenizer.as_ref())?;
        eprintln!("loading {} ...", args.model.display());
        let t = Instant::now();
        let model = TextModel::open(&args.model)?;
        eprintln!("loaded in {:.2} s", t.elapsed().as_secs_f64());
        let generation = generate_greedy(&model, Prompt::ids(&ids), &opts, print_token)?;
        Outcome {
            prompt: ids,
            generation,
            preprocess: None,
            prepare: Duration::ZERO,
        }
    };
    eprintln!();
    let g = &out.generation;
    println!("prompt ids: {}", join(&out.prompt));
    println!("ids: {}", join(&g.tokens));
    if let Some(tok) = &tokenizer {
        let text = tok
            .decode(&g.tokens, true)
            .map_err(|e| Error::invalid(format!("cannot decode the output: {e}")))?;
        println!("text: {text}");
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let ttft = out.preprocess.unwrap_or_default() + out.prepare + g.ttft;
    let rate = g
        .decode_tokens_per_sec()
        .map(|r| format!("{r:.2} tokens/s"))
        .unwrap_or_else(|| "n/a tokens/s (one token)".into());
    let breakdown = match out.preprocess {
        Some(pre) => format!(
            "preprocess {:.2} ms, vision tower {:.2} ms, prefill {:.2} ms; ",
            ms(pre),
            ms(out.prepare),
            ms(g.ttft)
        ),
        None => String::new(),
    };
    println!(
        "TTFT {:.2} ms ({breakdown}{} prompt tokens, {:.1} tokens/s prefill); decode {rate} over {} tokens",
        ms(ttft),
        g.prompt_tokens,
        g.prompt_tokens as f64 / g.ttft.as_secs_f64().max(1e-12),
        g.tokens.len().saturating_sub(1)
    );
    Ok(())
}
