#!/usr/bin/env bash
# Shared-memory channel benchmark (docs/shm.md): in one run, the rcrun shm channel (spinning
# and sleeping waiters) vs TCP over a Linux bridge between two network namespaces vs a Unix
# socket; throughput at 64 B, 1 KiB, 64 KiB, 1 MiB and 64 B / 1 KiB round trips (p50/p99),
# reported as ratios.  Root (netns, bridge).
#   bench/shm.sh [shm.py args...]          e.g. bench/shm.sh --quick
# Env: RCRUN_SHM_DEMO_BIN=PATH to skip the build (a static or dynamic rcrun-shm),
#      PYTHON (default python3), CARGO_TARGET_DIR (as for cargo).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
bin="${RCRUN_SHM_DEMO_BIN:-}"
if [[ -z "$bin" ]]; then
    triple=$(rustc -vV | sed -n 's/^host: //p')
    target="${CARGO_TARGET_DIR:-$repo/target}"
    # The workspace's release profile is size-optimised; the channel's hot loop is not.
    (cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --release \
        --target "$triple" -p rcrun-ipc-shm --bin rcrun-shm \
        --config 'profile.release.package.rcrun-ipc-shm.opt-level=3') >&2
    bin="$target/$triple/release/rcrun-shm"
fi
exec "${PYTHON:-python3}" "$here/shm.py" --bin "$bin" "$@"
