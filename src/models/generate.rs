//! Greedy generation: one prefill over the prompt, then one decode step per new token,
//! each reading and extending the [`KvCache`]. MRoPE models decode at
//! `sequence index + rope delta` on all three rows
//! ([`crate::rope::positions::decode_positions`]).

use std::time::{Duration, Instant};

use super::decoder::{DecoderInput, DeepStack, LogitRows, Positions, TextModel};
use crate::rope::positions::decode_positions;
use crate::{Error, Result};

/// A prompt as the decoder takes it.
#[derive(Clone, Copy, Debug)]
pub struct Prompt<'a> {
    pub input: DecoderInput<'a>,
    /// Prefill positions (`Sequential` for text-only prompts).
    pub positions: Positions<'a>,
    pub deepstack: Option<DeepStack<'a>>,
    /// MRoPE decode offset (HF's `rope_deltas`; 0 for text-only prompts).
    pub rope_delta: i64,
}

impl<'a> Prompt<'a> {
    /// A text-only prompt of token ids.
    pub fn ids(ids: &'a [u32]) -> Self {
        Prompt {
            input: DecoderInput::Ids(ids),
            positions: Positions::Sequential,
            deepstack: None,
            rope_delta: 0,
        }
    }
}

/// When to stop.
#[derive(Clone, Debug, Default)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// Generation stops after emitting one of these.
    pub eos_token_ids: Vec<u32>,
}

/// Generated ids and timings.
#[derive(Clone, Debug)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    /// Prefill time up to the first token (time to first token).
    pub ttft: Duration,
    /// Time spent in the decode steps after the first token.
    pub decode_time: Duration,
}

impl Generation {
    /// Tokens per second of the decode steps (tokens after the first).
    pub fn decode_tokens_per_sec(&self) -> Option<f64> {
        let steps = self.tokens.len().saturating_sub(1);
        let secs = self.decode_time.as_secs_f64();
        (steps > 0 && secs > 0.0).then(|| steps as f64 / secs)
    }
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy decoding; `on_token` sees each token as it is produced.
pub fn generate_greedy(
    model: &TextModel,
    prompt: Prompt<'_>,
    opts: &GenerateOptions,
    mut on_token: impl FnMut(u32),
) -> Result<Generation> {
    if opts.max_new_tokens == 0 {
        return Err(Error::invalid("max_new_tokens 0: nothing to generate"));
    }
    let mrope = model.config().rope.mrope.is_some();
    let mut cache = model.new_cache()?;
    let t0 = Instant::now();
    let out = model.forward_rows(
        prompt.input,
        prompt.positions,
        &mut cache,
        prompt.deepstack,
        LogitRows::Last,
    )?;
    let prompt_tokens = cache.len();
    let mut next = argmax(&out.logits);
    let ttft = t0.elapsed();
    on_token(next);
    let mut tokens = vec![next];
    let t1 = Instant::now();
    while tokens.len() < opts.max_new_tokens && !opts.eos_token_ids.contains(&next) {
        let index = cache.len();
        let pos = if mrope {
            decode_positions(prompt.rope_delta, index, 1)?
        } else {
            vec![index as i64]
        };
        let positions = if mrope {
            Positions::Mrope(&pos)
        } else {
            Positions::Linear(&pos)
        };
        let out = model.forward_rows(DecoderInput::Ids(&[next]), positions, &mut cache, None, LogitRows::Last)?;
        next = argmax(&out.logits);
        on_token(next);
        tokens.push(next);
    }
    Ok(Generation {
        tokens,
        prompt_tokens,
        ttft,
        decode_time: t1.elapsed(),
    })
}
