#!/usr/bin/env python3
"""End-to-end image prompts on the CPU: `vlk run --image` beside transformers 4.57.1, same
machine, same sitting, for random-weight VL models at real widths reduced in depth.

- Qwen2.5-VL-3B-like: tower hidden 1280 / 16 heads / MLP 3420 / patch 14 / window 112,
  VDEPTH blocks (the last one full attention); decoder hidden 2048, 16 q / 2 kv heads of 128,
  MLP 11008, vocabulary 151936 (tied), TDEPTH layers.
- Qwen3-VL-2B-like: tower hidden 1024 / 16 heads / MLP 4096 / patch 16 / 48x48 position table,
  VDEPTH blocks, DeepStack after block 0; decoder hidden 2048, 16 q / 8 kv heads of 128,
  MLP 6144, vocabulary 151936 (tied), TDEPTH layers.

Weights are saved in bf16 (`save_pretrained`) and computed in f32 by both sides. The image is
the committed Chelsea crop upscaled (Pillow bicubic) to 1024x1024 and saved as PNG; the prompt
is 5 text ids, `<|vision_start|><|image_pad|><|vision_end|>` (expanded to the image's tokens)
and 5 text ids. TTFT covers, on both sides, the PNG decode, the processor (fast, torchvision),
the tower and the prefill up to the first token; decode tokens/s is over the following tokens
(transformers: `generate` with a streamer recording when each token arrives, no early stop).
`vlk run` is timed in a fresh process per run (model load not included); the two sides
alternate run by run. Medians of REPEAT.

In the same run, before each model: memcpy bandwidth (NumPy copyto of 256 MiB, read + write bytes, best of 5) and
torch's f32 GEMM rate (2048^3, best of 5), the limits the figures are compared with.

Usage: PYTHONPATH=<dir with torchvision> /work/.venv-hf/bin/python tools/bench_vl_run.py \
           [--vdepth 2] [--tdepth 2] [--new 16] [--repeat 3] [--threads 2]
(build `target/release/vlk` first).
"""

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import tempfile
import time

import numpy as np
import torch
import transformers
from PIL import Image
from transformers import (
    AutoModelForImageTextToText,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)
from transformers.generation.streamers import BaseStreamer
from transformers.models.qwen2_vl.image_processing_qwen2_vl_fast import Qwen2VLImageProcessorFast

assert transformers.__version__ == "4.57.1", transformers.__version__

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
VLK = os.path.join(ROOT, "target", "release", "vlk")
VOCAB = 151936
VSTART, VEND, IMAGE, VIDEO = 151652, 151653, 151655, 151656
TOKENS = dict(image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VSTART, vision_end_token_id=VEND)


def build(kind, vdepth, tdepth):
    """(model, preprocessor config, numbers for the FLOP / byte counts)."""
    if kind == "qwen2_5_vl":
        vision = dict(depth=vdepth, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                      fullatt_block_indexes=[vdepth - 1], hidden_act="silu", tokens_per_second=2)
        text = dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=tdepth, num_attention_heads=16,
                    num_key_value_heads=2, vocab_size=VOCAB, rope_theta=1e6, tie_word_embeddings=True,
                    rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]})
        cfg = Qwen2_5_VLConfig(vision_config=vision, text_config=text, tie_word_embeddings=True, **TOKENS)
        model = Qwen2_5_VLForConditionalGeneration(cfg)
        pre = {"patch_size": 14, "temporal_patch_size": 2, "merge_size": 2, "min_pixels": 3136,
               "max_pixels": 12845056, "image_processor_type": "Qwen2VLImageProcessor"}
        dims = dict(vh=1280, vi=3420, vgated=True, patch_dim=3 * 2 * 14 * 14, window=64, kv=2, ti=11008, mergers=1)
    else:
        vision = dict(depth=vdepth, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2048,
                      patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                      deepstack_visual_indexes=[0], hidden_act="gelu_pytorch_tanh")
        text = dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=tdepth, num_attention_heads=16,
                    num_key_value_heads=8, head_dim=128, vocab_size=VOCAB, rope_theta=5e6, tie_word_embeddings=True,
                    rope_scaling={"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True})
        cfg = Qwen3VLConfig(vision_config=vision, text_config=text, tie_word_embeddings=True, **TOKENS)
        model = Qwen3VLForConditionalGeneration(cfg)
        pre = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5] * 3,
               "image_std": [0.5] * 3, "size": {"shortest_edge": 65536, "longest_edge": 16777216},
               "image_processor_type": "Qwen2VLImageProcessorFast"}
        dims = dict(vh=1024, vi=4096, vgated=False, patch_dim=3 * 2 * 16 * 16, window=None, kv=8, ti=6144, mergers=2)
    return model.eval(), pre, dims


def window_sq_sum(gh, gw, window):
    """Sum over the tower's attention windows of (patches per window)^2 (merged units of 2x2 patches)."""
    side = int(round((window // 4) ** 0.5))  # merged units per window side
    def sides(n):
        return [min(side, n - i) for i in range(0, n, side)]
    a, b = sides(gh // 2), sides(gw // 2)
    return 16 * sum(x * x for x in a) * sum(y * y for y in b)


def flops(dims, vdepth, tdepth, grid, n_tokens):
    """Counted multiply-add work (2 FLOP each) of the tower and of the prefill."""
    t, gh, gw = grid
    n = t * gh * gw
    h, i = dims["vh"], dims["vi"]
    tower = 2 * n * dims["patch_dim"] * h
    for b in range(vdepth):
        tower += 2 * n * h * 4 * h + 2 * n * h * i * (3 if dims["vgated"] else 2)
        full = dims["window"] is None or b == vdepth - 1
        sq = n * n if full else window_sq_sum(gh, gw, dims["window"])
        tower += 2 * 2 * sq * h
    tower += dims["mergers"] * 2 * (n // 4) * (4 * h * 4 * h + 4 * h * 2048)
    H, q, kv = 2048, 2048, dims["kv"] * 128
    layer = H * (q + 2 * kv) + q * H + 3 * H * dims["ti"]
    prefill = tdepth * (2 * n_tokens * layer + 2 * 2 * (n_tokens * n_tokens / 2) * q) + 2 * H * VOCAB
    decode_bytes = 4 * (tdepth * layer + H * VOCAB)
    return tower, prefill, decode_bytes


class Clock(BaseStreamer):
    """Records when generate hands over each new token (the first call is the prompt)."""

    def __init__(self):
        self.times, self.tokens, self.calls = [], [], 0

    def put(self, value):
        self.calls += 1
        if self.calls > 1:
            self.times.append(time.perf_counter())
            self.tokens += value.reshape(-1).tolist()

    def end(self):
        pass


def run_transformers(model, mdir, png, text_ids, new):
    t0 = time.perf_counter()
    img = Image.open(png).convert("RGB")
    proc = Qwen2VLImageProcessorFast.from_pretrained(mdir)
    res = proc(images=[img], return_tensors="pt")
    grid = res["image_grid_thw"]
    n = int(grid.prod()) // 4
    ids = torch.tensor([text_ids[:5] + [VSTART] + [IMAGE] * n + [VEND] + text_ids[5:]])
    clock = Clock()
    with torch.inference_mode():
        model.generate(input_ids=ids, pixel_values=res["pixel_values"], image_grid_thw=grid, max_new_tokens=new,
                       min_new_tokens=new, do_sample=False, streamer=clock)
    ttft = clock.times[0] - t0
    dec = (len(clock.times) - 1) / (clock.times[-1] - clock.times[0])
    return ttft, dec, clock.tokens, grid[0].tolist(), ids.shape[1]


def run_vlk(mdir, png, text_ids, new, threads):
    ids = text_ids[:5] + [VSTART, IMAGE, VEND] + text_ids[5:]
    out = subprocess.run([VLK, "run", "--model", mdir, "--image", png, "--input-ids", ",".join(map(str, ids)),
                          "--max-new-tokens", str(new), "--ignore-eos", "--threads", str(threads)],
                         check=True, capture_output=True, text=True).stdout
    m = re.search(r"TTFT ([0-9.]+) ms \(preprocess ([0-9.]+) ms, vision tower ([0-9.]+) ms, prefill ([0-9.]+) ms; "
                  r"([0-9]+) prompt tokens.*decode ([0-9.]+) tokens/s", out)
    toks = [int(x) for x in re.search(r"^ids: (.*)$", out, re.M).group(1).split(",")]
    return (float(m.group(1)) / 1e3, float(m.group(6)), toks,
            [float(m.group(k)) / 1e3 for k in (2, 3, 4)], int(m.group(5)))


def limits():
    src = np.ones(256 << 18, dtype=np.float32)  # 256 MiB
    dst = np.empty_like(src)
    best = min(timeit(lambda: np.copyto(dst, src)) for _ in range(5))
    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    gemm = min(timeit(lambda: torch.mm(a, b)) for _ in range(5))
    return 2 * src.nbytes / best, 2 * 2048**3 / gemm


def timeit(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vdepth", type=int, default=2)
    ap.add_argument("--tdepth", type=int, default=2)
    ap.add_argument("--new", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    random.seed(3)
    text_ids = [random.randrange(1000, 150000) for _ in range(10)]
    print("start:", uptime())
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    tmp = tempfile.mkdtemp()
    png = os.path.join(tmp, "chelsea_1024.png")
    img = Image.open(os.path.join(ROOT, "tests", "fixtures", "images", "chelsea_crop_131x97.png")).convert("RGB")
    img.resize((1024, 1024), Image.BICUBIC).save(png)
    rows = []
    for kind in ("qwen2_5_vl", "qwen3_vl"):
        bw, gemm = limits()
        print(f"\n{kind}: {uptime()}\n  memcpy {bw / 2**30:.2f} GiB/s (read + write), torch f32 GEMM 2048^3 "
              f"{gemm / 1e9:.1f} GFLOP/s")
        model, pre, dims = build(kind, a.vdepth, a.tdepth)
        mdir = os.path.join(tmp, kind)
        model.to(torch.bfloat16).save_pretrained(mdir)
        del model
        with open(os.path.join(mdir, "preprocessor_config.json"), "w") as f:
            json.dump(pre, f)
        hf = AutoModelForImageTextToText.from_pretrained(mdir, dtype=torch.float32).eval()
        # Alternate the two sides so that load from other work on the machine hits both alike.
        hf_runs, vlk_runs = [], []
        for _ in range(a.repeat):
            hf_runs.append(run_transformers(hf, mdir, png, text_ids, a.new))
            vlk_runs.append(run_vlk(mdir, png, text_ids, a.new, a.threads))
        del hf
        grid, n_tok = hf_runs[0][3], hf_runs[0][4]
        assert vlk_runs[0][4] == n_tok, (vlk_runs[0][4], n_tok)
        tower, prefill, dbytes = flops(dims, a.vdepth, a.tdepth, grid, n_tok)
        same = all(r[2] == hf_runs[0][2] for r in hf_runs + vlk_runs)
        med = lambda xs: statistics.median(xs)  # noqa: E731
        v_ttft, v_dec = med([r[0] for r in vlk_runs]), med([r[1] for r in vlk_runs])
        h_ttft, h_dec = med([r[0] for r in hf_runs]), med([r[1] for r in hf_runs])
        parts = [med([r[3][k] for r in vlk_runs]) for k in range(3)]
        print(f"  {kind}: grid {grid}, {n_tok} prompt tokens, tower {tower / 1e9:.0f} GFLOP, prefill "
              f"{prefill / 1e9:.0f} GFLOP, decode reads {dbytes / 2**30:.2f} GiB/token; same ids on both sides: {same}")
        print(f"  vlk TTFT runs {[round(r[0], 2) for r in vlk_runs]} s (median parts: preprocess {parts[0]:.2f}, "
              f"tower {parts[1]:.2f}, prefill {parts[2]:.2f} s); decode {[round(r[1], 2) for r in vlk_runs]} tok/s")
        print(f"  transformers TTFT runs {[round(r[0], 2) for r in hf_runs]} s; decode "
              f"{[round(r[1], 2) for r in hf_runs]} tok/s")
        for side, ttft, dec in (("vlk", v_ttft, v_dec), ("transformers", h_ttft, h_dec)):
            rate = (tower + prefill) / ttft
            print(f"  {side}: (tower + prefill) FLOP / TTFT = {rate / 1e9:.1f} GFLOP/s = {rate / gemm:.2f}x torch GEMM; "
                  f"decode reads {dec * dbytes / 2**30:.2f} GiB/s = {dec * dbytes / bw:.2f}x memcpy")
        rows.append((kind, grid, n_tok, v_ttft, h_ttft, v_dec, h_dec, same))
    print("\n| model | grid | prompt tokens | vlk TTFT | transformers TTFT | vlk decode | transformers decode "
          "| same ids |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for kind, grid, n, vt, ht, vd, hd, same in rows:
        print(f"| {kind} | {grid} | {n} | {vt:.2f} s | {ht:.2f} s | {vd:.2f} tok/s | {hd:.2f} tok/s | {same} |")
    print("end:", uptime())


if __name__ == "__main__":
    main()
