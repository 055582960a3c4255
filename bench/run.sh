#!/usr/bin/env bash
# Build rcrun (release) and run the lifecycle benchmark against runc and crun.
#   bench/run.sh [lifecycle.py args...]        e.g. bench/run.sh -n 50 --markdown
# Env: SKIP_BUILD=1 to benchmark the existing binary without building.
#      PYTHON=/path/to/python3.11+ (default: python3)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
triple=$(rustc -vV | sed -n 's/^host: //p')
bin="$repo/target/static/$triple/release/rcrun"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    bin=$("$repo/scripts/build-release.sh")
fi
# A later --rcrun in "$@" overrides this default (the shipping build: static, see scripts/build-release.sh).
exec "${PYTHON:-python3}" "$here/lifecycle.py" --rcrun "$bin" "$@"
