#!/usr/bin/env bash
# NEON executed for real: cross-build the single-threaded kernel check
# (tests/neon_check.rs) for aarch64 with Debian's Rust and run it under
# qemu-aarch64. qemu-user hangs on guest threads here, so the check never
# spawns one (see docs/ARCHITECTURE.md, "Code generator").
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)

if ! { [ -x /usr/bin/rustc ] && [ -x /usr/bin/qemu-aarch64 ] && command -v aarch64-linux-gnu-gcc >/dev/null \
       && [ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ]; }; then
  echo "neon: installing Debian's Rust with the arm64 std, the aarch64 linker and qemu-user"
  dpkg --add-architecture arm64
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    rustc-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null
fi

echo "neon: building tests/neon_check.rs for aarch64-unknown-linux-gnu"
export RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=target/aarch64 \
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
exe=$(cargo test --release --target aarch64-unknown-linux-gnu --test neon_check --no-run --message-format=json \
  | grep -o '"executable":"[^"]*neon_check[^"]*"' | tail -1 | sed 's/"executable":"\(.*\)"/\1/')
[ -n "$exe" ] || { echo "neon: no neon_check binary was built" >&2; exit 1; }
file_info=$(head -c 20 "$exe" | od -An -tx1 | tr -d ' \n')
echo "neon: running $exe under qemu-aarch64 (ELF header $file_info)"
timeout 600 qemu-aarch64 -L /usr/aarch64-linux-gnu "$exe"
echo "neon: done in $(( $(date +%s) - start ))s"
