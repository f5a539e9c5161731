#!/usr/bin/env python3
"""Golden outputs of HF transformers 4.57.1 MoE blocks for tests/moe_goldens.rs.

Run on a developer machine (never in CI):
    /work/.venv-hf/bin/python tools/gen_moe_goldens.py   # or any venv with
    torch, transformers==4.57.1, safetensors, numpy

Each case writes tests/fixtures/moe/<case>.safetensors holding the block's
weights under their checkpoint names, plus `x` [T, H], `logits` [T, E],
`topk_ids` [T, k] (int32), `topk_weights` [T, k] and `out` [T, H], and a
small JSON header entry with the config (safetensors metadata).

Semantics read from the installed transformers source:
- router logits = x @ gate.weight.T; softmax in float32 (dtype=torch.float);
- torch.topk on the probabilities; then divide by their sum when
  norm_topk_prob (always for Qwen3-VL-MoE, whose block hard-codes it);
- expert = down(silu(gate(x)) * up(x)); Qwen3-VL-MoE stores the experts fused
  as gate_up_proj [E, H, 2I] (gate = first I columns) and down_proj [E, I, H];
- Qwen3-Next adds sigmoid(x @ shared_expert_gate.weight.T) * shared_expert(x).
Ties: torch.topk does not specify which of two equal probabilities comes
first; vlkernels ranks by logit and sends ties to the lower expert index.
The random inputs here have no ties, so both orders agree.
"""
import json
import os

import torch
from safetensors.torch import save_file
import transformers
from transformers.models.qwen3_moe.configuration_qwen3_moe import Qwen3MoeConfig
from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock
from transformers.models.qwen3_next.configuration_qwen3_next import Qwen3NextConfig
from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextSparseMoeBlock
from transformers.models.qwen3_vl_moe.configuration_qwen3_vl_moe import Qwen3VLMoeTextConfig
from transformers.models.qwen3_vl_moe.modeling_qwen3_vl_moe import Qwen3VLMoeTextSparseMoeBlock

assert transformers.__version__ == "4.57.1", transformers.__version__
OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "moe")

CASES = [
    # name, block class, config class, prefix, dims, tokens
    ("qwen3_moe_e12_k4", Qwen3MoeSparseMoeBlock, Qwen3MoeConfig, "model.layers.0.mlp.",
     dict(hidden_size=48, num_experts=12, num_experts_per_tok=4, moe_intermediate_size=24, norm_topk_prob=True), 11),
    ("qwen3_moe_e8_k2_nonorm", Qwen3MoeSparseMoeBlock, Qwen3MoeConfig, "model.layers.1.mlp.",
     dict(hidden_size=32, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=16, norm_topk_prob=False), 7),
    ("qwen3_vl_moe_e16_k4", Qwen3VLMoeTextSparseMoeBlock, Qwen3VLMoeTextConfig, "model.language_model.layers.0.mlp.",
     dict(hidden_size=32, num_experts=16, num_experts_per_tok=4, moe_intermediate_size=16), 13),
    ("qwen3_next_e10_k2_shared", Qwen3NextSparseMoeBlock, Qwen3NextConfig, "model.layers.0.mlp.",
     dict(hidden_size=32, num_experts=10, num_experts_per_tok=2, moe_intermediate_size=16,
          shared_expert_intermediate_size=24, norm_topk_prob=True), 9),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    for i, (name, block_cls, cfg_cls, prefix, dims, tokens) in enumerate(CASES):
        torch.manual_seed(1234 + i)
        cfg = cfg_cls(hidden_act="silu", **dims)
        block = block_cls(cfg).eval()
        with torch.no_grad():
            # Fused parameters are created with torch.empty: give every weight values.
            for p in block.parameters():
                p.normal_(0.0, 0.2)
            x = torch.randn(1, tokens, dims["hidden_size"], dtype=torch.float32)
            out, logits = block(x)
            probs = torch.softmax(logits, dim=-1, dtype=torch.float)
            w, ids = torch.topk(probs, dims["num_experts_per_tok"], dim=-1)
            if dims.get("norm_topk_prob", True):
                w = w / w.sum(dim=-1, keepdim=True)
        tensors = {prefix + k: v.detach().contiguous() for k, v in block.state_dict().items()}
        tensors.update(
            x=x.reshape(tokens, -1).contiguous(),
            logits=logits.contiguous(),
            topk_ids=ids.to(torch.int32).contiguous(),
            topk_weights=w.contiguous(),
            out=out.reshape(tokens, -1).contiguous(),
        )
        meta = dict(dims, prefix=prefix, tokens=tokens, block=block_cls.__name__,
                    norm_topk_prob=dims.get("norm_topk_prob", True))
        path = os.path.join(OUT, name + ".safetensors")
        save_file(tensors, path, metadata={"config": json.dumps(meta)})
        print(f"{path}: {os.path.getsize(path)} bytes, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
