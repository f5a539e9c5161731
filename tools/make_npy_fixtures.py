#!/usr/bin/env python3
"""Writes the small .npy fixtures of tests/cli.rs with NumPy: one input per
supported dtype in C and in Fortran order, the expected transpose
(2, 0, 1), and one array of an unsupported dtype (complex64).

Usage: python3 tools/make_npy_fixtures.py [tests/fixtures/npy]"""
import os
import sys

import numpy as np

DTYPES = ["u1", "i1", "u2", "i2", "f2", "u4", "i4", "f4", "u8", "i8", "f8"]
PERM = (2, 0, 1)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/npy"
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20261123)
    for d in DTYPES:
        dt = np.dtype("<" + d)
        if dt.kind == "f":
            a = rng.standard_normal((3, 4, 5)).astype(dt)
        else:
            info = np.iinfo(dt)
            a = rng.integers(info.min, info.max, size=(3, 4, 5), dtype=dt, endpoint=True)
        np.save(os.path.join(out, f"in_{d}.npy"), np.ascontiguousarray(a))
        np.save(os.path.join(out, f"in_{d}_fortran.npy"), np.asfortranarray(a))
        np.save(os.path.join(out, f"expect_{d}.npy"), np.ascontiguousarray(np.transpose(a, PERM)))
    np.save(os.path.join(out, "unsupported_c8.npy"), np.zeros((2, 2), dtype=np.complex64))


if __name__ == "__main__":
    main()
