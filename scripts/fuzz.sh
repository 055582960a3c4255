#!/usr/bin/env bash
# Run every cargo-fuzz target (fuzz/fuzz_targets: config.json, seccomp, state.json) for
# FUZZ_SECONDS seconds each (default 30). Fails if any target crashes, hangs (-timeout) or
# runs out of memory; the input that did it is in fuzz/artifacts/<target>/, and the command to
# replay it is printed.
#
# Needs the nightly toolchain (FUZZ_TOOLCHAIN, default nightly) and cargo-fuzz, which is
# installed from crates.io when missing. The seed corpus (fuzz/corpus/<target>, in git) is read
# only; what the fuzzer finds goes to FUZZ_WORK (default fuzz/work, ignored by git) and is
# reused by the next run. Extra arguments go to libFuzzer, e.g. `scripts/fuzz.sh -jobs=2`.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${FUZZ_SECONDS:-30}"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
work="${FUZZ_WORK:-fuzz/work}"

if ! cargo "+$toolchain" --version >/dev/null 2>&1; then
  echo "fuzz.sh: the $toolchain toolchain is not installed (rustup toolchain install $toolchain)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

echo "== building the fuzz targets"
cargo "+$toolchain" fuzz build

failed=()
for target in $(cargo "+$toolchain" fuzz list); do
  echo "== fuzzing $target for ${secs}s"
  mkdir -p "$work/$target" "fuzz/corpus/$target"
  dict=()
  [ -f "fuzz/dict/$target.dict" ] && dict=("-dict=fuzz/dict/$target.dict")
  if ! cargo "+$toolchain" fuzz run "$target" "$work/$target" "fuzz/corpus/$target" -- \
      "${dict[@]}" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
      -print_final_stats=1 "$@"; then
    failed+=("$target")
    echo "!! $target failed; replay: cargo +$toolchain fuzz run $target fuzz/artifacts/$target/<file>" >&2
  fi
done

if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzz.sh: failing targets: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: all targets ran ${secs}s without a crash"
