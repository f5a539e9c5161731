#!/usr/bin/env python3
"""Tiny random text models and their goldens for tests/models_text.rs.

Builds Qwen3 / Qwen3-MoE models from configs written here (no hub access), saves them
with save_pretrained (f32 safetensors) into tests/fixtures/models/<name>/ together with:

  case{i}_ids.npy      int64 [L]       token ids of prompt i (lengths in LENGTHS)
  case{i}_logits.npy   f32   [L, V]    logits of that prompt (one forward, no cache)
  router_ids.npy       int64 [M, L, k] top-k experts of prompt 2 in each MoE layer, best first
  router_layers.npy    int64 [M]       which decoder layers those are (MoE models only)
  gen_prompt.npy       int64 [P]       prompt of the greedy generation
  gen_output.npy       int64 [G]       the tokens greedy `generate` appended

Run with transformers 4.57.1 for the 4.x models:
    /work/.venv-hf/bin/python tools/gen_text_model_fixtures.py
and with a transformers 5.x on PYTHONPATH for the models saved by 5.x (qwen3_v5, qwen3_moe_v5):
    PYTHONPATH=/path/to/tf5 /work/.venv-hf/bin/python tools/gen_text_model_fixtures.py
With --bench DIR it instead writes one random bf16 model at a real shape (Qwen3-30B-A3B-like,
2 layers) into DIR for the benchmarks (not committed).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import transformers

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "models")
LENGTHS = [1, 7, 23]
V5 = int(transformers.__version__.split(".")[0]) >= 5


def rope_kwargs(theta, scaling=None):
    """rope_theta + rope_scaling (4.x) or rope_parameters (5.x)."""
    if V5:
        params = {"rope_type": "default", "rope_theta": theta}
        if scaling:
            params.update(scaling)
        return {"rope_parameters": params}
    out = {"rope_theta": theta}
    if scaling:
        out["rope_scaling"] = scaling
    return out


def common(**kw):
    base = dict(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        initializer_range=0.08,
        attn_implementation="eager",
    )
    base.update(kw)
    return base


def qwen3(name, **kw):
    cfg = transformers.Qwen3Config(**common(**kw))
    return name, transformers.Qwen3ForCausalLM(cfg)


def qwen3_moe(name, **kw):
    kw = dict(
        dict(
            num_hidden_layers=3,
            num_key_value_heads=1,
            moe_intermediate_size=32,
            num_experts=8,
            num_experts_per_tok=3,
            norm_topk_prob=True,
            decoder_sparse_step=1,
            mlp_only_layers=[1],
        ),
        **kw,
    )
    cfg = transformers.Qwen3MoeConfig(**common(**kw))
    return name, transformers.Qwen3MoeForCausalLM(cfg)


def models():
    if V5:
        return [
            qwen3("qwen3_v5", tie_word_embeddings=False, **rope_kwargs(10000.0)),
            qwen3_moe("qwen3_moe_v5", tie_word_embeddings=False, **rope_kwargs(10000.0)),
        ]
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}
    return [
        qwen3("qwen3_tied", tie_word_embeddings=True, **rope_kwargs(10000.0)),
        qwen3(
            "qwen3_untied",
            tie_word_embeddings=False,
            num_attention_heads=6,
            num_key_value_heads=3,
            num_hidden_layers=3,
            **rope_kwargs(1000000.0, yarn),
        ),
        qwen3_moe("qwen3_moe", tie_word_embeddings=False, **rope_kwargs(10000.0)),
    ]


def save_npy(d, name, arr):
    np.save(os.path.join(d, name), arr)


def moe_layers(model):
    cfg = model.config
    return [
        i
        for i in range(cfg.num_hidden_layers)
        if i not in cfg.mlp_only_layers and cfg.num_experts > 0 and (i + 1) % cfg.decoder_sparse_step == 0
    ]


def write(name, model, seed):
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    model.eval()
    model.save_pretrained(d, safe_serialization=True)
    gen = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    is_moe = hasattr(model.config, "num_experts")
    min_margin = float("inf")
    for i, n in enumerate(LENGTHS):
        ids = torch.randint(0, vocab, (1, n), generator=gen)
        with torch.no_grad():
            out = model(input_ids=ids, use_cache=False, output_router_logits=is_moe and i == 2)
        logits = out.logits[0].float().numpy()
        top2 = np.sort(logits, axis=-1)[:, -2:]
        min_margin = min(min_margin, float((top2[:, 1] - top2[:, 0]).min()))
        save_npy(d, f"case{i}_ids.npy", ids[0].numpy().astype(np.int64))
        save_npy(d, f"case{i}_logits.npy", logits.astype(np.float32))
        if is_moe and i == 2:
            k = model.config.num_experts_per_tok
            chosen = [torch.topk(torch.softmax(r.float(), dim=-1), k, dim=-1).indices for r in out.router_logits]
            save_npy(d, "router_ids.npy", torch.stack(chosen).numpy().astype(np.int64))
            save_npy(d, "router_layers.npy", np.array(moe_layers(model), dtype=np.int64))
    prompt = torch.randint(0, vocab, (1, 5), generator=gen)
    with torch.no_grad():
        full = model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=8,
            do_sample=False,
            pad_token_id=0,
        )
    save_npy(d, "gen_prompt.npy", prompt[0].numpy().astype(np.int64))
    save_npy(d, "gen_output.npy", full[0, prompt.shape[1] :].numpy().astype(np.int64))
    for f in ("generation_config.json",):
        p = os.path.join(d, f)
        if os.path.exists(p):
            os.remove(p)
    print(f"{name}: transformers {transformers.__version__}, smallest top-1 margin {min_margin:.2e}")


def write_tokenizer(d):
    """A real WordLevel tokenizer trained on a few sentences (ids < the tiny vocab)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    text = [
        "the quick brown fox jumps over the lazy dog",
        "a picture of a cat sitting on a red chair",
        "describe this image in one short sentence",
        "hello world , this is a tiny language model .",
    ]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = None
    trainer = trainers.WordLevelTrainer(vocab_size=512, special_tokens=["<unk>"])
    tok.train_from_iterator(text, trainer)
    tok.save(os.path.join(d, "tokenizer.json"))
    ids = tok.encode("hello world").ids
    print(f"tokenizer.json: {tok.get_vocab_size()} words; 'hello world' -> {ids}")


def write_bench(d):
    """Qwen3-30B-A3B-like shapes, 2 layers, random bf16 weights."""
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # never materialise the f32 copy
    cfg = transformers.Qwen3MoeConfig(
        vocab_size=151936,
        hidden_size=2048,
        intermediate_size=6144,
        moe_intermediate_size=768,
        num_hidden_layers=2,
        num_attention_heads=32,
        num_key_value_heads=4,
        head_dim=128,
        num_experts=128,
        num_experts_per_tok=8,
        norm_topk_prob=True,
        rope_theta=1000000.0,
        max_position_embeddings=40960,
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
    model = transformers.Qwen3MoeForCausalLM(cfg)
    model.save_pretrained(d, safe_serialization=True)
    print(f"wrote {d}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", help="write the real-shape benchmark model into this directory instead")
    args = ap.parse_args()
    if args.bench:
        write_bench(args.bench)
        return
    torch.manual_seed(8)
    for seed, (name, model) in enumerate(models()):
        write(name, model, 100 + seed)
    if not V5:
        write_tokenizer(os.path.join(ROOT, "qwen3_tied"))
    with open(os.path.join(ROOT, "text_models.json" if not V5 else "text_models_v5.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__}, f)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
