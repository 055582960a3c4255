#!/usr/bin/env python3
"""Helper of bench/migrate.sh.

  migrate.py --config DIR        write DIR/slow.json and DIR/fast.json (the workload bundles)
  migrate.py RESULTS.jsonl [--markdown]   summarise `rcrun migrate --format json` reports

The workload: 200 shell variables of 1 MB (200 MB of anonymous memory in busybox sh), then one
variable rewritten per second (slow: ~1 MB/s dirtied; it waits with `read -t` on a fifo, not
`sleep`: no fork of the 200 MB shell in the loop) or as fast as the shell can (fast).
"""
import json
import os
import statistics
import sys

SETUP = ('a=$(head -c 1048576 /dev/zero | tr "\\0" a); i=0; '
         'while [ $i -lt 200 ]; do i=$((i+1)); eval "v$i=\\"\\${a}$i\\""; done; '
         'echo ready > /dev/shm/ready; n=0; ')
LOOP = {
    "slow": ('mkfifo /dev/shm/tick; exec 3<>/dev/shm/tick; '
             'while :; do n=$((n%200+1)); eval "v$n=\\"\\${a}x$n\\""; echo $n > /dev/shm/c; '
             'read -t 1 x <&3; done'),
    "fast": 'while :; do n=$((n%200+1)); eval "v$n=\\"\\${a}x$n\\""; echo $n > /dev/shm/c; done',
}

# glibc's heap must not grow or shrink with brk while the workload runs: the kernel marks the
# whole heap VMA soft-dirty when it expands, and every pre-dump would copy all 200 MB again.
MALLOC_ENV = ["MALLOC_TOP_PAD_=402653184", "MALLOC_TRIM_THRESHOLD_=4294967295",
              "MALLOC_MMAP_THRESHOLD_=33554432"]


def config(script):
    """runc's default spec (as `rcrun spec` writes it), not on a terminal."""
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    return {
        "ociVersion": "1.0.2-dev",
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["sh", "-c", script],
                    "env": ["PATH=/bin"] + MALLOC_ENV, "cwd": "/",
                    "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
                    "noNewPrivileges": True},
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "migbench",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        ],
        "linux": {"namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
                  "cgroupsPath": "/migbench"},
    }


def write_configs(d):
    for rate, loop in LOOP.items():
        with open(os.path.join(d, f"{rate}.json"), "w") as f:
            json.dump(config(SETUP + loop), f)


def mb(b):
    return b / (1 << 20)


def summarise(path, markdown):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    by = {}
    for r in rows:
        by.setdefault((r.get("link", "local"), r["rate"], r["mode"]), []).append(r["report"])
    out = []
    head = ["link", "workload", "mode", "runs", "total s", "downtime s", "moved MB", "stop",
            "memory MB per round (pre-dumps..., final)"]
    for (link, rate, mode), reps in sorted(by.items()):
        med = lambda k: statistics.median(r[k] for r in reps)
        last = reps[-1]
        per_round = [round(mb(x["memory_bytes"]), 1) for x in last["rounds"]
                     if x["phase"] != "restore"]
        out.append([link, rate, mode, str(len(reps)), f"{med('total') / 1000:.2f}",
                    f"{med('downtime') / 1000:.2f}", f"{mb(med('bytes')):.0f}", last["stop"],
                    " / ".join(str(x) for x in per_round)])
    ratio = {}
    for link in sorted({k[0] for k in by}):
        for rate in ("slow", "fast"):
            pc = by.get((link, rate, "precopy"))
            sc = by.get((link, rate, "stop-and-copy"))
            if pc and sc:
                ratio[f"{link}, {rate}"] = (statistics.median(r["downtime"] for r in pc)
                                            / statistics.median(r["downtime"] for r in sc))
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in out:
            print("| " + " | ".join(r) + " |")
    else:
        w = [max(len(str(x[i])) for x in out + [head]) for i in range(len(head))]
        for r in [head] + out:
            print("  ".join(str(c).ljust(w[i]) for i, c in enumerate(r)))
    for rate, q in ratio.items():
        print(f"\n{rate} dirtier: pre-copy downtime = {q:.0%} of stop-and-copy")


def main(argv):
    if argv[:1] == ["--config"]:
        write_configs(argv[1])
        return 0
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    summarise(argv[0], "--markdown" in argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
