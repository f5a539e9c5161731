#!/usr/bin/env python3
"""transformers' TTFT and greedy decode tokens/s on the CPU, for comparison with `vlk run`.

    /work/.venv-hf/bin/python tools/bench_text_transformers.py --model DIR \
        --input-ids 1,2,3 --max-new-tokens 16 --threads 2 [--dtype float32]

Prefill (one forward over the prompt with a cache) ends at the first token (TTFT);
each later token is one forward of one token over the cache. One untimed 1-token
forward warms torch up first. Prints the same
figures and the generated ids as `vlk run`.
"""
import argparse
import time

import torch
import transformers


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--input-ids", required=True)
    ap.add_argument("--max-new-tokens", type=int, required=True)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    model = transformers.AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    model.eval()
    ids = torch.tensor([[int(x) for x in args.input_ids.split(",")]])
    out_ids = []
    with torch.inference_mode():
        model(input_ids=ids[:, :1], use_cache=True)  # warm-up: torch's first call pays one-time setup
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True)
        nxt = out.logits[0, -1].argmax().item()
        ttft = time.perf_counter() - t0
        out_ids.append(nxt)
        past = out.past_key_values
        t1 = time.perf_counter()
        for _ in range(args.max_new_tokens - 1):
            out = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[0, -1].argmax().item()
            out_ids.append(nxt)
        dec = time.perf_counter() - t1
    steps = len(out_ids) - 1
    print("ids: " + ",".join(map(str, out_ids)))
    print(
        f"transformers {transformers.__version__} torch {torch.__version__} threads {torch.get_num_threads()} "
        f"{args.dtype}: TTFT {ttft * 1e3:.2f} ms ({ids.shape[1]} prompt tokens); "
        f"decode {steps / dec if steps else float('nan'):.2f} tokens/s over {steps} tokens"
    )


if __name__ == "__main__":
    main()
