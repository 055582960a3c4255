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
echo "== unit and conformance tests"
cargo test --workspace -- --test-threads="${TEST_THREADS:-4}"
