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
# rcrun-net: the network hook the net suites (and rcrun's org.rcrun.net.network) call
cargo build -p rcrun -p rcrun-net-cli
echo "== unit and conformance tests (this host: cgroup v1/v2 hybrid)"
# RCRUN_NET_HOST_ONLY: tests that need bonding, 8021q, ipvlan, dummy or spare PCI NICs say
# "skipped" here; the guest run below (net profile) runs them.
RCRUN_NET_HOST_ONLY=1 cargo test --workspace -- --test-threads="${TEST_THREADS:-4}"
echo "== portability: type-check for aarch64, loongarch64 and mips64 (docs/portability.md)"
bash scripts/cross-check.sh
echo "== fuzz: each target for ${FUZZ_SECONDS:-10}s (fuzz/README.md)"
FUZZ_SECONDS="${FUZZ_SECONDS:-10}" bash scripts/fuzz.sh
# The same suites on a real 6.1 kernel with pure cgroup v2 (qemu; see docs/testing.md).
if [ "${SKIP_GUEST:-0}" != 1 ]; then
  echo "== unit and conformance tests in a pure cgroup v2 guest"
  # storage-overlay2 too: Linux 6.1 has no overlay "lowerdir+", so its mount(2) path runs there;
  # net profile: bonding, 8021q, ipvlan, dummy and two spare PCI NICs for crates/net and the
  # net suites.
  python3 guest/rcguest.py run-suite --profile cgroup2,net --timeout "${GUEST_TIMEOUT:-1800}" \
    --package rcrun-runtime --package rcrun-conformance --package rcrun-storage-overlay2 \
    --package rcrun-net
fi
