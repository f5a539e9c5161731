#!/usr/bin/env python3
"""A `photo` case for the tiny VL fixture models: the committed photograph through
transformers 4.57.1's processor, tower and language model.

For each of tests/fixtures/models/{qwen2_5_vl,qwen3_vl,qwen3_vl_moe} (made by
tools/gen_vl_model_fixtures.py), loads the saved model and its preprocessor_config.json
with Qwen2VLImageProcessorFast (the class AutoImageProcessor picks when torchvision is
installed, and the flavor `vlk run --image` reproduces), preprocesses
tests/fixtures/images/chelsea_crop_131x97.png and writes cases/photo/ with:
  input_ids.npy      i64 [N]   PROMPT with its single image pad expanded to the image's tokens
  pixel_values.npy   f32 [t*h*w, 96], grid_thw.npy i64 [1, 3]
  position_ids.npy   i64 [3, N], rope_deltas.npy i64 [1]
  logits.npy         f32 [N, 512]
  generated_ids.npy  i64 [6]   greedy continuation

Usage (torchvision is needed for the fast processor; the script stops without it):
  PYTHONPATH=<dir with torchvision> /work/.venv-hf/bin/python tools/gen_vl_photo_case.py
"""
import os

import numpy as np
import torch
import transformers
from PIL import Image
from transformers import AutoModelForImageTextToText
from transformers.models.qwen2_vl.image_processing_qwen2_vl_fast import Qwen2VLImageProcessorFast

assert transformers.__version__ == "4.57.1", transformers.__version__
import torchvision  # noqa: F401,E402  (the fast processor needs it; fail early and loudly)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
IMAGE = os.path.join(ROOT, "images", "chelsea_crop_131x97.png")
IMAGE_PAD, VSTART, VEND = 500, 498, 499
# Text, one image span written with a single pad (as `vlk run --input-ids` takes it), text.
PROMPT = [11, 22, VSTART, IMAGE_PAD, VEND, 33, 44, 55]
MAX_NEW = 6


def save(d, name, arr):
    np.save(os.path.join(d, name + ".npy"), np.ascontiguousarray(arr))


def main():
    img = Image.open(IMAGE).convert("RGB")
    for name in ("qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"):
        mdir = os.path.join(ROOT, "models", name)
        model = AutoModelForImageTextToText.from_pretrained(mdir, dtype=torch.float32, attn_implementation="eager")
        model.eval()
        proc = Qwen2VLImageProcessorFast.from_pretrained(mdir)
        res = proc(images=[img], return_tensors="pt")
        pv, grid = res["pixel_values"].float(), res["image_grid_thw"]
        t, h, w = grid[0].tolist()
        n = t * h * w // proc.merge_size**2
        ids = []
        for x in PROMPT:
            ids += [IMAGE_PAD] * n if x == IMAGE_PAD else [x]
        input_ids = torch.tensor([ids])
        with torch.no_grad():
            pos, deltas = model.model.get_rope_index(input_ids, grid, None, None)
            logits = model(input_ids=input_ids, pixel_values=pv, image_grid_thw=grid).logits[0]
            gen = model.generate(
                input_ids=input_ids, pixel_values=pv, image_grid_thw=grid, max_new_tokens=MAX_NEW, do_sample=False
            )
        d = os.path.join(mdir, "cases", "photo")
        os.makedirs(d, exist_ok=True)
        save(d, "input_ids", np.array(ids, dtype=np.int64))
        save(d, "pixel_values", pv.numpy())
        save(d, "grid_thw", grid.numpy().astype(np.int64))
        save(d, "position_ids", pos[:, 0, :].numpy().astype(np.int64))
        save(d, "rope_deltas", deltas.reshape(-1).numpy().astype(np.int64))
        save(d, "logits", logits.float().numpy())
        save(d, "generated_ids", gen[0, len(ids) :].numpy().astype(np.int64))
        print(f"{name}/photo: grid {grid[0].tolist()}, {len(ids)} tokens, generated {gen[0, len(ids):].tolist()}")


if __name__ == "__main__":
    main()
