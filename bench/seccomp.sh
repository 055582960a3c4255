#!/usr/bin/env bash
# Seccomp benchmark for Docker's default profile:
#  1. rcrun's filter compile (warm and cold) and load time, with libseccomp's
#     (what runc and crun use) side by side: the seccomp_bench example;
#  2. `run` of a /bin/true container with and without the profile for rcrun,
#     runc and crun: bench/seccomp.py (bench/lifecycle.py's conventions).
#   bench/seccomp.sh [seccomp.py args...]        e.g. bench/seccomp.sh -n 30 --markdown
# Env: SKIP_BUILD=1 to use the existing rcrun binary (or pass --rcrun PATH);
#      ITERATIONS=N for the compile/load measurement (default 200);
#      PYTHON=/path/to/python3.11+ (default: python3).
# The example links libseccomp (Debian: libseccomp-dev), like the tests.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
triple=$(rustc -vV | sed -n 's/^host: //p')
bin="$repo/target/static/$triple/release/rcrun"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    bin=$("$repo/scripts/build-release.sh")
fi
echo "== filter compile and load (crates/seccomp/examples/seccomp_bench.rs)" >&2
out=$(cd "$repo" && cargo run -q --release -p rcrun-seccomp --example seccomp_bench -- "${ITERATIONS:-200}")
printf '%s\n' "$out" | sed '$d'
json=$(printf '%s\n' "$out" | tail -n 1)
echo "== container start with and without the profile (bench/seccomp.py)" >&2
# A later --rcrun in "$@" overrides this default.
exec "${PYTHON:-python3}" "$here/seccomp.py" --rcrun "$bin" --compile-json "$json" "$@"
