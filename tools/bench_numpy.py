#!/usr/bin/env python3
"""Times NumPy's np.copyto(dst, src.transpose(perm)) on the cases given as
JSON on stdin ([{name, shape, perm, dtype}]) and prints {name: GiB/s} as JSON,
GiB/s counting bytes read plus written (median of repetitions).
Used by `vlk bench permute --compare-numpy`."""
import json
import sys
import time

import numpy as np

DTYPES = {"u8": np.uint8, "i8": np.int8, "u16": np.uint16, "i16": np.int16, "f16": np.float16,
          "bf16": np.uint16, "u32": np.uint32, "i32": np.int32, "f32": np.float32,
          "u64": np.uint64, "i64": np.int64, "f64": np.float64}


def main():
    cases = json.load(sys.stdin)
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    out = {}
    for c in cases:
        dt = DTYPES[c["dtype"]]
        src = np.arange(int(np.prod(c["shape"])), dtype=np.uint64).astype(dt).reshape(c["shape"])
        view = src.transpose(c["perm"])
        dst = np.empty(view.shape, dtype=dt)
        np.copyto(dst, view)
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            np.copyto(dst, view)
            times.append(time.perf_counter() - t)
        times.sort()
        out[c["name"]] = 2 * src.nbytes / times[len(times) // 2] / 2**30
        print(f"numpy {c['name']}: {out[c['name']]:.2f} GiB/s", file=sys.stderr)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
