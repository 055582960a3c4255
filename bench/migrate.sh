#!/usr/bin/env bash
# Live-migration benchmark: `rcrun migrate` with iterative pre-copy vs stop-and-copy
# (`--no-precopy`), for a 200 MB workload dirtying memory slowly (1 MB/s) and quickly (as fast
# as a shell can rewrite 1 MB strings), in the qemu guest (criu profile; CRIU does not work on
# the development host's kernel). Reports per run: total time, downtime, bytes moved, and the
# memory bytes of every round; bench/migrate.py turns the JSON lines into a table.
#   bench/migrate.sh [-n RUNS] [--markdown]
# Env: RCRUN=/path/to/rcrun (default: build the debug binary; CRIU dominates the figures),
#      CARGO_TARGET_DIR as for cargo; THRESHOLD/MAX_ROUNDS/MIN_SHRINK for the policy.
# The guest needs GNU tar (CRIU dumps tmpfs with it) and nf_conntrack_netlink (CRIU dumps the
# conntrack table of a network namespace): both are added here until the criu profile has them.
set -euo pipefail

inside() {
    local rcrun=$1 runs=$2
    local work=/tmp/migbench
    mkdir -p "$work/src/rootfs/bin" "$work/src/rootfs/dev" "$work/src/rootfs/proc" \
        "$work/src/rootfs/sys" "$work/src/rootfs/tmp"
    cp /bin/busybox "$work/src/rootfs/bin/busybox"
    for a in sh head tr sleep echo mkfifo; do ln -sf busybox "$work/src/rootfs/bin/$a"; done
    local cfgdir=$3
    modprobe sch_tbf 2>/dev/null || true
    for link in local 100mbit; do
    # local: images written where the restore reads them (same host, tmpfs);
    # 100mbit: memory through a page server over lo shaped to 100 Mbit/s (a link between hosts).
    local transport=(--transport local)
    tc qdisc del dev lo root 2>/dev/null || true
    if [[ $link == 100mbit ]]; then
        tc qdisc add dev lo root tbf rate 100mbit burst 128kb latency 500ms
        transport=(--transport page-server --page-server 127.0.0.1:27027)
    fi
    for rate in slow fast; do
        cp "$cfgdir/$rate.json" "$work/src/config.json"
        for mode in precopy stop-and-copy; do
            for run in $(seq 1 "$runs"); do
                local id="mb-$link-$rate-$mode-$run" dst="$work/dst-$link-$rate-$mode-$run"
                "$rcrun" --root /run/mb-src run -d --bundle "$work/src" "$id" </dev/null >/dev/null 2>&1
                local pid
                pid=$("$rcrun" --root /run/mb-src state "$id" | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
                for _ in $(seq 1 600); do [[ -e /proc/$pid/root/dev/shm/ready ]] && break; sleep 0.5; done
                sleep 2
                # The workload's network is lo only: leave the namespace out of the images
                # (restore brings lo up), as a container with runtime-managed networking would.
                local extra=(--empty-ns network)
                [[ $mode == stop-and-copy ]] && extra+=(--no-precopy)
                local out
                if out=$("$rcrun" --root /run/mb-src migrate --to-root /run/mb-dst --to-bundle "$dst" \
                    --max-rounds "${MAX_ROUNDS:-8}" --threshold "${THRESHOLD:-16m}" \
                    --min-shrink "${MIN_SHRINK:-0.8}" --format json "${transport[@]}" \
                    "${extra[@]}" "$id"); then
                    echo "MIGRATE-RESULT {\"link\":\"$link\",\"rate\":\"$rate\",\"mode\":\"$mode\",\"run\":$run,\"report\":$out}"
                else
                    echo "MIGRATE-FAILED $rate $mode $run" >&2
                    "$rcrun" --root /run/mb-src delete -f "$id" >/dev/null 2>&1 || true
                fi
                "$rcrun" --root /run/mb-dst delete -f "$id" >/dev/null 2>&1 || true
                rm -rf "$dst"
            done
        done
    done
    done
    tc qdisc del dev lo root 2>/dev/null || true
}

if [[ "${1:-}" == --inside ]]; then
    inside "$2" "$3" "$4"
    exit 0
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
runs=1
py_args=()
while [[ $# -gt 0 ]]; do
    case $1 in
        -n) runs=$2; shift 2 ;;
        *) py_args+=("$1"); shift ;;
    esac
done
if [[ -z "${RCRUN:-}" ]]; then
    (cd "$repo" && cargo build -q -p rcrun)
    RCRUN="$(cd "$repo" && cargo metadata --format-version=1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/rcrun"
fi
command -v criu >/dev/null || apt-get install -y criu
ko=$(find /var/cache/rcrun-guest "$repo/guest/.cache" -name nf_conntrack_netlink.ko 2>/dev/null | head -1 || true)
if [[ -z "$ko" ]]; then
    "$repo/guest/build" >/dev/null
    ko=$(find /var/cache/rcrun-guest "$repo/guest/.cache" -name nf_conntrack_netlink.ko 2>/dev/null | head -1)
fi
cfgdir=$(mktemp -d /tmp/migbench-cfg.XXXXXX)
trap 'rm -rf "$cfgdir"' EXIT
python3 "$here/migrate.py" --config "$cfgdir"
ts=$(date -u +%Y%m%dT%H%M%SZ)
raw="$here/results/migrate-$ts.jsonl"
mkdir -p "$here/results"
"$repo/guest/run" --profile criu --memory 3G --timeout 3000 --add "$RCRUN" --add /usr/bin/tar \
    --add "$ko" --add "$here/migrate.sh" --add "$cfgdir" \
    -c "modprobe nf_conntrack; insmod $ko; bash $here/migrate.sh --inside $RCRUN $runs $cfgdir" \
    | tee /dev/stderr | sed -n 's/^MIGRATE-RESULT //p' > "$raw"
echo "raw results: $raw" >&2
exec python3 "$here/migrate.py" "$raw" "${py_args[@]}"
