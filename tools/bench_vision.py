#!/usr/bin/env python3
"""Times image preprocessing and the tiny vision towers: transformers 4.57.1 beside `vlk`,
same machine, same sitting.

Preprocessing: a 1024x1024 photo-like image (the committed Chelsea crop upscaled with
Pillow's bicubic; written to a temporary folder), Qwen2.5-VL processor settings, the fast
(torchvision) and slow (Pillow) processors against `vlk preprocess --flavor fast|slow`.
Vision towers: `model.visual` of the tiny fixture models on their `two_images` case
against `vlk vision`.

Usage (release binary built first):
  PYTHONPATH=<dir with torchvision> /work/.venv-hf/bin/python tools/bench_vision.py [--repeat 20]
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
from transformers import AutoImageProcessor

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
VLK = os.path.join(ROOT, "target", "release", "vlk")
FIX = os.path.join(ROOT, "tests", "fixtures")


def timed(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return times[0], statistics.median(times)


def vlk_times(args):
    out = subprocess.run([VLK, *args], check=True, capture_output=True, text=True)
    text = out.stdout + out.stderr
    m = re.search(r"min ([0-9.]+) ms, median ([0-9.]+) ms", text)
    return float(m.group(1)), float(m.group(2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print("torch threads:", torch.get_num_threads())
    src = np.ones(1 << 28, dtype=np.uint8)
    dst = np.empty_like(src)
    copy_ms = timed(lambda: np.copyto(dst, src), 5)[0]
    memcpy_gbs = src.nbytes / copy_ms / 1e6
    print(f"memcpy (numpy copyto, 256 MiB, best of 5): {memcpy_gbs:.2f} GB/s")
    tmp = tempfile.mkdtemp()
    img = Image.open(os.path.join(FIX, "images", "chelsea_crop_131x97.png")).convert("RGB")
    big = img.resize((1024, 1024), Image.BICUBIC)
    img_path = os.path.join(tmp, "photo_1024.png")
    big.save(img_path)
    cfg_dir = os.path.join(FIX, "preprocess", "default")
    print("\n| processor | transformers min / median ms | vlk min / median ms | vlk output GB/s ÷ memcpy |")
    print("| --- | --- | --- | --- |")
    for flavor, use_fast in (("fast", True), ("slow", False)):
        proc = AutoImageProcessor.from_pretrained(cfg_dir, use_fast=use_fast)
        res = proc(images=[big], return_tensors="pt")
        t_hf = timed(lambda: proc(images=[big], return_tensors="pt"), a.repeat)
        out = os.path.join(tmp, f"pv_{flavor}.npy")
        t_vlk = vlk_times(
            ["preprocess", "--model", cfg_dir, "--image", img_path, "--output", out, "--flavor", flavor,
             "--repeat", str(a.repeat)]
        )
        ours = np.load(out)
        diff = np.abs(ours - res["pixel_values"].numpy()).max()
        ratio = ours.nbytes / t_vlk[0] / 1e6 / memcpy_gbs
        print(f"| {type(proc).__name__} grid {res['image_grid_thw'].tolist()[0]} (max abs diff {diff:.2e}) "
              f"| {t_hf[0]:.1f} / {t_hf[1]:.1f} | {t_vlk[0]:.1f} / {t_vlk[1]:.1f} | {ratio:.3f} |")

    from transformers import AutoModelForImageTextToText

    print("\n| tiny tower (two_images) | transformers min / median ms | vlk min / median ms |")
    print("| --- | --- | --- |")
    for model in ("qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"):
        mdir = os.path.join(FIX, "models", model)
        case = os.path.join(mdir, "cases", "two_images")
        m = AutoModelForImageTextToText.from_pretrained(mdir, torch_dtype=torch.float32).eval()
        pv = torch.from_numpy(np.load(os.path.join(case, "pixel_values.npy")))
        grid = torch.from_numpy(np.load(os.path.join(case, "grid_thw.npy")))
        visual = m.model.visual
        with torch.no_grad():
            t_hf = timed(lambda: visual(pv, grid_thw=grid), a.repeat)
        grids = []
        for g in grid.tolist():
            grids += ["--grid-thw", ",".join(str(v) for v in g)]
        t_vlk = vlk_times(
            ["vision", "--model", mdir, "--pixel-values", os.path.join(case, "pixel_values.npy"), *grids,
             "--output", os.path.join(tmp, "emb.npy"), "--repeat", str(a.repeat)]
        )
        print(f"| {model} ({pv.shape[0]} patches) | {t_hf[0]:.2f} / {t_hf[1]:.2f} | {t_vlk[0]:.2f} / {t_vlk[1]:.2f} |")
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
