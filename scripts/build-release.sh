#!/usr/bin/env bash
# Build the shipping rcrun: release profile, statically linked, not position-independent.
# Prints the binary's path on stdout.
#
# Why static and non-PIE: a container start is a few milliseconds, and a dynamically linked
# PIE pays for the loader, four shared libraries and tens of thousands of relocations on every
# command (peak RSS 4.4 MiB against 2.8 MiB static; crun is 3.2 MiB). Go builds runc the same
# way by default. Host build scripts and proc-macros are not affected: the flags apply only to
# the explicit --target, whose artifacts go to their own target dir so ordinary builds keep
# their cache.
set -euo pipefail
cd "$(dirname "$0")/.."
triple=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static" \
  cargo build --release -p rcrun --target "$triple" --target-dir target/static >&2
echo "$PWD/target/static/$triple/release/rcrun"
