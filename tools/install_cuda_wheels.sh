#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler wheels (nvcc, ptxas, NVRTC) into a venv.
# Usage: tools/install_cuda_wheels.sh [VENV_DIR]   (default .venv-cuda at the repo root,
# where build.rs looks for nvcc). Idempotent. No GPU needed.
# The pins match the GPU machines' driver (CUDA 13.0): newer nvvm emits PTX that
# ptxas 13.0 and that driver reject.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv-cuda}
pins=(nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
      nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88)
if ls "$venv"/lib/python3*/site-packages/nvidia/cu13/bin/nvcc >/dev/null 2>&1 &&
   ls "$venv"/lib/python3*/site-packages/nvidia/cu13/lib/libnvrtc.so.13 >/dev/null 2>&1; then
  echo "CUDA wheels already in $venv"
  exit 0
fi
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
  apt-get update -qq && apt-get install -y -qq python3-venv
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q "${pins[@]}"
echo "installed ${pins[*]} into $venv"
