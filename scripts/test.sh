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
# rcrun-net: the network hook the net suites (and rcrun's org.rcrun.net.network) call;
# rcrun-ipc-shm: its cdylib, which the C test of the channel links against
cargo build -p rcrun -p rcrun-net-cli -p rcrun-ipc-shm
# the shm demo goes into busybox container rootfs: a static executable (conformance/tests/shm.rs)
triple=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target "$triple" \
  -p rcrun-ipc-shm --bin rcrun-shm
shm_demo="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/$triple/release/rcrun-shm"
export RCRUN_SHM_DEMO_BIN="$shm_demo"
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
  # net suites;
  # numa: two nodes, for the shm channel's placement (pages and CPUs on the chosen node).
  python3 guest/rcguest.py run-suite --profile cgroup2,net,numa --timeout "${GUEST_TIMEOUT:-1800}" \
    --add "$shm_demo" --env RCRUN_SHM_DEMO_BIN="$shm_demo" \
    --package rcrun-runtime --package rcrun-conformance --package rcrun-storage-overlay2 \
    --package rcrun-net
  echo "== checkpoint/restore and migration in a guest with CRIU (docs/checkpoint.md)"
  # containerd's binaries go in for checkpoint_containerd.rs (ctr task checkpoint/restore)
  python3 guest/rcguest.py run-suite --profile criu --memory 3G --timeout 1200 \
    --env RCRUN_REQUIRE_CRIU=1 --env RCRUN_CMD_TIMEOUT=300 \
    --add /usr/bin/containerd --add /usr/bin/ctr --add /usr/bin/containerd-shim-runc-v2 \
    --package rcrun-conformance --only checkpoint -- --test-threads 1
fi
