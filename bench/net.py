#!/usr/bin/env python3
"""Container networking benchmark (run through bench/net.sh; Python 3.11 standard library, root).

In one run, for bridge+veth, macvlan (bridge mode, on a veth parent), a moved device (one end of
a veth pair moved into each container by a `device` network: the stand-in for SR-IOV VFs) and,
as the reference, loopback inside one netns:

- container-to-container TCP throughput: iperf3, `--seconds` each, `--reps` repetitions, median;
- TCP request/response latency: 1-byte ping-pong over one TCP connection (this file's
  --rr-server/--rr-client, TCP_NODELAY), p50/p99 of `--rr-count` round trips per repetition;
- setup time per container: `rcrun-net attach` and `detach` of a process in a fresh netns
  (median of `--setup-runs`), against the same work done with the ip(8) tool (one process
  per step, as a shell script would), per mode.

The containers are real rcrun containers (busybox rootfs, `sleep`), attached by the
`rcrun-net hook` in their config.json (createRuntime / poststop) through the
org.rcrun.net.network annotation; iperf3 and the ping-pong run in their netns with
`nsenter -t PID -n`. `--containers netns` uses plain `unshare -n` processes attached with
`rcrun-net attach --pid` instead.

Every name carries the run's tag (--tag), so `--cleanup-only --tag T` can undo a run that was
killed with SIGKILL; bench/net.sh calls it from its trap.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODES = ("bridge", "macvlan", "device")
SETUP_MODES = ("bridge", "macvlan", "device")
IPERF_PORT = 5201
RR_PORT = 5301


# --- TCP request/response (runs inside a netns via nsenter) ---------------------------------


def rr_server(port: int) -> None:
    """Echo 1-byte messages on one connection until the client closes it."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(1)
    while True:
        c, _ = ls.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        recv, send = c.recv, c.send
        while True:
            b = recv(1)
            if not b:
                break
            send(b)
        c.close()


def rr_client(host: str, port: int, count: int, warmup: int) -> None:
    """Time `count` round trips (after `warmup`); print percentiles as JSON."""
    deadline = time.monotonic() + 5
    while True:
        try:
            s = socket.create_connection((host, port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    recv, send, clock = s.recv, s.send, time.perf_counter_ns
    for _ in range(warmup):
        send(b"x")
        recv(1)
    samples = [0] * count
    for i in range(count):
        t0 = clock()
        send(b"x")
        if not recv(1):
            raise SystemExit("rr: server closed the connection")
        samples[i] = clock() - t0
    s.close()
    samples.sort()
    us = [x / 1000 for x in samples]
    print(
        json.dumps(
            {
                "count": count,
                "p50_us": pct(us, 50),
                "p90_us": pct(us, 90),
                "p99_us": pct(us, 99),
                "min_us": us[0],
                "mean_us": statistics.fmean(us),
                "tps": 1e6 / statistics.fmean(us),
            }
        )
    )


# --- helpers ---------------------------------------------------------------------------------


def pct(sorted_vals: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def summary(vals: list[float]) -> dict:
    s = sorted(vals)
    if not s:
        return {"n": 0}
    return {
        "n": len(s),
        "median": statistics.median(s),
        "p10": pct(s, 10),
        "p90": pct(s, 90),
        "min": s[0],
        "max": s[-1],
        "samples": vals,
    }


def log(msg: str) -> None:
    print(f"[net] {msg}", file=sys.stderr, flush=True)


def fnv1a_veth(container: str) -> str:
    """crates/net/src/bridge.rs host_veth_name: the host end of a bridge attachment."""
    h = 0xCBF29CE484222325
    for b in container.encode():
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"veth{h >> 20:011x}"


class Failed(Exception):
    pass


def run(argv: list[str], check: bool = True, quiet: bool = False, timeout: float = 60,
        stdin: str | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise Failed(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip()}")
    if not quiet and p.returncode != 0:
        log(f"(ignored) {' '.join(argv)}: {p.stderr.strip()}")
    return p


def run_quiet(argv: list[str]) -> None:
    """A command timed by the caller: no output capture beyond what is needed to report."""
    p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise Failed(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.decode().strip()}")


# --- the run ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        t = a.tag
        self.tag = t
        self.base = Path(a.base_dir) / f"rcrun-netbench-{t}"
        self.store = self.base / "store"
        self.root = self.base / "rcrun-root"
        self.bundles = self.base / "bundles"
        self.net = {m: f"nb{t}-{m}" for m in MODES}
        self.bridge = f"nb{t}br"
        self.mv_parent, self.mv_peer = f"nb{t}mp", f"nb{t}mq"
        self.dev_a, self.dev_b = f"nb{t}da", f"nb{t}db"
        self.ref_dev, self.ref_dev_peer = f"nb{t}ra", f"nb{t}rb"
        self.ref_veth = f"nb{t}rv"
        self.lo_ns = f"nb{t}lo"
        o = a.subnet_base  # e.g. "10.213"
        self.subnet = {"bridge": f"{o}.11", "macvlan": f"{o}.12", "device": f"{o}.13"}
        # Unique argument of our netns-holding sleeps, so --cleanup-only finds exactly them.
        self.sleep_arg = str(1_000_000 + int(t, 16))
        self.procs: list[subprocess.Popen] = []
        self.containers: dict[str, dict] = {}  # id -> {pid, mode}

    # names of everything we might make, for cleanup
    def container_ids(self) -> list[str]:
        return [f"nb{self.tag}-{m}-{s}" for m in MODES for s in ("a", "b")]

    def setup_ids(self, mode: str) -> str:
        return f"nb{self.tag}-s-{mode}"

    def host_links(self) -> list[str]:
        # Both ends of each pair: one end may be stuck in a netns that is gone by now.
        links = [self.bridge, self.mv_parent, self.mv_peer, self.dev_a, self.dev_b, self.ref_dev,
                 self.ref_dev_peer, self.ref_veth]
        links += [fnv1a_veth(c) for c in self.container_ids()]
        links += [fnv1a_veth(f"{self.setup_ids(m)}-{i}") for m in SETUP_MODES
                  for i in range(self.a.setup_runs + self.a.setup_warmup)]
        return links

    def rcrun_net(self, *args: str) -> list[str]:
        return [self.a.rcrun_net, "--store", str(self.store), *args]

    def rcrun(self, *args: str) -> list[str]:
        return [self.a.rcrun, "--root", str(self.root), *args]

    # -- cleanup (idempotent; also works from a fresh process with only the tag) --
    def cleanup(self) -> None:
        log("cleanup")
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.kill_strays()
        if self.root.exists() and os.path.exists(self.a.rcrun):
            for cid in self.container_ids():
                run(self.rcrun("delete", "--force", cid), check=False, quiet=True, timeout=30)
        if self.store.exists() and os.path.exists(self.a.rcrun_net):
            p = run(self.rcrun_net("ls", "--format", "json"), check=False, quiet=True)
            try:
                left = json.loads(p.stdout) if p.returncode == 0 else []
            except json.JSONDecodeError:
                left = []
            for att in left:
                run(self.rcrun_net("detach", "--container", att["container"],
                                   "--network", att["network"]), check=False, timeout=30)
        # Pins (device mode) and anything else mounted under our dir.
        try:
            mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        except OSError:
            mounts = []
        for line in reversed(mounts):
            mp = line.split()[4]
            if mp.startswith(str(self.base) + "/"):
                run(["umount", "-l", mp], check=False, quiet=True)
        for link in self.host_links():
            if Path(f"/sys/class/net/{link}").exists():
                run(["ip", "link", "del", link], check=False)
        if Path(f"/run/netns/{self.lo_ns}").exists():
            run(["ip", "netns", "del", self.lo_ns], check=False)
        shutil.rmtree(self.base, ignore_errors=True)

    def kill_strays(self) -> None:
        """Processes of ours that outlived their Popen handle (a killed earlier run)."""
        me = os.getpid()
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) == me:
                continue
            try:
                argv = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            a = [x.decode(errors="replace") for x in argv if x]
            mine = (a[:2] == ["sleep", self.sleep_arg]
                    or any(str(self.base) in x for x in a)
                    or (f"--tag={self.tag}" in a and "--rr-server" in a))
            if mine:
                try:
                    os.kill(int(d.name), signal.SIGKILL)
                except OSError:
                    pass

    # -- pieces --
    def spawn(self, argv: list[str]) -> subprocess.Popen:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def netns_holder(self) -> int:
        """A process in a fresh netns (unshare execs sleep: same pid)."""
        return self.wait_netns(self.spawn(["unshare", "--net", "sleep", self.sleep_arg]))

    def wait_netns(self, p: subprocess.Popen) -> int:
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{p.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            if time.monotonic() > deadline:
                raise Failed("unshare --net did not enter a new netns")
            time.sleep(0.01)
        return p.pid

    def make_links(self) -> None:
        for a, b in ((self.mv_parent, self.mv_peer), (self.dev_a, self.dev_b),
                     (self.ref_dev, self.ref_dev_peer)):
            run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
            run(["ip", "link", "set", a, "up"])
            run(["ip", "link", "set", b, "up"])

    def make_networks(self) -> None:
        rng = lambda m: f"{self.subnet[m]}.10-{self.subnet[m]}.100"  # noqa: E731
        run(self.rcrun_net("network", "create", self.net["bridge"], "--mode", "bridge",
                           "--subnet", f"{self.subnet['bridge']}.0/24", "--bridge", self.bridge,
                           "--range", rng("bridge")))
        run(self.rcrun_net("network", "create", self.net["macvlan"], "--mode", "macvlan",
                           "--subnet", f"{self.subnet['macvlan']}.0/24", "--parent",
                           self.mv_parent, "--macvlan-mode", "bridge", "--range",
                           rng("macvlan")))
        run(self.rcrun_net("network", "create", self.net["device"], "--mode", "device",
                           "--subnet", f"{self.subnet['device']}.0/24", "--device",
                           f"{self.dev_a},{self.dev_b}", "--range", rng("device")))

    # -- setup time --
    def ip_attach(self, mode: str, pid: int) -> list[list[str]]:
        """What a shell script would run with ip(8), one process per step."""
        ns = ["nsenter", "-t", str(pid), "-n"]
        s = self.subnet[mode]
        addr, gw = f"{s}.200/24", f"{s}.1"
        if mode == "bridge":
            first = [["ip", "link", "add", self.ref_veth, "type", "veth", "peer", "name", "eth0",
                      "netns", str(pid)],
                     ["ip", "link", "set", self.ref_veth, "master", self.bridge, "up"]]
        elif mode == "macvlan":
            first = [["ip", "link", "add", "link", self.mv_parent, "name", "eth0", "netns",
                      str(pid), "type", "macvlan", "mode", "bridge"]]
        else:
            first = [["ip", "link", "set", self.ref_dev, "netns", str(pid), "name", "eth0"]]
        return first + [
            ns + ["ip", "addr", "add", addr, "dev", "eth0"],
            ns + ["ip", "link", "set", "eth0", "up"],
            ns + ["ip", "link", "set", "lo", "up"],
            ns + ["ip", "route", "add", "default", "via", gw],
        ]

    def ip_detach(self, mode: str, pid: int) -> list[list[str]]:
        ns = ["nsenter", "-t", str(pid), "-n"]
        if mode == "bridge":
            return [["ip", "link", "del", self.ref_veth]]
        if mode == "macvlan":
            return [ns + ["ip", "link", "del", "eth0"]]
        # Back to the host (pid 1's netns) under its own name, then up as it was.
        return [ns + ["ip", "link", "set", "eth0", "netns", "1", "name", self.ref_dev],
                ["ip", "link", "set", self.ref_dev, "up"]]

    def bench_setup(self) -> dict:
        out: dict = {}
        n, w = self.a.setup_runs, self.a.setup_warmup
        for mode in SETUP_MODES:
            net = self.net[mode]
            lib_att, lib_det, ip_att, ip_det = [], [], [], []
            for i in range(w + n):
                cid = f"{self.setup_ids(mode)}-{i}"
                # A fresh netns per container and per tool (made untimed): `detach` of a
                # macvlan from a live netns leaves the link there (it goes with the netns).
                holders = [self.spawn(["unshare", "--net", "sleep", self.sleep_arg])
                           for _ in range(2)]
                lib_pid, pid = (self.wait_netns(h) for h in holders)

                def lib() -> tuple[float, float]:
                    t0 = time.perf_counter()
                    run_quiet(self.rcrun_net("attach", "--container", cid, "--pid", str(lib_pid),
                                             "--network", net))
                    t1 = time.perf_counter()
                    run_quiet(self.rcrun_net("detach", "--container", cid, "--network", net))
                    return t1 - t0, time.perf_counter() - t1

                def ipt() -> tuple[float, float]:
                    t0 = time.perf_counter()
                    for c in self.ip_attach(mode, pid):
                        run_quiet(c)
                    t1 = time.perf_counter()
                    for c in self.ip_detach(mode, pid):
                        run_quiet(c)
                    return t1 - t0, time.perf_counter() - t1

                # Alternate which goes first, so drift hits both alike.
                order = (lib, ipt) if i % 2 == 0 else (ipt, lib)
                res = {f: f() for f in order}
                for h in holders:
                    h.kill()
                    h.wait()
                if i >= w:
                    lib_att.append(res[lib][0] * 1e3)
                    lib_det.append(res[lib][1] * 1e3)
                    ip_att.append(res[ipt][0] * 1e3)
                    ip_det.append(res[ipt][1] * 1e3)
            out[mode] = {
                "rcrun_net": {"attach_ms": summary(lib_att), "detach_ms": summary(lib_det),
                              "total_ms": summary([a + b for a, b in zip(lib_att, lib_det)])},
                "ip": {"attach_ms": summary(ip_att), "detach_ms": summary(ip_det),
                       "total_ms": summary([a + b for a, b in zip(ip_att, ip_det)]),
                       "processes": len(self.ip_attach(mode, 1)) + len(self.ip_detach(mode, 1))},
            }
            log(f"setup {mode}: rcrun-net {out[mode]['rcrun_net']['total_ms']['median']:.1f} ms, "
                f"ip {out[mode]['ip']['total_ms']['median']:.1f} ms")
        # Process spawn floor from Python, to read the figures against.
        sp = []
        for _ in range(n):
            t0 = time.perf_counter()
            run_quiet(["/bin/true"])
            sp.append((time.perf_counter() - t0) * 1e3)
        out["spawn_true_ms"] = summary(sp)
        return out

    # -- containers --
    def bundle(self, cid: str, mode: str) -> Path:
        b = self.bundles / cid
        rootfs = b / "rootfs"
        for d in ("bin", "proc", "dev", "sys", "tmp", "etc"):
            (rootfs / d).mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.a.busybox, rootfs / "bin" / "busybox")
        for applet in ("sh", "sleep"):
            (rootfs / "bin" / applet).symlink_to("busybox")
        run([self.a.rcrun, "spec", "--bundle", str(b)])
        cfg = json.loads((b / "config.json").read_text())
        cfg["process"]["terminal"] = False
        cfg["process"]["args"] = ["/bin/sleep", "999999"]
        cfg["hostname"] = cid
        cfg.setdefault("annotations", {})["org.rcrun.net.network"] = self.net[mode]
        hook = lambda act: {  # noqa: E731
            "path": str(Path(self.a.rcrun_net).resolve()),
            "args": ["rcrun-net", "--store", str(self.store), "hook", act],
            "timeout": 30,
        }
        cfg["hooks"] = {"createRuntime": [hook("up")], "poststop": [hook("down")]}
        (b / "config.json").write_text(json.dumps(cfg, indent=2))
        return b

    def start_container(self, cid: str, mode: str) -> int:
        if self.a.containers == "netns":
            pid = self.netns_holder()
            run(self.rcrun_net("attach", "--container", cid, "--pid", str(pid), "--network",
                               self.net[mode]))
            self.containers[cid] = {"pid": pid, "mode": mode}
            return pid
        b = self.bundle(cid, mode)
        # The container inherits rcrun's stdio: a pipe would never reach EOF.
        errlog = self.base / f"{cid}.stderr"
        with open(errlog, "wb") as err:
            t0 = time.perf_counter()
            p = subprocess.run(self.rcrun("run", "-d", "--bundle", str(b), cid),
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=err, timeout=60)
            took = (time.perf_counter() - t0) * 1e3
        if p.returncode != 0:
            raise Failed(f"rcrun run {cid}: exit {p.returncode}: "
                         f"{errlog.read_text(errors='replace').strip()}")
        st = json.loads(run(self.rcrun("state", cid)).stdout)
        self.containers[cid] = {"pid": st["pid"], "mode": mode, "run_ms": took}
        return st["pid"]

    def stop_container(self, cid: str) -> None:
        if self.a.containers == "netns":
            run(self.rcrun_net("detach", "--container", cid))
            return
        run(self.rcrun("kill", cid, "KILL"), check=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = run(self.rcrun("state", cid), check=False, quiet=True)
            if st.returncode != 0 or json.loads(st.stdout).get("status") == "stopped":
                break
            time.sleep(0.05)
        run(self.rcrun("delete", cid))  # runs the poststop hook: rcrun-net hook down

    def address_of(self, cid: str) -> str:
        atts = json.loads(run(self.rcrun_net("ls", "--format", "json")).stdout)
        for a in atts:
            if a["container"] == cid:
                return a["address"].split("/")[0]
        raise Failed(f"{cid}: no attachment in the store (did the createRuntime hook run?)")

    # -- data path --
    def ns(self, target: int | str) -> list[str]:
        if isinstance(target, int):
            return ["nsenter", "-t", str(target), "-n"]
        return ["nsenter", f"--net=/run/netns/{target}"]

    def wait_listen(self, target: int | str, port: int) -> None:
        want = f":{port:04X} "
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            # iperf3 listens on [::] (tcp6), the ping-pong server on 0.0.0.0.
            p = run(self.ns(target) + ["cat", "/proc/net/tcp", "/proc/net/tcp6"], check=False,
                    quiet=True)
            if any(want in ln and ln.split()[3] == "0A" for ln in p.stdout.splitlines()
                   if len(ln.split()) > 3):
                return
            time.sleep(0.05)
        raise Failed(f"nothing listens on port {port} in {target}")

    def start_servers(self, target: int | str, tagname: str) -> None:
        self.spawn(self.ns(target) + ["iperf3", "-s", "-p", str(IPERF_PORT), "--logfile",
                                      str(self.base / f"iperf3-{tagname}.log")])
        self.spawn(self.ns(target) + [sys.executable, str(Path(__file__).resolve()),
                                      "--rr-server", str(RR_PORT), f"--tag={self.tag}"])
        self.wait_listen(target, IPERF_PORT)
        self.wait_listen(target, RR_PORT)

    def iperf(self, client: int | str, server_ip: str) -> dict:
        p = run(self.ns(client) + ["iperf3", "-c", server_ip, "-p", str(IPERF_PORT), "-t",
                                   str(self.a.seconds), "-O", "1", "-J"],
                timeout=self.a.seconds + 30)
        j = json.loads(p.stdout)
        return {"gbit_s": j["end"]["sum_received"]["bits_per_second"] / 1e9,
                "retransmits": j["end"]["sum_sent"].get("retransmits")}

    def rr(self, client: int | str, server_ip: str) -> dict:
        p = run(self.ns(client) + [sys.executable, str(Path(__file__).resolve()), "--rr-client",
                                   server_ip, str(RR_PORT), "--rr-count",
                                   str(self.a.rr_count), "--rr-warmup", str(self.a.rr_warmup)],
                timeout=120)
        return json.loads(p.stdout)

    def bench_data(self) -> dict:
        pairs: dict[str, tuple[int | str, int | str, str]] = {}
        for mode in MODES:
            a, b = f"nb{self.tag}-{mode}-a", f"nb{self.tag}-{mode}-b"
            pa = self.start_container(a, mode)
            pb = self.start_container(b, mode)
            ip_b = self.address_of(b)
            self.start_servers(pb, mode)
            pairs[mode] = (pa, pb, ip_b)
            log(f"{mode}: {a} (pid {pa}) -> {b} (pid {pb}, {ip_b})")
        run(["ip", "netns", "add", self.lo_ns])
        run(["ip", "-n", self.lo_ns, "link", "set", "lo", "up"])
        self.start_servers(self.lo_ns, "loopback")
        pairs["loopback"] = (self.lo_ns, self.lo_ns, "127.0.0.1")

        order = list(pairs)
        tput: dict[str, list[dict]] = {m: [] for m in order}
        rr: dict[str, list[dict]] = {m: [] for m in order}
        for rep in range(self.a.reps):
            # Rotate the order each repetition so drift in the machine's load hits all modes.
            rot = order[rep % len(order):] + order[:rep % len(order)]
            for m in rot:
                c, _, ip = pairs[m]
                tput[m].append(self.iperf(c, ip))
                rr[m].append(self.rr(c, ip))
                log(f"rep {rep + 1}/{self.a.reps} {m}: {tput[m][-1]['gbit_s']:.2f} Gbit/s, "
                    f"rr p50 {rr[m][-1]['p50_us']:.1f} us p99 {rr[m][-1]['p99_us']:.1f} us")
        out = {}
        for m in order:
            out[m] = {
                "throughput_gbit_s": summary([x["gbit_s"] for x in tput[m]]),
                "retransmits": [x["retransmits"] for x in tput[m]],
                "rr_p50_us": summary([x["p50_us"] for x in rr[m]]),
                "rr_p99_us": summary([x["p99_us"] for x in rr[m]]),
                "rr_reps": rr[m],
            }
        # Tear the containers down through the runtime (poststop hook), and check the store.
        checks = {}
        for cid in list(self.containers):
            self.stop_container(cid)
        left = json.loads(run(self.rcrun_net("ls", "--format", "json")).stdout)
        checks["attachments_left_after_delete"] = [f"{a['container']}@{a['network']}"
                                                  for a in left]
        checks["devices_back_on_host"] = all(
            Path(f"/sys/class/net/{d}").exists() for d in (self.dev_a, self.dev_b))
        checks["container_run_ms"] = {c: v.get("run_ms") for c, v in self.containers.items()}
        out["checks"] = checks
        return out


# --- report ----------------------------------------------------------------------------------


def med(d: dict) -> float:
    return d.get("median", float("nan"))


def report(res: dict, markdown: bool) -> str:
    lines = []
    setup = res.get("setup")
    if setup:
        lines.append("Setup per container (ms, median; attach + detach):")
        hdr = (f"{'mode':<9} {'rcrun-net attach':>16} {'detach':>8} {'total':>8}   "
               f"{'ip(8) attach':>12} {'detach':>8} {'total':>8} {'procs':>5}   "
               f"{'rcrun-net/ip':>12}")
        lines.append(hdr)
        for m in SETUP_MODES:
            s = setup[m]
            lib, ip = s["rcrun_net"], s["ip"]
            lines.append(
                f"{m:<9} {med(lib['attach_ms']):>16.1f} {med(lib['detach_ms']):>8.1f} "
                f"{med(lib['total_ms']):>8.1f}   {med(ip['attach_ms']):>12.1f} "
                f"{med(ip['detach_ms']):>8.1f} {med(ip['total_ms']):>8.1f} {ip['processes']:>5}   "
                f"{med(lib['total_ms']) / med(ip['total_ms']):>12.2f}")
        lines.append(f"(spawning /bin/true from Python: {med(setup['spawn_true_ms']):.2f} ms)")
        b = med(setup["bridge"]["rcrun_net"]["total_ms"])
        lines.append("ratios (rcrun-net total): macvlan/bridge "
                     f"{med(setup['macvlan']['rcrun_net']['total_ms']) / b:.2f}, device/bridge "
                     f"{med(setup['device']['rcrun_net']['total_ms']) / b:.2f}")
        lines.append("")
    data = res.get("data")
    if data:
        lines.append("Data path (container to container; loopback: one netns):")
        lines.append(f"{'mode':<9} {'TCP Gbit/s':>10} {'(min-max)':>13} {'RR p50 us':>10} "
                     f"{'RR p99 us':>10}")
        for m in ("bridge", "macvlan", "device", "loopback"):
            d = data[m]
            t = d["throughput_gbit_s"]
            lines.append(f"{m:<9} {med(t):>10.2f} {t['min']:>6.2f}-{t['max']:<6.2f} "
                         f"{med(d['rr_p50_us']):>10.1f} {med(d['rr_p99_us']):>10.1f}")
        bt, bp50, bp99 = (med(data["bridge"][k]) for k in
                          ("throughput_gbit_s", "rr_p50_us", "rr_p99_us"))
        for m in ("macvlan", "device"):
            d = data[m]
            lines.append(f"{m}/bridge: throughput {med(d['throughput_gbit_s']) / bt:.2f}, "
                         f"RR p50 {med(d['rr_p50_us']) / bp50:.2f}, "
                         f"RR p99 {med(d['rr_p99_us']) / bp99:.2f}")
        lines.append(f"checks: {json.dumps({k: v for k, v in data['checks'].items() if k != 'container_run_ms'})}")
    if markdown:
        lines.append("")
        lines.extend(markdown_tables(res))
    return "\n".join(lines)


def markdown_tables(res: dict) -> list[str]:
    out = []
    data = res.get("data")
    if data:
        out += ["| mode | TCP throughput (Gbit/s, median) | min-max | TCP RR p50 (µs) | "
                "TCP RR p99 (µs) | vs bridge (throughput / p50 / p99) |",
                "|---|---:|---:|---:|---:|---|"]
        b = data["bridge"]
        for m in ("bridge", "macvlan", "device", "loopback"):
            d = data[m]
            t = d["throughput_gbit_s"]
            r = (f"{med(t) / med(b['throughput_gbit_s']):.2f} / "
                 f"{med(d['rr_p50_us']) / med(b['rr_p50_us']):.2f} / "
                 f"{med(d['rr_p99_us']) / med(b['rr_p99_us']):.2f}")
            out.append(f"| {m} | {med(t):.2f} | {t['min']:.2f}-{t['max']:.2f} | "
                       f"{med(d['rr_p50_us']):.1f} | {med(d['rr_p99_us']):.1f} | {r} |")
        out.append("")
    setup = res.get("setup")
    if setup:
        out += ["| mode | rcrun-net attach | detach | total | ip(8) attach | detach | total "
                "(processes) | rcrun-net / ip |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for m in SETUP_MODES:
            lib, ip = setup[m]["rcrun_net"], setup[m]["ip"]
            out.append(
                f"| {m} | {med(lib['attach_ms']):.1f} | {med(lib['detach_ms']):.1f} | "
                f"{med(lib['total_ms']):.1f} | {med(ip['attach_ms']):.1f} | "
                f"{med(ip['detach_ms']):.1f} | {med(ip['total_ms']):.1f} ({ip['processes']}) | "
                f"{med(lib['total_ms']) / med(ip['total_ms']):.2f} |")
    return out


# --- main ------------------------------------------------------------------------------------


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def version(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.split(
            "\n")[0].strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rcrun-net", default=str(REPO / "target/release/rcrun-net"))
    ap.add_argument("--rcrun", default=str(REPO / "target/release/rcrun"))
    ap.add_argument("--busybox", default=shutil.which("busybox") or "/bin/busybox")
    ap.add_argument("--containers", choices=("rcrun", "netns"), default="rcrun",
                    help="real rcrun containers with the hook (default) or unshare'd processes "
                         "attached with rcrun-net attach")
    ap.add_argument("--tag", default=f"{os.getpid() & 0xFFFF:04x}",
                    help="4 hex digits in every name this run makes")
    ap.add_argument("--base-dir", default="/var/tmp",
                    help="the run's store, rcrun root and bundles go in BASE/rcrun-netbench-TAG "
                         "(default /var/tmp: the same disk as /var/lib/rcrun/net)")
    ap.add_argument("--subnet-base", default="10.213", help="first two octets of the subnets")
    ap.add_argument("--seconds", type=int, default=3, help="iperf3 time per repetition")
    ap.add_argument("--reps", type=int, default=3, help="iperf3 and RR repetitions per mode")
    ap.add_argument("--rr-count", type=int, default=20000)
    ap.add_argument("--rr-warmup", type=int, default=2000)
    ap.add_argument("--setup-runs", type=int, default=20)
    ap.add_argument("--setup-warmup", type=int, default=2)
    ap.add_argument("--skip-setup", action="store_true")
    ap.add_argument("--skip-data", action="store_true")
    ap.add_argument("--nice", type=int, default=0,
                    help="run the benchmark and everything it starts at this nice value "
                         "(e.g. -10 on a machine shared with builds)")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", help="default bench/results/net-<UTC>.json")
    ap.add_argument("--cleanup-only", action="store_true",
                    help="undo what a run with --tag made, and exit")
    ap.add_argument("--rr-server", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--rr-client", nargs=2, metavar=("HOST", "PORT"), help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.rr_server is not None:
        rr_server(a.rr_server)
        return 0
    if a.rr_client:
        rr_client(a.rr_client[0], int(a.rr_client[1]), a.rr_count, a.rr_warmup)
        return 0
    if len(a.tag) != 4 or any(c not in "0123456789abcdef" for c in a.tag):
        ap.error("--tag: 4 lower-case hex digits")
    if os.geteuid() != 0:
        ap.error("run as root")
    b = Bench(a)
    if a.cleanup_only:
        b.cleanup()
        return 0

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    for tool in ("iperf3", "nsenter", "unshare", "ip"):
        if not shutil.which(tool):
            ap.error(f"{tool} not found")
    for p in (a.rcrun_net, a.rcrun) if a.containers == "rcrun" else (a.rcrun_net,):
        if not os.access(p, os.X_OK):
            ap.error(f"{p}: not an executable (build it, or pass --rcrun/--rcrun-net)")

    if a.nice:
        os.nice(a.nice)
    started = dt.datetime.now(dt.timezone.utc)
    res: dict = {
        "benchmark": "net",
        "started": started.isoformat(),
        "host": {"kernel": platform.release(), "machine": platform.machine(),
                 "cpus": os.cpu_count(),
                 "cpu": next((ln.split(":", 1)[1].strip() for ln in
                              Path("/proc/cpuinfo").read_text().splitlines()
                              if ln.startswith("model name")), "?")},
        "tools": {"iperf3": version(["iperf3", "--version"]),
                  "ip": version(["ip", "-V"]),
                  "rcrun_net": a.rcrun_net, "rcrun": a.rcrun},
        "config": {k: v for k, v in vars(a).items() if not k.startswith("rr_server")
                   and k != "rr_client"},
        "loadavg_start": loadavg(),
    }
    rc = 0
    try:
        b.cleanup()  # a leftover of an earlier run with the same tag
        b.base.mkdir(parents=True)
        b.make_links()
        b.make_networks()
        if not a.skip_setup:
            res["setup"] = b.bench_setup()
        if not a.skip_data:
            res["data"] = b.bench_data()
    except (Failed, subprocess.TimeoutExpired, json.JSONDecodeError, KeyError) as e:
        log(f"FAILED: {e}")
        res["error"] = str(e)
        rc = 1
    except (KeyboardInterrupt, SystemExit) as e:
        log(f"interrupted ({e!r})")
        res["error"] = f"interrupted: {e!r}"
        rc = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        b.cleanup()
    res["loadavg_end"] = loadavg()
    res["finished"] = dt.datetime.now(dt.timezone.utc).isoformat()
    out = Path(a.json) if a.json else (
        HERE / "results" / f"net-{started.strftime('%Y%m%dT%H%M%SZ')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    try:
        print(report(res, a.markdown))
    except (KeyError, TypeError, ZeroDivisionError) as e:
        log(f"report incomplete ({e!r}); see the JSON")
    print(f"load average start {res['loadavg_start']} end {res['loadavg_end']}; JSON: {out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
