#!/usr/bin/env python3
"""Tiny random Qwen2.5-VL, Qwen3-VL and Qwen3-VL-MoE models and their goldens.

Builds each model from a config alone (no hub), with transformers 4.57.1, saves it
(config.json, model.safetensors in f32, preprocessor_config.json) under
tests/fixtures/models/<name>/ and, per case, the inputs and transformers' outputs as .npy
under tests/fixtures/models/<name>/cases/<case>/. See tests/fixtures/models/README.md.

Run: /work/.venv-hf/bin/python tools/gen_vl_model_fixtures.py  (from the repository root)
"""
import json
import os
import shutil

import numpy as np
import torch
import transformers
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMoeConfig,
    Qwen3VLMoeForConditionalGeneration,
)

assert transformers.__version__ == "4.57.1", transformers.__version__

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "models")
VOCAB = 512
# Special ids inside the small vocabulary.
IMAGE, VIDEO, VSTART, VEND = 500, 501, 498, 499
PATCH = 4  # small patches keep pixel_values small; the code paths are the same as patch 14/16
MERGE = 2
TEMPORAL = 2

TEXT_COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rms_norm_eps=1e-6,
    initializer_range=0.1,  # larger than the default 0.02 so logits and top-1 margins are not tiny
)
TOKENS = dict(image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VSTART, vision_end_token_id=VEND)


def qwen2_5_vl():
    vision = dict(
        depth=4,
        initializer_range=0.1,
        hidden_size=32,
        intermediate_size=48,
        num_heads=2,
        in_channels=3,
        patch_size=PATCH,
        spatial_merge_size=MERGE,
        temporal_patch_size=TEMPORAL,
        window_size=PATCH * MERGE * 4,  # 4x4 merged units per window, as 112 / 14 / 2 in the real model
        fullatt_block_indexes=[1, 3],
        out_hidden_size=64,
        tokens_per_second=2,
    )
    text = dict(TEXT_COMMON, rope_theta=10000.0, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **TOKENS)
    return cfg, Qwen2_5_VLForConditionalGeneration


def qwen3_vl():
    vision = dict(
        depth=4,
        initializer_range=0.1,
        hidden_size=32,
        intermediate_size=48,
        num_heads=2,
        in_channels=3,
        patch_size=PATCH,
        spatial_merge_size=MERGE,
        temporal_patch_size=TEMPORAL,
        out_hidden_size=64,
        num_position_embeddings=36,  # a 6x6 table, bilinearly interpolated to each grid
        deepstack_visual_indexes=[0, 2],
    )
    text = dict(
        TEXT_COMMON,
        head_dim=16,
        rope_theta=5000000.0,
        rope_scaling={"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True},
        tie_word_embeddings=True,
    )
    cfg = Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **TOKENS)
    return cfg, Qwen3VLForConditionalGeneration


def qwen3_vl_moe():
    cfg, _ = qwen3_vl()
    text = cfg.text_config.to_dict()
    for k in ("model_type", "architectures", "transformers_version", "torch_dtype", "dtype"):
        text.pop(k, None)
    text.update(
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        decoder_sparse_step=1,
        mlp_only_layers=[1],  # a dense layer inside the MoE stack
        norm_topk_prob=True,
        tie_word_embeddings=False,
    )
    vision = cfg.vision_config.to_dict()
    for k in ("model_type", "architectures", "transformers_version", "torch_dtype", "dtype"):
        vision.pop(k, None)
    cfg = Qwen3VLMoeConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **TOKENS)
    return cfg, Qwen3VLMoeForConditionalGeneration


def prompt(rng, images):
    """Text ids around one block of image tokens per image: [text, VSTART, IMAGE*n, VEND, ...]."""
    ids = list(rng.integers(0, 480, size=5 if images else 12))
    for t, h, w in images:
        ids += [VSTART] + [IMAGE] * (t * h * w // MERGE**2) + [VEND]
        ids += list(rng.integers(0, 480, size=3))
    return np.array(ids, dtype=np.int64)


CASES = {
    "text": [],
    # 6x10 patches = 3x5 merged units: windows of 4x4 units pad in both directions.
    "one_image": [(1, 6, 10)],
    # Two images in one prompt, different grids (8x4 pads the window height only).
    "two_images": [(1, 6, 10), (1, 8, 4)],
}


def save(dirname, name, arr):
    np.save(os.path.join(dirname, name + ".npy"), np.ascontiguousarray(arr))


def run_case(model, name, case, grids, rng, out_dir):
    d = os.path.join(out_dir, "cases", case)
    os.makedirs(d, exist_ok=True)
    ids = prompt(rng, grids)
    save(d, "input_ids", ids)
    kwargs = {}
    if grids:
        grid = np.array(grids, dtype=np.int64)
        n = int(sum(t * h * w for t, h, w in grids))
        dim = 3 * TEMPORAL * PATCH * PATCH
        pv = torch.from_numpy(rng.standard_normal((n, dim)).astype(np.float32))
        kwargs = dict(pixel_values=pv, image_grid_thw=torch.from_numpy(grid))
        save(d, "pixel_values", pv.numpy())
        save(d, "grid_thw", grid)
        with torch.no_grad():
            out = model.model.visual(pv, grid_thw=torch.from_numpy(grid))
        if isinstance(out, tuple):
            embeds, deepstack = out
            for i, f in enumerate(deepstack):
                save(d, f"deepstack_{i}", f.float().numpy())
        else:
            embeds = out
        save(d, "vision_embeds", embeds.float().numpy())
    input_ids = torch.from_numpy(ids)[None]
    with torch.no_grad():
        pos, deltas = model.model.get_rope_index(input_ids, kwargs.get("image_grid_thw"), None, None)
        logits = model(input_ids=input_ids, **kwargs).logits[0]
    save(d, "position_ids", pos[:, 0, :].numpy().astype(np.int64))
    save(d, "rope_deltas", deltas.reshape(-1).numpy().astype(np.int64))
    save(d, "logits", logits.float().numpy())
    # Greedy continuation: the ids transformers generates after the prompt.
    with torch.no_grad():
        gen = model.generate(input_ids=input_ids, max_new_tokens=6, do_sample=False, **kwargs)
    save(d, "generated_ids", gen[0, ids.shape[0] :].numpy().astype(np.int64))
    print(f"  {name}/{case}: {ids.shape[0]} tokens, grids {grids}")


def main():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    for name, build in [("qwen2_5_vl", qwen2_5_vl), ("qwen3_vl", qwen3_vl), ("qwen3_vl_moe", qwen3_vl_moe)]:
        cfg, cls = build()
        cfg._attn_implementation = "eager"
        model = cls(cfg).eval().float()
        # Random (not zero-initialised) norms and biases so every parameter matters.
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if pname.endswith("norm.weight") or ".norm" in pname or "ln_q" in pname:
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
                elif pname.endswith(".bias"):
                    p.copy_(0.05 * torch.randn_like(p))
        out_dir = os.path.join(ROOT, name)
        shutil.rmtree(out_dir, ignore_errors=True)
        model.save_pretrained(out_dir, safe_serialization=True)
        proc = Qwen2VLImageProcessor(
            patch_size=PATCH,
            merge_size=MERGE,
            temporal_patch_size=TEMPORAL,
            min_pixels=(PATCH * MERGE) ** 2 * 4,
            max_pixels=(PATCH * MERGE) ** 2 * 64,
        )
        proc.save_pretrained(out_dir)
        gen_cfg = os.path.join(out_dir, "generation_config.json")
        if os.path.exists(gen_cfg):
            os.remove(gen_cfg)
        for case, grids in CASES.items():
            run_case(model, name, case, grids, rng, out_dir)
        # 4.57.1 writes `architectures` into text_config for these composite configs; published
        # checkpoints carry it at the top level, where loaders look for it.
        path = os.path.join(out_dir, "config.json")
        with open(path) as f:
            conf = json.load(f)
        conf.get("text_config", {}).pop("architectures", None)
        conf["architectures"] = [cls.__name__]
        with open(path, "w") as f:
            json.dump(conf, f, indent=2, sort_keys=True)
            f.write("\n")
        print(f"{name}: saved {cls.__name__} to {out_dir}")


if __name__ == "__main__":
    main()
