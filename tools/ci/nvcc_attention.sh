#!/usr/bin/env bash
# Compiles cuda/attention.cu for sm_80 and sm_90a with nvcc from the CUDA 13.0 pip
# wheels (no GPU needed) and fails on any register spill.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${VLK_CUDA_VENV:-.venv-cuda}  # an existing venv with the pins may be named
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" || { apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv "$venv"; }
fi
"$venv/bin/pip" install -q nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
nvcc=$(ls "$venv"/lib/python3*/site-packages/nvidia/cu13/bin/nvcc)
out=$(mktemp -d)
echo "compiling cuda/attention.cu (sm_80, sm_90a) with $nvcc"
"$nvcc" -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a -fatbin -Xptxas -v \
  -o "$out/attention.fatbin" cuda/attention.cu 2>"$out/log"
entries=$(grep -c "Compiling entry function" "$out/log")
spills=$(grep -E "[1-9][0-9]* bytes spill (stores|loads)" "$out/log" || true)
echo "$entries entry functions compiled"
if [ -n "$spills" ]; then
  echo "register spills in cuda/attention.cu:"; echo "$spills"; exit 1
fi
[ "$entries" -ge 24 ] || { echo "expected 24 entry functions (12 per arch)"; cat "$out/log"; exit 1; }
echo "no spills"
