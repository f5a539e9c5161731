#!/usr/bin/env python3
"""Writes tests/fixtures/window/*.json: Qwen2.5-VL window index, window and frame
cu_seqlens, computed by transformers 4.57.1's own get_window_index (developer
machines only; CI reads the committed JSON).

Usage: /work/.venv-hf/bin/python tools/gen_window_goldens.py [OUT_DIR]
"""
import json
import os
import sys
import types

import torch
import torch.nn.functional as F
import transformers
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VisionTransformerPretrainedModel as Vit,
)

WINDOW, PATCH, MERGE = 112, 14, 2
CASES = {
    "g1_10_12": [[1, 10, 12]],
    "g2_8_8": [[2, 8, 8]],
    "g1_3_5": [[1, 3, 5]],
    "g1_16_16": [[1, 16, 16]],
    "g3_6_10": [[3, 6, 10]],
    "batch_all": [[1, 10, 12], [2, 8, 8], [1, 16, 16], [3, 6, 10]],
}


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/window"
    os.makedirs(out_dir, exist_ok=True)
    # get_window_index reads only these attributes: call it unbound on a stand-in.
    fake = types.SimpleNamespace(
        window_size=WINDOW,
        patch_size=PATCH,
        spatial_merge_size=MERGE,
        spatial_merge_unit=MERGE * MERGE,
    )
    for name, grid in CASES.items():
        grid_thw = torch.tensor(grid, dtype=torch.int64)
        window_index, cu_raw = Vit.get_window_index(fake, grid_thw)
        # As forward() does next:
        cu = torch.unique_consecutive(torch.tensor(cu_raw, dtype=torch.int32))
        frame_cu = torch.repeat_interleave(grid_thw[:, 1] * grid_thw[:, 2], grid_thw[:, 0]).cumsum(
            dim=0, dtype=torch.int32
        )
        frame_cu = F.pad(frame_cu, (1, 0), value=0)
        doc = {
            "transformers": transformers.__version__,
            "window_size": WINDOW,
            "patch_size": PATCH,
            "spatial_merge_size": MERGE,
            "grid_thw": grid,
            "window_index": window_index.tolist(),
            "cu_window_seqlens_raw": [int(x) for x in cu_raw],
            "cu_window_seqlens": cu.tolist(),
            "frame_cu_seqlens": frame_cu.tolist(),
        }
        path = os.path.join(out_dir, f"{name}.json")
        with open(path, "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")
        print(f"{path}: {len(doc['window_index'])} units, {len(doc['cu_window_seqlens']) - 1} windows")


if __name__ == "__main__":
    main()
