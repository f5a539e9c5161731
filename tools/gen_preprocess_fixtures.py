#!/usr/bin/env python3
"""Goldens for the Qwen2-VL image processor (transformers 4.57.1), both implementations.

Writes tests/fixtures/preprocess/<case>/ with, for each of `fast` (Qwen2VLImageProcessorFast,
torchvision; 4.57.1's default when torchvision is installed) and `slow`
(Qwen2VLImageProcessor, Pillow):
  preprocessor_config.json   the settings of the case (read by the Rust processor)
  <flavor>_pixel_values.npy  f32 [grid_t*grid_h*grid_w, 3*T*P*P]
  <flavor>_grid_thw.npy      i64 [1, 3]
  <flavor>_resized.npy       u8 [H, W, 3]: the image after the bicubic resize alone (torchvision or
                             Pillow), both to the fast processor's size (the slow class ignores
                             `size` in 4.57.1, so its own grid differs in the `upscale` case)

Usage: PYTHONPATH=<dir with torchvision> /work/.venv-hf/bin/python tools/gen_preprocess_fixtures.py
(torchvision is needed for the fast flavor; without it the script stops).
"""

import json
import os

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

ROOT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
IMAGE = os.path.join(ROOT, "images", "chelsea_crop_131x97.png")

QWEN25 = {
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "image_processor_type": "Qwen2VLImageProcessor",
}
QWEN3 = {
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "size": {"shortest_edge": 65536, "longest_edge": 16777216},
    "image_processor_type": "Qwen2VLImageProcessorFast",
}

CASES = {
    # Qwen2.5-VL defaults: 97x131 rounds to 84x140 (mixed up/down resize).
    "default": QWEN25,
    # max_pixels far below the image: strong antialiased downscale to 56x56.
    "downscale": {**QWEN25, "max_pixels": 28 * 28 * 6},
    # Qwen3-VL geometry (patch 16) with min_pixels above the image: upscale to 160x192.
    "upscale": {**QWEN3, "size": {"shortest_edge": 160 * 160, "longest_edge": 16777216}},
}


def save(path, arr):
    np.save(path, arr)


def main():
    import torchvision  # noqa: F401  (the fast flavor needs it; fail loudly)

    image = Image.open(IMAGE).convert("RGB")
    for name, cfg in CASES.items():
        out = os.path.join(ROOT, "preprocess", name)
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "preprocessor_config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        size = cfg.get("size", {"shortest_edge": cfg.get("min_pixels"), "longest_edge": cfg.get("max_pixels")})
        h, w = smart_resize(
            image.height,
            image.width,
            factor=cfg["patch_size"] * cfg["merge_size"],
            min_pixels=size["shortest_edge"],
            max_pixels=size["longest_edge"],
        )
        for flavor, use_fast in (("fast", True), ("slow", False)):
            proc = AutoImageProcessor.from_pretrained(out, use_fast=use_fast)
            assert type(proc).__name__.endswith("Fast") == use_fast, type(proc).__name__
            res = proc(images=[image], return_tensors="pt")
            pv = res["pixel_values"].numpy().astype(np.float32)
            grid = res["image_grid_thw"].numpy().astype(np.int64)
            save(os.path.join(out, f"{flavor}_pixel_values.npy"), pv)
            save(os.path.join(out, f"{flavor}_grid_thw.npy"), grid)
            if use_fast:
                from torchvision.transforms.v2 import functional as F

                t = torch.from_numpy(np.asarray(image)).permute(2, 0, 1).contiguous()
                r = F.resize(t, [h, w], interpolation=F.InterpolationMode.BICUBIC, antialias=True)
                resized = r.permute(1, 2, 0).contiguous().numpy()
            else:
                resized = np.asarray(image.resize((w, h), resample=Image.BICUBIC))
            save(os.path.join(out, f"{flavor}_resized.npy"), resized.astype(np.uint8))
            print(f"{name}/{flavor}: {type(proc).__name__} grid {grid.tolist()} pixel_values {pv.shape}")
        # The default AutoImageProcessor choice in this environment, for the record.
        auto = AutoImageProcessor.from_pretrained(out)
        print(f"{name}: AutoImageProcessor default is {type(auto).__name__}")


if __name__ == "__main__":
    main()
