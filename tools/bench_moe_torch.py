#!/usr/bin/env python3
"""PyTorch reference timings for `vlk bench moe --device cuda`, run in the same GPU
call: routing (softmax in f32, topk, renormalise), the dispatch plan as torch
would build it (stable argsort of the expert ids, bincount, cumsum), and the
weighted combine with index_add_. CUDA-event timings, like the Rust bench.

    python3 tools/bench_moe_torch.py [--tokens 1,32,4096,16384] [--hidden 2048]
"""
import argparse

import torch

MODELS = [("qwen3-30b-a3b", 128, 8), ("qwen3-next", 512, 10)]


def gpu_time(fn, iters):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters * 1e3  # us


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="1,32,4096,16384")
    ap.add_argument("--hidden", type=int, default=2048)
    args = ap.parse_args()
    tokens = [int(t) for t in args.tokens.split(",")]
    dev = torch.device("cuda")
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}")
    print(f"  {'model':<14} {'T':>6} {'E':>4} {'k':>3} {'route us':>10} {'+plan us':>10} "
          f"{'loop us':>10} {'index_add us':>13}")
    for name, e, k in MODELS:
        for t in tokens:
            g = torch.Generator(device=dev).manual_seed(t)
            logits = torch.rand(t, e, device=dev, generator=g) * 6 - 3

            def route():
                p = torch.softmax(logits, dim=-1, dtype=torch.float)
                w, ids = torch.topk(p, k, dim=-1)
                return w / w.sum(dim=-1, keepdim=True), ids

            def route_and_plan():
                w, ids = route()
                flat = ids.flatten()
                order = torch.argsort(flat, stable=True)
                counts = torch.bincount(flat, minlength=e)
                offsets = torch.cumsum(counts, 0)
                return w, order, offsets

            r1 = gpu_time(route, 1)
            r2 = gpu_time(route_and_plan, 1)
            loop = gpu_time(route_and_plan, 200)
            w, ids = route()
            y = torch.randn(t * k, args.hidden, device=dev, dtype=torch.bfloat16)
            tok = torch.arange(t, device=dev).repeat_interleave(k)
            wf = w.flatten().to(torch.bfloat16)[:, None]
            out = torch.zeros(t, args.hidden, device=dev, dtype=torch.bfloat16)

            def combine():
                out.zero_()
                out.index_add_(0, tok, y * wf)

            ia = gpu_time(combine, 20)
            print(f"  {name:<14} {t:>6} {e:>4} {k:>3} {r1:>10.2f} {r2:>10.2f} {loop:>10.2f} {ia:>13.2f}")


if __name__ == "__main__":
    main()
