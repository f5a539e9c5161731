//! `vlk run`: greedy generation from a prompt (text through tokenizer.json, or ids),
//! printing the ids (and text), time to first token and decode tokens/s.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use vlkernels::models::{generate_greedy, read_json, GenerateOptions, Prompt, TextModel};
use vlkernels::{Error, Result};

use crate::logits_cmd::{check_device, parse_ids};

#[derive(Args)]
pub struct RunArgs {
    /// Model directory (config.json, safetensors, optional tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// An image to describe (vision-language models).
    #[arg(long)]
    pub image: Option<PathBuf>,
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

pub fn run(args: RunArgs) -> Result<()> {
    check_device(&args.device)?;
    if args.image.is_some() {
        return Err(Error::Unavailable(
            "--image: image prompts are not wired into vlk run yet".into(),
        ));
    }
    if args.max_new_tokens == 0 {
        return Err(Error::invalid("--max-new-tokens 0: nothing to generate"));
    }
    crate::init_threads(args.threads)?;
    let tokenizer = load_tokenizer(&args.model)?;
    let ids = match (&args.prompt, &args.input_ids) {
        (Some(text), _) => {
            let tok = tokenizer.as_ref().ok_or_else(|| {
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
    if ids.is_empty() {
        return Err(Error::invalid("the prompt has no tokens"));
    }
    eprintln!("loading {} ...", args.model.display());
    let t = Instant::now();
    let model = TextModel::open(&args.model)?;
    eprintln!("loaded in {:.2} s", t.elapsed().as_secs_f64());
    let opts = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        eos_token_ids: if args.ignore_eos {
            Vec::new()
        } else {
            eos_ids(&args.model)?
        },
    };
    let g = generate_greedy(&model, Prompt::ids(&ids), &opts, |tok| {
        eprint!("{tok} ");
        let _ = std::io::stderr().flush();
    })?;
    eprintln!();
    println!("prompt ids: {}", join(&ids));
    println!("ids: {}", join(&g.tokens));
    if let Some(tok) = &tokenizer {
        let text = tok
            .decode(&g.tokens, true)
            .map_err(|e| Error::invalid(format!("cannot decode the output: {e}")))?;
        println!("text: {text}");
    }
    let ttft = g.ttft.as_secs_f64();
    let rate = g
        .decode_tokens_per_sec()
        .map(|r| format!("{r:.2} tokens/s"))
        .unwrap_or_else(|| "n/a tokens/s (one token)".into());
    println!(
        "TTFT {:.2} ms ({} prompt tokens, {:.1} tokens/s prefill); decode {rate} over {} tokens",
        ttft * 1e3,
        g.prompt_tokens,
        g.prompt_tokens as f64 / ttft.max(1e-12),
        g.tokens.len().saturating_sub(1)
    );
    Ok(())
}
