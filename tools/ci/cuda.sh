#!/usr/bin/env bash
# CUDA compile check (no GPU needed): installs the pinned nvcc/NVRTC wheels, compiles
# every cuda/*.cu to a fatbin (SASS sm_80 + sm_90a, PTX compute_80) with ptxas -v and
# fails on any register spill, then builds the crate with nvcc (fatbin path) and runs
# the CUDA foundation tests with libnvrtc loadable (NVRTC path compile-tested).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tools/install_cuda_wheels.sh .venv-cuda
cu13=$(ls -d "$PWD"/.venv-cuda/lib/python3*/site-packages/nvidia/cu13 | head -n1)
nvcc="$cu13/bin/nvcc"
"$nvcc" --version | tail -n2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
for cu in cuda/*.cu; do
  log="$tmp/$(basename "$cu").log"
  "$nvcc" -fatbin -O3 -std=c++17 -Xptxas -v \
    -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a \
    -gencode arch=compute_80,code=compute_80 -I cuda -o "$tmp/out.fatbin" "$cu" 2>"$log" ||
    { cat "$log"; echo "FAIL: nvcc could not compile $cu"; exit 1; }
  kernels=$(grep -c "Compiling entry function" "$log" || true)
  maxreg=$(grep -o "Used [0-9]* registers" "$log" | awk '{print $2}' | sort -n | tail -n1)
  spills=$(grep "spill" "$log" | grep -v " 0 bytes spill stores, 0 bytes spill loads" || true)
  if [ -n "$spills" ]; then
    echo "FAIL: $cu spills registers:"; echo "$spills"; fail=1
  else
    echo "ok: $cu: $kernels kernel compilations, 0 spills, at most ${maxreg:-?} registers"
  fi
done
[ "$fail" = 0 ] || exit 1
echo "building with NVCC=$nvcc and testing the fatbin and NVRTC paths"
NVCC="$nvcc" LD_LIBRARY_PATH="$cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" VLK_REQUIRE_NVRTC=1 \
  cargo test --release --test cuda_foundation -- --nocapture
