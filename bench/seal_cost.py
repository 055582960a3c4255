#!/usr/bin/env python3
"""Cost of the read-only re-exec (CVE-2019-5736 defence, crates/runtime/src/exe_seal.rs).

Times `BIN --root DIR exec no-such-container true` for each NAME=BIN given: the command
re-executes itself from a read-only clone of its binary (when the binary is not already on a
read-only mount) and then fails at once, so the difference between binaries is the re-exec.
With --userns every binary also runs under `unshare --user --map-root-user`, where the clone is
not allowed and the sealed-memfd fallback is used. Runs are interleaved in random order.

    sudo python3 bench/seal_cost.py before=/tmp/rcrun-old after=target/.../rcrun \
        after-ro=/ro-mount/rcrun -n 800 --userns

Python 3 standard library only.
"""

import argparse
import os
import random
import statistics
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bins", nargs="+", metavar="NAME=BIN")
    ap.add_argument("-n", type=int, default=500, help="timed runs per variant")
    ap.add_argument("--userns", action="store_true", help="also run under unshare -U -r")
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="seal-cost-")
    variants = {}
    for spec in a.bins:
        name, path = spec.split("=", 1)
        variants[name] = [path]
        if a.userns:
            variants[f"{name} (userns)"] = ["unshare", "--user", "--map-root-user", path]
    devnull = os.open(os.devnull, os.O_RDWR)
    fa = [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
    times = {k: [] for k in variants}
    names = list(variants)
    for i in range(a.n + 5):
        random.shuffle(names)
        for k in names:
            argv = variants[k] + ["--root", root, "exec", "no-such-container", "true"]
            t = time.perf_counter()
            pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=fa)
            os.waitpid(pid, 0)
            if i >= 5:
                times[k].append((time.perf_counter() - t) * 1000)
    print(f"load average {os.getloadavg()[0]:.2f}, {a.n} runs each; ms")
    for k, v in times.items():
        q = statistics.quantiles(v, n=10)
        print(f"{k:28s} median {statistics.median(v):6.2f}  p10 {q[0]:6.2f}  p90 {q[-1]:6.2f}")
    os.rmdir(root)


if __name__ == "__main__":
    main()
