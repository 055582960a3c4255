#!/usr/bin/env bash
# Container networking benchmark: TCP throughput (iperf3) and TCP request/response latency
# between two rcrun containers on a bridge+veth, a macvlan (bridge mode, veth parent) and a
# device network (one end of a veth pair moved into each container: the SR-IOV VF stand-in),
# with loopback in one netns as the reference; and the setup time of `rcrun-net attach` +
# `detach` per mode against the same steps done with ip(8). Results: docs/networking.md.
#   bench/net.sh [net.py args...]     e.g. bench/net.sh --reps 5 --markdown
# Env: SKIP_BUILD=1 to use the existing release binaries (or pass --rcrun PATH --rcrun-net PATH);
#      PYTHON=/path/to/python3.11+ (default: python3); CARGO_TARGET_DIR is honoured.
# As root. Installs iperf3 with apt-get when it is missing. Everything the run makes (links,
# netns, containers, the network store) carries a tag and is removed at the end, on Ctrl-C and
# on SIGTERM/SIGHUP; `python3 bench/net.py --cleanup-only --tag T` undoes a run killed harder.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
target="${CARGO_TARGET_DIR:-$repo/target}"
py="${PYTHON:-python3}"
if [[ $(id -u) != 0 ]]; then
    echo "bench/net.sh: run as root" >&2
    exit 1
fi
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    (cd "$repo" && cargo build -q --release -p rcrun-net-cli -p rcrun >&2)
fi
if ! command -v iperf3 >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q iperf3 >&2 || { apt-get update -q >&2; apt-get install -y -q iperf3 >&2; }
fi
for tool in nsenter unshare ip busybox; do
    command -v "$tool" >/dev/null || { echo "bench/net.sh: $tool is missing" >&2; exit 1; }
done

tag=$(printf '%04x' $(($$ & 0xffff)))
args=(--tag "$tag" --rcrun "$target/release/rcrun" --rcrun-net "$target/release/rcrun-net")
child=
cleanup() {
    # net.py cleans up after itself; this is the backstop for a child that was killed hard.
    "$py" "$here/net.py" "${args[@]}" "$@" --cleanup-only >/dev/null 2>&1 || true
}
on_signal() {
    # A background child ignores SIGINT (non-interactive shell): stop it with SIGTERM, which
    # it turns into its own cleanup.
    [[ -n "$child" ]] && kill -TERM "$child" 2>/dev/null || true
    [[ -n "$child" ]] && wait "$child" 2>/dev/null || true
    exit 130
}
trap cleanup EXIT
trap on_signal INT TERM HUP
# Later --rcrun / --rcrun-net in "$@" override the defaults.
"$py" "$here/net.py" "${args[@]}" "$@" &
child=$!
rc=0
wait "$child" || rc=$?
child=
exit "$rc"
