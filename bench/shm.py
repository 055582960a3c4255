#!/usr/bin/env python3
"""Shared-memory channel vs TCP over a bridge vs Unix socket (bench/shm.sh runs this).

Every transport runs the same rcrun-shm client/server code (one send per message, the
receiver copies each message out); --pin puts the server on CPU 0, the client on CPU 1.
Both ends run at nice -19 and each point is the best of --repeat runs.  Transports:
  shm-spin   rcrun shm channel, both sides spinning (never sleep; a core each)
  shm-sleep  rcrun shm channel, both sides sleep on a futex at once when blocked
  shm-default  the library's default: spin 20 us, then sleep
  unix       Unix stream socket, u32 length + payload per write
  tcp-bridge TCP (TCP_NODELAY) between two netns joined by veths on a Linux bridge
Results: a markdown table on stdout, JSON in bench/results/shm-<time>.json.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SIZES = [64, 1024, 65536, 1 << 20]
# Bytes per throughput run (enough for >= ~0.3 s on the slowest transport).
BYTES = {64: 32 << 20, 1024: 256 << 20, 65536: 2 << 30, 1 << 20: 2 << 30}
NS = ("rcshmA", "rcshmB")
BR = "rcshmbr0"
ADDR = ("10.201.77.1", "10.201.77.2")


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


class Bridge:
    """Two netns, each with a veth into a bridge in the root namespace."""

    def __enter__(self):
        self.down()
        sh("ip", "link", "add", BR, "type", "bridge")
        sh("ip", "link", "set", BR, "up")
        for i, ns in enumerate(NS):
            sh("ip", "netns", "add", ns)
            host = f"rcshmv{i}"
            sh("ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", host, "master", BR)
            sh("ip", "link", "set", host, "up")
            sh("ip", "-n", ns, "addr", "add", f"{ADDR[i]}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        return self

    def down(self):
        for ns in NS:
            sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", BR, check=False)
        for i in range(2):
            sh("ip", "link", "del", f"rcshmv{i}", check=False)

    def __exit__(self, *exc):
        self.down()


def transports(work):
    region = os.path.join(work, "region")
    sock = os.path.join(work, "sock")
    return {
        "shm-spin": (["listen", region], ["connect", region], ["--spin"], region),
        "shm-sleep": (["listen", region], ["connect", region], ["--spin-us", "0"], region),
        "shm-default": (["listen", region], ["connect", region], [], region),
        "unix": (["unix-listen", sock], ["unix-connect", sock], [], None),
        "tcp-bridge": (
            ["ip", "netns", "exec", NS[0], "@BIN", "tcp-listen", f"{ADDR[0]}:7701"],
            ["ip", "netns", "exec", NS[1], "@BIN", "tcp-connect", f"{ADDR[0]}:7701"],
            [],
            None,
        ),
    }


def cmd(binary, role, rest):
    if role[0] == "ip":
        return [binary if a == "@BIN" else a for a in role] + rest
    return [binary] + role + rest


PIN = {"server": [], "client": []}


def pair(binary, t, server_mode, client_mode, extra, timeout=600):
    """Run one server/client pair; returns the client's JSON."""
    srole, crole, wait, region = t
    if region:
        if os.path.exists(region):
            os.unlink(region)
        sh(binary, "create", region, "--ring", "4MiB", "--mode", "0600")
    server = subprocess.Popen(
        cmd(binary, srole, [server_mode] + wait + PIN["server"]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.1)
        c = subprocess.run(
            cmd(binary, crole, [client_mode] + extra + wait + PIN["client"]),
            capture_output=True, text=True, timeout=timeout)
        if c.returncode != 0:
            raise RuntimeError(f"client {crole} {client_mode}: {c.stderr.strip()}")
        server.wait(timeout=30)
        return json.loads(c.stdout.strip().splitlines()[-1])
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--quick", action="store_true", help="1/8 of the bytes and iterations")
    ap.add_argument("--iters", type=int, default=100000, help="round trips per latency run")
    ap.add_argument("--only", default="", help="comma list of transports")
    ap.add_argument("--pin", action="store_true",
                    help="server on CPU 0, client on CPU 1 (on a busy 2-core host the scheduler's "
                         "choice is often better)")
    ap.add_argument("--nice", type=int, default=-19,
                    help="niceness of both ends (the host's builds otherwise take our cores)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per point; the best is kept (a shared 2-core host is noisy)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/shm.py: run as root (netns, bridge)")
    os.nice(args.nice - os.nice(0))
    if args.pin:
        PIN.update(server=["--cpu", "0"], client=["--cpu", "1"])
    div = 8 if args.quick else 1
    iters = max(1000, args.iters // div)
    with tempfile.TemporaryDirectory(prefix="rcrun-shm-bench", dir="/dev/shm") as work, Bridge():
        ts = transports(work)
        names = [n for n in ts if not args.only or n in args.only.split(",")]
        res = {"throughput": {}, "latency": {}, "iters": iters, "repeat": args.repeat, "nice": os.nice(0), "pinned": args.pin,
               "loadavg_before": os.getloadavg()[0],
               "host": os.uname().release, "cpus": os.cpu_count()}
        for n in names:
            for s in SIZES:
                r = max((pair(args.bin, ts[n], "sink", "stream",
                              ["--size", str(s), "--bytes", str(BYTES[s] // div)])
                         for _ in range(args.repeat)), key=lambda x: x["gbit_per_s"])
                res["throughput"].setdefault(n, {})[str(s)] = r
                print(f"{n:10} {s:>8} B  {r['gbit_per_s']:9.2f} Gbit/s  {r['msgs_per_s']:>12.0f} msg/s",
                      file=sys.stderr)
            for s in (64, 1024):
                r = min((pair(args.bin, ts[n], "echo", "pingpong",
                              ["--size", str(s), "--iters", str(iters)])
                         for _ in range(args.repeat)), key=lambda x: x["p50_us"])
                res["latency"].setdefault(n, {})[str(s)] = r
                print(f"{n:10} {s:>8} B  rtt p50 {r['p50_us']:8.2f} us  p99 {r['p99_us']:8.2f} us",
                      file=sys.stderr)
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = os.path.join(os.path.dirname(__file__), "results", f"shm-{stamp}.json")
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    print(report(res))
    print(f"\n(JSON: {out})")


def fmt_size(s):
    return {64: "64 B", 1024: "1 KiB", 65536: "64 KiB", 1 << 20: "1 MiB"}[s]


def report(res):
    tp, lat = res["throughput"], res["latency"]
    names = list(tp)
    lines = ["| message | " + " | ".join(f"{n} Gbit/s" for n in names)
             + " | shm-spin / tcp-bridge | shm-sleep / tcp-bridge | shm-sleep / unix |",
             "|---" * (len(names) + 4) + "|"]
    for s in SIZES:
        k = str(s)
        row = [f"{tp[n][k]['gbit_per_s']:.2f}" for n in names]

        def ratio(a, b):
            if a in tp and b in tp and tp[b][k]["gbit_per_s"] > 0:
                return f"{tp[a][k]['gbit_per_s'] / tp[b][k]['gbit_per_s']:.1f}x"
            return "-"
        lines.append(f"| {fmt_size(s)} | " + " | ".join(row)
                     + f" | {ratio('shm-spin', 'tcp-bridge')} | {ratio('shm-sleep', 'tcp-bridge')}"
                     + f" | {ratio('shm-sleep', 'unix')} |")
    lines += ["", "| round trip | " + " | ".join(f"{n} p50 / p99 us" for n in lat) + " |",
              "|---" * (len(lat) + 1) + "|"]
    for s in ("64", "1024"):
        lines.append(f"| {fmt_size(int(s))} | " + " | ".join(
            f"{lat[n][s]['p50_us']:.2f} / {lat[n][s]['p99_us']:.2f}" for n in lat) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
