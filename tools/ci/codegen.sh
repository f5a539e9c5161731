#!/usr/bin/env bash
# Generated code up to date: re-synthesise every network and compare with simd/.
set -euo pipefail
cd "$(dirname "$0")/../.."
echo "codegen: checking that simd/ matches what vlkernels-codegen generates"
cargo run --release -q -p vlkernels-codegen -- check
