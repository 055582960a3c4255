#!/usr/bin/env bash
# Build rcrun (release) and run the lifecycle benchmark against runc and crun.
#   bench/run.sh [lifecycle.py args...]        e.g. bench/run.sh -n 50 --markdown
# Env: SKIP_BUILD=1 to benchmark the existing binary without building.
#      PYTHON=/path/to/python3.11+ (default: python3)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    (cd "$repo" && cargo build --release -p rcrun)
fi
# A later --rcrun in "$@" overrides this default.
exec "${PYTHON:-python3}" "$here/lifecycle.py" --rcrun "$repo/target/release/rcrun" "$@"
