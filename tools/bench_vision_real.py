#!/usr/bin/env python3
"""Times vision towers at real widths, reduced in depth, on a 1024x1024 image: transformers
4.57.1 `model.visual` beside `vlk vision`, same machine, same sitting.

Random-weight towers built from configs alone (no hub) and saved to a temporary folder:
- Qwen2.5-VL-3B-like: hidden 1280, 16 heads, MLP 3420, out 2048, patch 14, window 112;
  DEPTH blocks (the last one full attention, the others windowed).
- Qwen3-VL-2B-like: hidden 1024, 16 heads, MLP 4096, out 2048, patch 16, 48x48 position
  table; DEPTH blocks with a DeepStack merger after the first.
The text model is a one-layer stub (only the tower runs). The image is the committed Chelsea
crop upscaled to 1024x1024; pixel values come from transformers' processor.

Usage: /work/.venv-hf/bin/python tools/bench_vision_real.py [--depth 2] [--repeat 3]
"""

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
VLK = os.path.join(ROOT, "target", "release", "vlk")
TEXT = dict(hidden_size=2048, intermediate_size=64, num_hidden_layers=1, num_attention_heads=16,
            num_key_value_heads=2, head_dim=128, vocab_size=512)


def timed(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return min(times), statistics.median(times)


def build(kind, depth):
    if kind == "qwen2_5_vl":
        vision = dict(depth=depth, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                      fullatt_block_indexes=[depth - 1], hidden_act="silu")
        text = dict(TEXT, rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]})
        cfg = Qwen2_5_VLConfig(vision_config=vision, text_config=text, **text)
        model = Qwen2_5_VLForConditionalGeneration(cfg)
        pre = {"patch_size": 14, "temporal_patch_size": 2, "merge_size": 2, "min_pixels": 3136,
               "max_pixels": 12845056, "image_processor_type": "Qwen2VLImageProcessor"}
    else:
        vision = dict(depth=depth, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2048,
                      patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                      deepstack_visual_indexes=[0], hidden_act="gelu_pytorch_tanh")
        text = dict(TEXT, rope_scaling={"rope_type": "default", "mrope_section": [24, 20, 20],
                                        "mrope_interleaved": True})
        cfg = Qwen3VLConfig(vision_config=vision, text_config=text)
        model = Qwen3VLForConditionalGeneration(cfg)
        pre = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5] * 3,
               "image_std": [0.5] * 3, "size": {"shortest_edge": 65536, "longest_edge": 16777216},
               "image_processor_type": "Qwen2VLImageProcessorFast"}
    return model.eval(), pre


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    torch.manual_seed(0)
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print("torch threads:", torch.get_num_threads())
    tmp = tempfile.mkdtemp()
    img = Image.open(os.path.join(ROOT, "tests", "fixtures", "images", "chelsea_crop_131x97.png")).convert("RGB")
    big = img.resize((1024, 1024), Image.BICUBIC)
    print("\n| tower (depth %d) | patches | transformers min / median ms | vlk min / median ms | max abs diff |"
          % a.depth)
    print("| --- | --- | --- | --- | --- |")
    for kind in ("qwen2_5_vl", "qwen3_vl"):
        model, pre = build(kind, a.depth)
        mdir = os.path.join(tmp, kind)
        model.save_pretrained(mdir)
        import json

        with open(os.path.join(mdir, "preprocessor_config.json"), "w") as f:
            json.dump(pre, f)
        proc = AutoImageProcessor.from_pretrained(mdir)
        res = proc(images=[big], return_tensors="pt")
        pv, grid = res["pixel_values"].float(), res["image_grid_thw"]
        pv_path = os.path.join(mdir, "pv.npy")
        np.save(pv_path, pv.numpy())
        with torch.no_grad():
            out = model.model.visual(pv, grid_thw=grid)
            t_hf = timed(lambda: model.model.visual(pv, grid_thw=grid), a.repeat)
        ref = (out[0] if isinstance(out, tuple) else out).numpy()
        emb = os.path.join(tmp, kind + "_emb.npy")
        run = subprocess.run([VLK, "vision", "--model", mdir, "--pixel-values", pv_path, "--grid-thw",
                              ",".join(str(v) for v in grid[0].tolist()), "--output", emb, "--repeat", str(a.repeat)],
                             check=True, capture_output=True, text=True)
        m = re.search(r"min ([0-9.]+) ms, median ([0-9.]+) ms", run.stdout)
        diff = np.abs(np.load(emb) - ref).max()
        print(f"| {kind} | {pv.shape[0]} | {t_hf[0]:.0f} / {t_hf[1]:.0f} | {float(m.group(1)):.0f} / "
              f"{float(m.group(2)):.0f} | {diff:.2e} |")
        del model
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
