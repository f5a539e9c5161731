#!/usr/bin/env python3
"""Golden references for the RoPE family from HF transformers 4.57.1 (developer machines
only; CI reads the small files this writes under tests/fixtures/rope/).

Usage: /path/to/venv-with-torch-and-transformers/bin/python tools/gen_rope_goldens.py

Writes, per case, .npy arrays (q/k in [N, H, D] order, positions, inv_freq, cos/sin) and
position-id cases as JSON:
  qwen2_5_vl/  text decoder: sectioned MRoPE, D 128, theta 1e6, sections [16, 24, 24]
  qwen3_vl/    text decoder: interleaved MRoPE-I, D 128, theta 5e6, sections [24, 20, 20]
  vision/      Qwen2.5-VL ViT 2-D RoPE, head dim 80, theta 1e4, grid [1, 4, 6], merge 2
  positions.json  get_rope_index of both models on text + image (+ video) sequences
"""
import json
import os
import types

import numpy as np
import torch
import transformers
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as m25
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLTextConfig
from transformers.models.qwen3_vl import modeling_qwen3_vl as m3
from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLTextConfig

assert transformers.__version__ == "4.57.1", transformers.__version__
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "rope")
N, HQ, HKV, D = 6, 2, 1, 128
IMAGE, VIDEO, VSTART, VEND = 151655, 151656, 151652, 151653
SECTIONS25 = [16, 24, 24]


def save(case, name, array):
    os.makedirs(os.path.join(OUT, case), exist_ok=True)
    np.save(os.path.join(OUT, case, name + ".npy"), np.ascontiguousarray(array))


def heads_last(x):
    """[1, H, N, D] (HF attention layout) -> [N, H, D]."""
    return x[0].transpose(0, 1).contiguous()


def bits_bf16(x):
    return x.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def text_case(case, rotary, apply, positions):
    g = torch.Generator().manual_seed(7)
    q = torch.rand(1, HQ, N, D, generator=g) * 2 - 1
    k = torch.rand(1, HKV, N, D, generator=g) * 2 - 1
    pos = torch.tensor(positions, dtype=torch.long).view(3, 1, N)
    save(case, "positions", pos.view(3, N).numpy().astype(np.int64))
    save(case, "inv_freq", rotary.inv_freq.float().numpy())
    save(case, "q_in", heads_last(q).numpy())
    save(case, "k_in", heads_last(k).numpy())
    for dtype, tag in [(torch.float32, "f32"), (torch.bfloat16, "bf16")]:
        qd, kd = q.to(dtype), k.to(dtype)
        cos, sin = rotary(qd, pos)
        qo, ko = apply(qd, kd, cos, sin)
        if tag == "f32":
            # cos and sin per token after the variant's choice of position row: [N, D].
            if cos.dim() == 4:  # Qwen2.5-VL: [3, 1, N, D], rows chosen per section
                pick = lambda x: torch.cat([m[i % 3] for i, m in enumerate(x.split(SECTIONS25 * 2, dim=-1))], -1)
                cos, sin = pick(cos), pick(sin)
            save(case, "cos", cos[0].numpy())
            save(case, "sin", sin[0].numpy())
            save(case, "q_out_f32", heads_last(qo).numpy())
            save(case, "k_out_f32", heads_last(ko).numpy())
        else:
            save(case, "q_out_bf16", bits_bf16(heads_last(qo)))
            save(case, "k_out_bf16", bits_bf16(heads_last(ko)))
            save(case, "q_in_bf16", bits_bf16(heads_last(q)))
            save(case, "k_in_bf16", bits_bf16(heads_last(k)))


def rope_index(model_cls, cfg_attrs, input_ids, image_grid, video_grid, extra):
    vision = types.SimpleNamespace(spatial_merge_size=2, tokens_per_second=2)
    config = types.SimpleNamespace(
        vision_config=vision, image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VSTART, **cfg_attrs
    )
    self = types.SimpleNamespace(config=config)
    ids = torch.tensor([input_ids], dtype=torch.long)
    ig = torch.tensor(image_grid, dtype=torch.long) if image_grid else None
    vg = torch.tensor(video_grid, dtype=torch.long) if video_grid else None
    pos, delta = model_cls.get_rope_index(self, ids, ig, vg, **extra)
    return pos[:, 0].tolist(), int(delta.view(-1)[0])


def seq(*parts):
    out = []
    for p in parts:
        out += p
    return out


def main():
    torch.manual_seed(0)
    # Qwen2.5-VL text decoder.
    cfg = Qwen2_5_VLTextConfig(
        hidden_size=HQ * D,
        num_attention_heads=HQ,
        num_key_value_heads=HKV,
        rope_theta=1e6,
        rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
    )
    rot = m25.Qwen2_5_VLRotaryEmbedding(cfg)
    text_positions = [[3, 4, 4, 4, 4, 900], [3, 4, 4, 5, 5, 900], [3, 4, 5, 4, 5, 900]]
    text_case(
        "qwen2_5_vl",
        rot,
        lambda q, k, c, s: m25.apply_multimodal_rotary_pos_emb(q, k, c, s, [16, 24, 24]),
        text_positions,
    )
    # Qwen3-VL text decoder.
    cfg3 = Qwen3VLTextConfig(
        hidden_size=HQ * D,
        num_attention_heads=HQ,
        num_key_value_heads=HKV,
        head_dim=D,
        rope_theta=5e6,
        rope_scaling={"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True},
    )
    rot3 = m3.Qwen3VLTextRotaryEmbedding(cfg3)
    text_case("qwen3_vl", rot3, lambda q, k, c, s: m3.apply_rotary_pos_emb(q, k, c, s), text_positions)

    # Qwen2.5-VL ViT 2-D RoPE: head dim 80, grid [1, 4, 6], merge 2.
    vd, grid = 80, [[1, 4, 6]]
    vself = types.SimpleNamespace(spatial_merge_size=2, rotary_pos_emb=m25.Qwen2_5_VisionRotaryEmbedding(vd // 2))
    rotary = m25.Qwen2_5_VisionTransformerPretrainedModel.rot_pos_emb(vself, torch.tensor(grid))
    emb = torch.cat((rotary, rotary), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    nv = emb.shape[0]
    g = torch.Generator().manual_seed(11)
    q = torch.rand(nv, 2, vd, generator=g) * 2 - 1
    k = torch.rand(nv, 2, vd, generator=g) * 2 - 1
    qo, ko = m25.apply_rotary_pos_emb_vision(q, k, cos, sin)
    save("vision", "inv_freq", vself.rotary_pos_emb.inv_freq.float().numpy())
    save("vision", "q_in", q.numpy())
    save("vision", "k_in", k.numpy())
    save("vision", "q_out_f32", qo.numpy())
    save("vision", "k_out_f32", ko.numpy())
    # Recover the (row, col) ids from the embedding: angle / inv_freq[1] of each half.
    f1 = float(vself.rotary_pos_emb.inv_freq[0])
    rows = (rotary[:, 0] / f1).round().long()
    cols = (rotary[:, vd // 4] / f1).round().long()
    save("vision", "positions", torch.stack([rows, cols]).numpy().astype(np.int64))

    # Position ids (get_rope_index) on mixed sequences.
    text = lambda n, base=1000: [base + i for i in range(n)]
    img = lambda t, h, w: [VSTART] + [IMAGE] * (t * h * w // 4) + [VEND]
    vid = lambda t, h, w: [VSTART] + [VIDEO] * (t * h * w // 4) + [VEND]
    cases = []
    s1 = seq(text(3), img(1, 4, 6), text(4))
    s2 = seq(text(2), img(1, 2, 4), text(3), vid(3, 4, 4), text(2), img(1, 6, 2), text(1))
    for name, ids, ig, vg, spg in [
        ("text_image", s1, [[1, 4, 6]], [], None),
        ("text_image_video", s2, [[1, 2, 4], [1, 6, 2]], [[3, 4, 4]], [2.0]),
        ("text_image_video_half_second", s2, [[1, 2, 4], [1, 6, 2]], [[3, 4, 4]], [0.5]),
    ]:
        extra = {"second_per_grid_ts": torch.tensor(spg)} if spg is not None else {}
        pos, delta = rope_index(m25.Qwen2_5_VLModel, {}, ids, ig, vg, extra)
        cases.append(dict(model="qwen2_5_vl", name=name, input_ids=ids, image_grid_thw=ig, video_grid_thw=vg,
                          second_per_grid_ts=spg, tokens_per_second=2, positions=pos, delta=delta))
    # Qwen3-VL: frames of a video are separate vision blocks with timestamp text between.
    frame = lambda h, w: [VSTART] + [VIDEO] * (h * w // 4) + [VEND]
    s3 = seq(text(2), img(1, 4, 4), text(2), text(3, 5000), frame(4, 4), text(3, 5000), frame(4, 4), text(2))
    for name, ids, ig, vg in [("text_image", s1, [[1, 4, 6]], []), ("text_image_video", s3, [[1, 4, 4]], [[2, 4, 4]])]:
        pos, delta = rope_index(m3.Qwen3VLModel, {}, ids, ig, vg, {})
        cases.append(dict(model="qwen3_vl", name=name, input_ids=ids, image_grid_thw=ig, video_grid_thw=vg,
                          second_per_grid_ts=None, tokens_per_second=None, positions=pos, delta=delta))
    with open(os.path.join(OUT, "positions.json"), "w") as f:
        json.dump({"generator": "tools/gen_rope_goldens.py", "transformers": transformers.__version__,
                   "image_token_id": IMAGE, "video_token_id": VIDEO, "spatial_merge_size": 2, "cases": cases}, f)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
