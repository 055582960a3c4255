#!/usr/bin/env bash
# Portability: type-check the whole workspace (libraries, binary, tests) for the other
# architectures we claim. aarch64 uses rustup's prebuilt std; LoongArch64 and MIPS64 (no
# prebuilt std here) build std from source with nightly's -Zbuild-std. Nothing is linked, so
# no cross C toolchain is needed; what this catches is arch-specific code that does not
# compile (a missing cfg arm, a constant libc lacks on that target, a wrong integer width).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CROSS_TARGET_DIR:-target/cross}"
export CARGO_TERM_COLOR=never
ok=()
check() { # toolchain target [extra cargo args]
  local tc=$1 target=$2
  shift 2
  echo "== cargo check --target $target $*"
  cargo "+$tc" check --workspace --target "$target" "$@"
  ok+=("$target")
}
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu ||
  rustup target add aarch64-unknown-linux-gnu
# Tests and benches too where std comes prebuilt; libraries and binaries where it is built here.
check stable aarch64-unknown-linux-gnu --all-targets
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
rustup component list --toolchain nightly --installed | grep -q '^rust-src' ||
  rustup component add rust-src --toolchain nightly
for t in loongarch64-unknown-linux-gnu mips64-unknown-linux-gnuabi64; do
  check nightly "$t" --lib --bins -Zbuild-std=std,panic_abort
done
echo "== cross-check passed: ${ok[*]}"
