#!/usr/bin/env bash
# The test command: lints, unit tests and the conformance suite with real containers, as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
export CARGO_TERM_COLOR=never

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== build"
cargo build -p rcrun
echo "== unit and conformance tests (this host: cgroup v1/v2 hybrid)"
cargo test --workspace -- --test-threads="${TEST_THREADS:-4}"
echo "== portability: type-check for aarch64, loongarch64 and mips64 (docs/portability.md)"
bash scripts/cross-check.sh
echo "== fuzz: each target for ${FUZZ_SECONDS:-10}s (fuzz/README.md)"
FUZZ_SECONDS="${FUZZ_SECONDS:-10}" bash scripts/fuzz.sh
# The same suites on a real 6.1 kernel with pure cgroup v2 (qemu; see docs/testing.md).
if [ "${SKIP_GUEST:-0}" != 1 ]; then
  echo "== unit and conformance tests in a pure cgroup v2 guest"
  # storage-overlay2 too: Linux 6.1 has no overlay "lowerdir+", so its mount(2) path runs there
  python3 guest/rcguest.py run-suite --profile cgroup2 --timeout "${GUEST_TIMEOUT:-1800}" \
    --package rcrun-runtime --package rcrun-conformance --package rcrun-storage-overlay2
fi
