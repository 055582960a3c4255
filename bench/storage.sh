#!/usr/bin/env bash
# Layer store benchmark: `rcrun image import` against `umoci raw unpack` and `tar -xzf` of the
# same ~200 MB layer (tmpfs and disk), and overlay mount time by layer count
# (`rcrun bundle create` and mount::mount through crates/storage-overlay2/examples/mount_bench.rs).
#   bench/storage.sh [storage.py args...]        e.g. bench/storage.sh -n 5 --markdown
# Env: SKIP_BUILD=1 to use the existing binaries (or pass --rcrun PATH / --mount-bench PATH);
#      PYTHON=/path/to/python3.11+ (default: python3).
# Installs umoci with apt-get when it is missing. As root.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
triple=$(rustc -vV | sed -n 's/^host: //p')
bin="$repo/target/static/$triple/release/rcrun"
target="${CARGO_TARGET_DIR:-$repo/target}"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    bin=$("$repo/scripts/build-release.sh")
    (cd "$repo" && cargo build -q --release -p rcrun-storage-overlay2 --example mount_bench >&2)
fi
if ! command -v umoci >/dev/null; then
    apt-get install -y -q umoci >&2 || { apt-get update -q >&2; apt-get install -y -q umoci >&2; }
fi
# A later --rcrun / --mount-bench in "$@" overrides these defaults.
exec "${PYTHON:-python3}" "$here/storage.py" --rcrun "$bin" \
    --mount-bench "$target/release/examples/mount_bench" "$@"
