#!/usr/bin/env python3
"""Container lifecycle benchmark: rcrun vs runc vs crun.

Measures, per invocation of the runtime CLI, the wall-clock latency
(time.perf_counter around Popen + os.wait4) and, in separate untimed probe
invocations run under GNU time, the peak RSS (ru_maxrss) of:

  run     `run` of a busybox /bin/true container (create+start+wait+delete)
  create  `create` of a `sleep 1000` container
  start   `start` of that container
  state   `state` of the running container
  delete  `delete` of the container after `kill KILL` + wait-until-stopped
          (kill and the wait are not timed)
  list    `list` with --list-count (default 100) created containers present

Iterations are interleaved: in every iteration each runtime runs the operation
in turn and the order of runtimes rotates every iteration, so drift (page
cache, CPU frequency, background noise) affects all runtimes alike.

Python 3.11 standard library only. Must run as root. See bench/README.md.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import errno
import json
import os
import platform
import random
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_DIR = HERE / "results"

RUNTIME_NAMES = ("rcrun", "runc", "crun")
ALL_OPS = ("run", "create", "start", "state", "exec", "ps", "delete", "list")
TARGET_OPS = ("run", "create", "start", "delete", "state", "exec", "ps")  # rcrun/crun <= 0.9
TARGET_RATIO = 0.9
CGROUP_ROOT = "/sys/fs/cgroup"
UNIFIED = "/sys/fs/cgroup/unified"

# Linux constants (x86_64 / aarch64 share these values).
CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18


def default_rcrun() -> str:
    """The static build scripts/build-release.sh makes, if present; else the plain release build."""
    static = sorted((REPO / "target" / "static").glob("*/release/rcrun"))
    return str(static[0] if static else REPO / "target" / "release" / "rcrun")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# environment preparation
# --------------------------------------------------------------------------


def is_static_elf(path: str) -> bool:
    """True if `path` is an ELF executable without a PT_INTERP segment."""
    try:
        with open(path, "rb") as f:
            ident = f.read(16)
            if ident[:4] != b"\x7fELF":
                return False
            is64 = ident[4] == 2
            end = "<" if ident[5] == 1 else ">"
            if is64:
                f.seek(0x20)
                (phoff,) = struct.unpack(end + "Q", f.read(8))
                f.seek(0x36)
            else:
                f.seek(0x1C)
                (phoff,) = struct.unpack(end + "I", f.read(4))
                f.seek(0x2A)
            phentsize, phnum = struct.unpack(end + "HH", f.read(4))
            for i in range(phnum):
                f.seek(phoff + i * phentsize)
                (ptype,) = struct.unpack(end + "I", f.read(4))
                if ptype == 3:  # PT_INTERP
                    return False
            return True
    except OSError:
        return False


def find_static_busybox() -> str | None:
    for cand in ("/bin/busybox", "/usr/bin/busybox", shutil.which("busybox") or ""):
        if cand and os.path.isfile(cand) and is_static_elf(cand):
            return cand
    return None


def ensure_packages(no_install: bool) -> None:
    """Install busybox-static / runc / crun with apt-get when missing."""
    missing = []
    if find_static_busybox() is None:
        missing.append("busybox-static")
    for name in ("runc", "crun"):
        if shutil.which(name) is None:
            missing.append(name)
    if find_gnu_time() is None:
        missing.append("time")
    if not missing:
        return
    if no_install or shutil.which("apt-get") is None:
        log(f"note: missing packages {missing}; not installing "
            f"({'--no-install' if no_install else 'no apt-get'})")
        return
    log(f"installing missing packages: {' '.join(missing)}")
    cmd = ["apt-get", "install", "-y", "busybox-static", "runc", "crun", "time"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(cmd, env=env).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env)
        if subprocess.run(cmd, env=env).returncode != 0:
            log("warning: apt-get install failed; continuing with what exists")


def mountinfo() -> list[tuple[str, str]]:
    """(mount point, fs type) of every mount of this process."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            mnt = left.split()[4].replace("\\040", " ")
            out.append((mnt, right.split()[0]))
    return out


def describe_cgroups() -> str:
    mounts = [(m, t) for m, t in mountinfo() if m.startswith(CGROUP_ROOT)]
    types = {m: t for m, t in mounts}
    if types.get(CGROUP_ROOT) == "cgroup2":
        return "cgroup v2 (unified)"
    v1 = sorted(os.path.basename(m) for m, t in mounts if t == "cgroup")
    v2 = [m for m, t in mounts if t == "cgroup2"]
    if v1 and v2:
        return f"cgroup v1 hybrid: v1 {','.join(v1)}; cgroup2 at {','.join(v2)}"
    if v1:
        return f"cgroup v1 only: {','.join(v1)}"
    return "unknown"


def enter_private_layout() -> dict:
    """unshare(CLONE_NEWNS) this very process, make / rprivate and unmount the
    cgroup2 hybrid mount. Every runtime spawned afterwards inherits the private
    mount namespace; the host's mounts are untouched."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"unshare(CLONE_NEWNS): {os.strerror(e)}")
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount --make-rprivate /: {os.strerror(e)}")
    unmounted = False
    if any(m == UNIFIED and t == "cgroup2" for m, t in mountinfo()):
        if libc.umount2(UNIFIED.encode(), 0) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"umount {UNIFIED}: {os.strerror(e)}")
        unmounted = True
    return {"unmounted_unified": unmounted, "cgroups": describe_cgroups()}


# --------------------------------------------------------------------------
# runtimes and the timed spawn
# --------------------------------------------------------------------------


class Runtime:
    def __init__(self, name: str, path: str | None, root: str):
        self.name = name
        self.path = path
        self.root = root
        self.available = bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)
        self.reason = "" if self.available else f"binary not found: {path or name}"
        self.version = "?"
        self.ids: set[str] = set()  # ids that may exist under self.root
        self.timeouts = 0
        self.aborted = ""
        if self.available:
            try:
                r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
                self.version = (r.stdout.strip().splitlines() or ["?"])[0]
            except (OSError, subprocess.SubprocessError):
                pass

    def argv(self, *args: str) -> list[str]:
        return [self.path, "--root", self.root, *args]


class Timeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise Timeout()


CURRENT: subprocess.Popen | None = None  # child being timed right now


def kill_tree(pid: int) -> None:
    """SIGKILL pid and all its descendants (found through /proc/*/children):
    killing only GNU time or a wrapper would leave the runtime running."""
    found, stack = [], [pid]
    while stack:
        q = stack.pop()
        found.append(q)
        try:
            for t in os.listdir(f"/proc/{q}/task"):
                with open(f"/proc/{q}/task/{t}/children") as f:
                    stack.extend(int(x) for x in f.read().split())
        except (OSError, ValueError):
            pass
    for q in found:
        try:
            os.kill(q, signal.SIGKILL)
        except OSError:
            pass


def timed(argv: list[str], timeout: float, stderr) -> tuple[float, int]:
    """Spawn argv (Popen, stdio to /dev/null), reap it with os.wait4 and return
    (wall ms, exit code). Exit code -1000: the per-command timeout fired and the
    child was killed."""
    global CURRENT
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=stderr)
        CURRENT = p
        _, status, _ = os.wait4(p.pid, 0)
        t1 = time.perf_counter()
    except Timeout:
        p = CURRENT
        if p is not None:
            kill_tree(p.pid)
            p.wait()
        CURRENT = None
        return timeout * 1000.0, -1000
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    CURRENT = None
    return (t1 - t0) * 1000.0, p.returncode


# Peak RSS. ru_maxrss of a process that was fork()ed/vfork()ed from this
# Python process and then exec()ed is useless: at execve the kernel folds the
# high-water RSS of the pre-exec address space (Python's, ~15 MB with vfork)
# into signal->maxrss, so every runtime "peaks" at Python's size. The runtime
# must be forked by a *small* process that reports wait4()'s ru_maxrss for it:
# GNU time (`time -f %M`, fork+exec+wait4). Its fork floor (measured for a
# static no-op binary) is ~0.5 MiB, below any runtime. The RSS probes are
# separate, untimed invocations so that the timing path stays a plain Popen.
GNU_TIME: str | None = None


def find_gnu_time() -> str | None:
    for cand in ("/usr/bin/time", shutil.which("time") or ""):
        if cand and os.access(cand, os.X_OK):
            r = subprocess.run([cand, "--version"], capture_output=True, text=True)
            if "GNU" in (r.stdout + r.stderr):
                return cand
    return None


def rss_probe(argv: list[str], timeout: float, stderr, outfile: str) -> tuple[int, int]:
    """Run argv under GNU time; return (exit code, peak RSS KiB or 0)."""
    global CURRENT
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        p = subprocess.Popen([GNU_TIME, "-f", "%M", "-o", outfile, *argv],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        CURRENT = p
        p.wait()
    except Timeout:
        p = CURRENT
        if p is not None:
            kill_tree(p.pid)
            p.wait()
        CURRENT = None
        return -1000, 0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    CURRENT = None
    try:
        with open(outfile) as f:
            lines = f.read().split()
        kib = int(lines[-1])
    except (OSError, ValueError, IndexError):
        kib = 0
    return p.returncode, kib


def quiet(argv: list[str], timeout: float = 20.0, capture: bool = False):
    """Untimed helper command; never raises. Only capture output of commands that
    do not leave a container process holding the pipes open (state, list)."""
    try:
        if capture:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=timeout)
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None


# --------------------------------------------------------------------------
# results bookkeeping
# --------------------------------------------------------------------------


def pct(sorted_vals: list[float], q: int) -> float:
    if len(sorted_vals) == 1:
        return sorted_vals[0]
    return statistics.quantiles(sorted_vals, n=100, method="inclusive")[q - 1]


class Series:
    def __init__(self):
        self.ms: list[float] = []
        self.rss: list[int] = []
        self.failures = 0
        self.rss_failures = 0
        self.skipped = 0
        self.examples: list[dict] = []

    def add(self, mode: str, val: float, rc: int, argv: list[str], it: int) -> bool:
        if rc == 0:
            if mode == "time":
                self.ms.append(val)
            elif val > 0:
                self.rss.append(int(val))
            return True
        if mode == "time":
            self.failures += 1
        else:
            self.rss_failures += 1
        if len(self.examples) < 5:
            self.examples.append({"iteration": it, "mode": mode,
                                  "exit": "timeout" if rc == -1000 else rc, "argv": argv})
        return False

    def fail(self, what: str, it: int) -> None:
        self.failures += 1
        if len(self.examples) < 5:
            self.examples.append({"iteration": it, "exit": what})

    def stats(self) -> dict:
        d = {"n_ok": len(self.ms), "failures": self.failures, "skipped": self.skipped,
             "rss_n_ok": len(self.rss), "rss_failures": self.rss_failures}
        if self.ms:
            s = sorted(self.ms)
            d.update(median_ms=statistics.median(s), p10_ms=pct(s, 10), p90_ms=pct(s, 90),
                     mean_ms=statistics.fmean(s), min_ms=s[0], max_ms=s[-1],
                     stdev_ms=statistics.stdev(s) if len(s) > 1 else 0.0)
        if self.rss:
            d.update(rss_max_kib=max(self.rss), rss_median_kib=statistics.median(self.rss))
        return d


# --------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------


class Bench:
    def __init__(self, args, tmp: Path, bundles: dict[str, str], phase: str,
                 runtimes: list[Runtime], excluded: dict[str, str]):
        self.a = args
        self.tmp = tmp
        self.bundles = bundles
        self.phase = phase
        self.runtimes = runtimes          # all requested, available or not
        self.excluded = excluded          # name -> reason (not measured in this phase)
        self.live = [r for r in runtimes if r.available and r.name not in excluded]
        self.series = {op: {r.name: Series() for r in runtimes} for op in ALL_OPS}
        self.notes: list[str] = []
        self.prefix = f"rcb{os.getpid()}{phase[0]}"
        self.rss = GNU_TIME is not None and not args.no_rss
        self.stderr = subprocess.DEVNULL
        if args.stderr_log:
            self.stderr = open(args.stderr_log, "a")

    def cid(self, rt: Runtime, tag: str) -> str:
        return f"{self.prefix}-{rt.name}-{tag}"

    def order(self, i: int) -> list[Runtime]:
        k = len(self.live)
        if k == 0:
            return []
        s = i % k
        return [r for r in self.live[s:] + self.live[:s] if not r.aborted]

    def t(self, rt: Runtime, op: str, it: int, mode: str, *args: str) -> bool:
        """mode: "time" (timed, recorded), "rss" (peak-RSS probe, recorded),
        "warm" (warmup, not recorded)."""
        argv = rt.argv(*args)
        if self.a.stderr_log and self.stderr is not subprocess.DEVNULL:
            self.stderr.write(f"### [{self.phase}] {mode} {op} it={it}: {' '.join(argv)}\n")
            self.stderr.flush()
        if mode == "rss":
            rc, val = rss_probe(argv, self.a.timeout, self.stderr, str(self.tmp / "rss.out"))
        else:
            val, rc = timed(argv, self.a.timeout, self.stderr)
        if rc == -1000:
            self.timed_out(rt, f"{mode} {op}", it)
        if mode == "warm":
            return rc == 0
        return self.series[op][rt.name].add(mode, val, rc, argv, it)

    def q(self, rt: Runtime, *args: str, capture: bool = False):
        """Untimed runtime command; timeouts count towards aborting the runtime."""
        r = quiet(rt.argv(*args), timeout=self.a.timeout, capture=capture)
        if r is None:
            self.timed_out(rt, f"untimed {args[0]}", -1)
        return r

    def timed_out(self, rt: Runtime, what: str, it: int) -> None:
        rt.timeouts += 1
        log(f"[{self.phase}] {rt.name}: {what} timed out after {self.a.timeout:g} s "
            f"(iteration {it})")
        if rt.timeouts >= self.a.max_timeouts and not rt.aborted:
            rt.aborted = (f"{rt.name} stopped being measured after {rt.timeouts} command "
                          f"timeouts (iteration {it}); its figures are partial")
            self.notes.append(rt.aborted)
            log(f"[{self.phase}] warning: {rt.aborted}")

    # -- helpers (untimed) --------------------------------------------------

    def force_delete(self, rt: Runtime, cid: str) -> None:
        r = self.q(rt, "delete", "--force", cid)
        if r is not None and r.returncode == 0:
            rt.ids.discard(cid)  # otherwise the final cleanup tries again

    def exists(self, rt: Runtime, cid: str) -> bool:
        r = self.q(rt, "state", cid, capture=True)
        return r is not None and r.returncode == 0

    def wait_stopped(self, rt: Runtime, cid: str, limit: float = 5.0) -> bool:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            r = self.q(rt, "state", cid, capture=True)
            if r is None:
                return False
            if r.returncode != 0:
                return True  # gone
            try:
                if json.loads(r.stdout).get("status") == "stopped":
                    return True
            except ValueError:
                pass
            time.sleep(0.005)
        return False

    # -- operations ---------------------------------------------------------

    def op_run(self, rt: Runtime, it: int, mode: str) -> None:
        cid = self.cid(rt, f"r{mode[0]}{it}")
        rt.ids.add(cid)
        self.t(rt, "run", it, mode, "run", "-b", self.bundles["true"], cid)
        # `run` must delete the container on exit; anything left is a failure.
        if self.exists(rt, cid):
            if mode != "warm":
                self.series["run"][rt.name].fail(f"[{mode}] container left behind after run", it)
            self.force_delete(rt, cid)
        else:
            rt.ids.discard(cid)

    def op_lifecycle(self, rt: Runtime, it: int, mode: str) -> None:
        cid = self.cid(rt, f"c{mode[0]}{it}")
        S = self.series
        rt.ids.add(cid)
        if not self.t(rt, "create", it, mode, "create", "-b", self.bundles["sleep"], cid):
            if mode == "time":
                for op in ("start", "state", "exec", "ps", "delete"):
                    S[op][rt.name].skipped += 1
            self.force_delete(rt, cid)
            return
        self.t(rt, "start", it, mode, "start", cid)
        self.t(rt, "state", it, mode, "state", cid)
        if "exec" in self.a.ops:
            self.t(rt, "exec", it, mode, "exec", cid, "/bin/true")
        if "ps" in self.a.ops:
            self.t(rt, "ps", it, mode, "ps", "--format", "json", cid)
        # kill + wait for stopped: not timed
        self.q(rt, "kill", cid, "KILL")
        if not self.wait_stopped(rt, cid) and mode != "warm":
            S["delete"][rt.name].fail(f"[{mode}] container not stopped 5 s after kill KILL", it)
        if self.t(rt, "delete", it, mode, "delete", cid) and not self.exists(rt, cid):
            rt.ids.discard(cid)
        else:
            self.force_delete(rt, cid)

    def phase_list(self) -> None:
        n = self.a.list_count
        log(f"[{self.phase}] list: creating {n} containers per runtime (untimed)")
        for rt in self.live:
            bad = 0
            for j in range(n):
                cid = self.cid(rt, f"l{j}")
                rt.ids.add(cid)
                if rt.aborted:
                    break
                r = self.q(rt, "create", "-b", self.bundles["sleep"], cid)
                if r is None or r.returncode != 0:
                    bad += 1
            r = self.q(rt, "list", "-q", capture=True)
            seen = len(r.stdout.split()) if r is not None and r.returncode == 0 else -1
            if bad or seen != n:
                msg = (f"{rt.name}: {bad} of {n} setup creates failed; "
                       f"`list -q` shows {seen} containers (expected {n})")
                self.notes.append(f"list: {msg}")
                self.series["list"][rt.name].fail(msg, -1)
                log("  warning: " + msg)
        try:
            for i in range(self.a.warmup):
                for rt in self.order(i):
                    self.t(rt, "list", i, "warm", "list")
            for i in range(self.a.iterations):
                for rt in self.order(i):
                    self.t(rt, "list", i, "time", "list")
                if self.rss:
                    for rt in self.order(i):
                        self.t(rt, "list", i, "rss", "list")
        finally:
            log(f"[{self.phase}] list: deleting setup containers (untimed)")
            for rt in self.live:
                for j in range(n):
                    if rt.aborted:
                        break
                    self.force_delete(rt, self.cid(rt, f"l{j}"))

    def baseline(self) -> dict:
        """Cost of spawning+reaping a trivial host binary through the same
        Popen/wait4 path: the fixed harness overhead included in every figure."""
        true = shutil.which("true") or "/bin/true"
        vals = []
        for _ in range(max(10, self.a.iterations)):
            ms, rc = timed([true], self.a.timeout, subprocess.DEVNULL)
            if rc == 0:
                vals.append(ms)
        vals.sort()
        d = {"cmd": true, "median_ms": statistics.median(vals), "p10_ms": pct(vals, 10),
             "p90_ms": pct(vals, 90)} if vals else {}
        if self.rss:
            # RSS reported for the static busybox `true`: an upper bound of the
            # GNU-time fork floor (a static no-op measures ~0.5 MiB).
            rc, kib = rss_probe([self.a.busybox, "true"], self.a.timeout, subprocess.DEVNULL,
                                str(self.tmp / "rss.out"))
            d["rss_probe_busybox_true_kib"] = kib
        return d

    def run(self) -> dict:
        ops = self.a.ops
        lifecycle = any(o in ops for o in ("create", "start", "state", "exec", "ps", "delete"))
        t_start = time.monotonic()
        load_start = os.getloadavg()
        if load_start[0] > (os.cpu_count() or 1):
            msg = (f"load average {load_start[0]:.2f} on {os.cpu_count()} CPUs at start: "
                   "the machine is busy, expect noisy figures")
            self.notes.append(msg)
            log(f"[{self.phase}] warning: {msg}")
        if self.live:
            if self.a.warmup:
                log(f"[{self.phase}] warmup: {self.a.warmup} untimed iteration(s)")
            for i in range(self.a.warmup):
                for rt in self.order(i):
                    if "run" in ops:
                        self.op_run(rt, i, "warm")
                    if lifecycle:
                        self.op_lifecycle(rt, i, "warm")
            modes = ["time", "rss"] if self.rss else ["time"]
            for i in range(self.a.iterations):
                if i % 5 == 0 or i == self.a.iterations - 1:
                    log(f"[{self.phase}] iteration {i + 1}/{self.a.iterations} "
                        f"(order: {', '.join(r.name for r in self.order(i))})")
                for mode in modes:
                    if "run" in ops:
                        for rt in self.order(i):
                            self.op_run(rt, i, mode)
                    if lifecycle:
                        for rt in self.order(i):
                            self.op_lifecycle(rt, i, mode)
            if "list" in ops:
                self.phase_list()
        base = self.baseline()
        rss_method = (f"GNU time -f %M ({GNU_TIME}), separate untimed invocations"
                      if self.rss else "off")
        out = {"layout": self.phase, "rss_method": rss_method, "cgroups": describe_cgroups(),
               "baseline_spawn": base,
               "duration_s": round(time.monotonic() - t_start, 1), "notes": self.notes,
               "loadavg_start": [round(x, 2) for x in load_start],
               "loadavg_end": [round(x, 2) for x in os.getloadavg()],
               "runtimes": {}, "operations": {}}
        for rt in self.runtimes:
            status = "measured"
            if not rt.available:
                status = "missing: " + rt.reason
            elif rt.name in self.excluded:
                status = "not measured: " + self.excluded[rt.name]
            out["runtimes"][rt.name] = {"path": rt.path, "version": rt.version, "root": rt.root,
                                        "status": status, "timeouts": rt.timeouts,
                                        "aborted": rt.aborted}
        for op in ALL_OPS:
            if op not in ops:
                continue
            d = {}
            for rt in self.runtimes:
                s = self.series[op][rt.name]
                st = s.stats()
                st["status"] = out["runtimes"][rt.name]["status"]
                st["failure_examples"] = s.examples
                st["samples_ms"] = [round(x, 4) for x in s.ms]
                st["samples_rss_kib"] = s.rss
                d[rt.name] = st
            d["ratios"] = ratios(d)
            out["operations"][op] = d
        return out

    def cleanup(self) -> None:
        cleanup_runtimes(self.live, self.prefix, self.phase == "private")


def bootstrap_ci(a: list[float], b: list[float], n: int = 2000) -> list[float] | None:
    """95% bootstrap interval of median(a)/median(b) (fixed seed: reproducible)."""
    if len(a) < 5 or len(b) < 5:
        return None
    rnd = random.Random(12345)
    med = statistics.median
    vals = sorted(med(rnd.choices(a, k=len(a))) / med(rnd.choices(b, k=len(b)))
                  for _ in range(n))
    return [round(vals[int(0.025 * n)], 3), round(vals[int(0.975 * n) - 1], 3)]


def ratios(d: dict) -> dict:
    r = {}
    m = d.get("rcrun", {}).get("median_ms")
    for other in ("crun", "runc"):
        o = d.get(other, {}).get("median_ms")
        r[f"rcrun/{other}"] = round(m / o, 3) if m and o else None
        r[f"rcrun/{other} ci95"] = (bootstrap_ci(d["rcrun"]["samples_ms"], d[other]["samples_ms"])
                                    if m and o else None)
    rss = d.get("rcrun", {}).get("rss_max_kib")
    crss = d.get("crun", {}).get("rss_max_kib")
    r["rss_max rcrun/crun"] = round(rss / crss, 3) if rss and crss else None
    return r


# --------------------------------------------------------------------------
# cleanup (also on Ctrl-C / SIGTERM)
# --------------------------------------------------------------------------


def our_cgroups(prefix: str) -> list[str]:
    """Top-level cgroup dirs named after our container ids, in every mounted
    cgroup hierarchy. Only real cgroup mounts: in the private layout the
    unmounted /sys/fs/cgroup/unified is a tmpfs dir where crun leaves plain
    files named cgroup.procs holding stale pids, which must never be killed."""
    out = []
    ctrls = [m for m, t in mountinfo()
             if t in ("cgroup", "cgroup2") and os.path.dirname(m) == CGROUP_ROOT]
    for ctrl in ctrls:
        try:
            out.extend(os.path.join(ctrl, n) for n in os.listdir(ctrl)
                       if n.startswith(prefix) and os.path.isdir(os.path.join(ctrl, n)))
        except OSError:
            pass
    return out


def kill_cgroup_members(prefix: str) -> None:
    """Last resort: SIGKILL whatever still lives in cgroups named after our ids
    (e.g. a container whose runtime could not delete it), thawing it first."""
    pids = set()
    for path in our_cgroups(prefix):
        for root, _, files in os.walk(path):
            if "freezer.state" in files:
                try:
                    with open(os.path.join(root, "freezer.state"), "w") as f:
                        f.write("THAWED")
                except OSError:
                    pass
            if "cgroup.procs" in files:
                try:
                    with open(os.path.join(root, "cgroup.procs")) as f:
                        pids.update(int(x) for x in f.read().split())
                except (OSError, ValueError):
                    pass
    pids.discard(os.getpid())
    if not pids:
        return
    desc = []
    for pid in sorted(pids)[:5]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")[:80]
            if not cmd:
                with open(f"/proc/{pid}/comm") as f:
                    cmd = f"[{f.read().strip()}]"
            desc.append(f"{pid}:{cmd}")
        except OSError:
            pass
    log(f"cleanup: killing {len(pids)} leftover process(es) in our containers' cgroups: "
        + "; ".join(desc))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
        time.sleep(0.05)


def cleanup_runtimes(runtimes: list[Runtime], prefix: str, private: bool) -> None:
    global CURRENT
    p = CURRENT
    if p is not None and p.returncode is None:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            kill_tree(p.pid)
            p.wait()
        CURRENT = None
    for rt in runtimes:
        if not rt.available:
            continue
        ids = set(rt.ids)
        r = quiet(rt.argv("list", "-q"), capture=True)
        if r is not None and r.returncode == 0:
            ids.update(x for x in r.stdout.split() if x)
        if ids:
            log(f"cleanup: {rt.name}: delete --force {len(ids)} container(s)")
        # A broken runtime may hang: bound the total time spent on it.
        deadline = time.monotonic() + 120
        for cid in sorted(ids):
            if time.monotonic() > deadline:
                log(f"cleanup: {rt.name}: giving up on delete --force (too slow)")
                break
            quiet(rt.argv("delete", "--force", cid), timeout=10)
            # Still known to the runtime: kill its process by the pid in `state`.
            r = quiet(rt.argv("state", cid), timeout=5, capture=True)
            if r is not None and r.returncode == 0:
                try:
                    pid = int(json.loads(r.stdout).get("pid") or 0)
                except (ValueError, TypeError, AttributeError):
                    pid = 0
                if pid > 1:
                    log(f"cleanup: {rt.name}: {cid} survived delete --force; killing pid {pid}")
                    kill_tree(pid)
        rt.ids.clear()
    time.sleep(0.2)  # let killed processes leave their cgroups
    kill_cgroup_members(prefix)
    # Empty cgroup directories named after our containers (a runtime killed
    # mid-create may leave them) and the plain-tmpfs debris crun 1.8.1 writes
    # to the (unmounted) /sys/fs/cgroup/unified directory in the private layout.
    try:
        ctrls = [os.path.join(CGROUP_ROOT, c) for c in os.listdir(CGROUP_ROOT)]
    except OSError:
        ctrls = []
    for ctrl in ctrls:
        try:
            names = [n for n in os.listdir(ctrl) if n.startswith(prefix)]
        except OSError:
            continue
        for n in names:
            path = os.path.join(ctrl, n)
            if private and ctrl == UNIFIED and not os.path.ismount(UNIFIED):
                shutil.rmtree(path, ignore_errors=True)
                continue
            for root, dirs, _ in os.walk(path, topdown=False):
                for d in dirs:
                    try:
                        os.rmdir(os.path.join(root, d))
                    except OSError:
                        pass
            try:
                os.rmdir(path)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    log(f"cleanup: could not remove cgroup {path}: {e.strerror}")


# --------------------------------------------------------------------------
# bundle
# --------------------------------------------------------------------------


def make_bundles(tmp: Path, busybox: str, spec_tool: str) -> dict[str, str]:
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    bundles = {}
    for name, args in (("true", ["/bin/true"]), ("sleep", ["/bin/sleep", "1000"])):
        b = tmp / f"bundle-{name}"
        bindir = b / "rootfs" / "bin"
        bindir.mkdir(parents=True)
        shutil.copy2(busybox, bindir / "busybox")
        for a in applets:
            if a != "busybox" and "/" not in a:
                os.symlink("busybox", bindir / a)
        subprocess.run([spec_tool, "spec"], cwd=b, check=True, stdout=subprocess.DEVNULL)
        cfg = json.loads((b / "config.json").read_text())
        cfg["process"]["args"] = args
        cfg["process"]["terminal"] = False
        (b / "config.json").write_text(json.dumps(cfg, indent=2))
        bundles[name] = str(b)
    return bundles


# --------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------


def fmt(x, nd=2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def ci(x) -> str:
    return f"[95% CI {x[0]:.2f}-{x[1]:.2f}]" if x else ""


def fmt_kib(x) -> str:
    return "-" if x is None else f"{int(x)}"


OP_TITLES = {
    "run": "run (/bin/true; create+start+wait+delete)",
    "create": "create (sleep 1000)",
    "start": "start",
    "state": "state (running container)",
    "exec": "exec /bin/true (running container)",
    "ps": "ps --format json (running container)",
    "delete": "delete (stopped container)",
    "list": "list ({n} containers present)",
}


def text_report(res: dict, iterations: int, list_count: int) -> str:
    L = []
    for ph in res["phases"]:
        L.append("")
        L.append(f"##### layout: {ph['layout']}  ({ph['cgroups']})  "
                 f"iterations={iterations}  duration={ph['duration_s']}s  "
                 f"loadavg {ph['loadavg_start'][0]} -> {ph['loadavg_end'][0]}")
        for name, rt in ph["runtimes"].items():
            L.append(f"  {name:6} {rt['status']:10}  {rt['version']}  [{rt['path']}]")
            if rt.get("aborted"):
                L.append(f"         ! {rt['aborted']}")
        if ph["baseline_spawn"]:
            b = ph["baseline_spawn"]
            L.append(f"  harness spawn+wait4 baseline ({b['cmd']}): median {b['median_ms']:.3f} ms "
                     f"(included in every figure below)")
            if "rss_probe_busybox_true_kib" in b:
                L.append(f"  peak RSS via {ph['rss_method']}; static busybox true "
                         f"measures {b['rss_probe_busybox_true_kib']} KiB")
        for op, d in ph["operations"].items():
            L.append("")
            L.append(f"== {OP_TITLES[op].format(n=list_count)} ==")
            L.append(f"  {'runtime':8}{'median':>9}{'p10':>9}{'p90':>9}   ms"
                     f"{'ok':>6}{'fail':>6}{'skip':>6}{'RSSmax':>10}{'RSSmed':>10} KiB")
            for name in RUNTIME_NAMES:
                s = d.get(name)
                if s is None:
                    continue
                if s["status"] != "measured":
                    L.append(f"  {name:8}{s['status']}")
                    continue
                L.append(f"  {name:8}{fmt(s.get('median_ms')):>9}{fmt(s.get('p10_ms')):>9}"
                         f"{fmt(s.get('p90_ms')):>9}     {s['n_ok']:>6}{s['failures']:>6}"
                         f"{s['skipped']:>6}{fmt_kib(s.get('rss_max_kib')):>10}"
                         f"{fmt_kib(s.get('rss_median_kib')):>10}")
                if s["rss_failures"]:
                    L.append(f"      {s['rss_failures']} failure(s) in the RSS probes")
                for ex in s["failure_examples"][:2]:
                    L.append(f"      failure: {ex.get('mode', '')} iteration {ex['iteration']} "
                             f"exit={ex['exit']} "
                             f"{' '.join(ex.get('argv', []))}")
            r = d["ratios"]
            verdict = ""
            if op in TARGET_OPS and r["rcrun/crun"] is not None:
                verdict = " target <= 0.9: " + ("met" if r["rcrun/crun"] <= TARGET_RATIO
                                                else "NOT met")
            L.append(f"  rcrun/crun {fmt(r['rcrun/crun'], 3)} {ci(r['rcrun/crun ci95'])}"
                     f"{verdict}   rcrun/runc {fmt(r['rcrun/runc'], 3)} "
                     f"{ci(r['rcrun/runc ci95'])}   "
                     f"peak RSS rcrun/crun {fmt(r['rss_max rcrun/crun'], 3)}")
        for n in ph["notes"]:
            L.append(f"  note: {n}")
    return "\n".join(L)


def markdown_report(res: dict, list_count: int) -> str:
    L = []
    for ph in res["phases"]:
        L.append(f"#### Layout `{ph['layout']}` ({ph['cgroups']}), "
                 f"{res['config']['iterations']} iterations, {res['host']['kernel']}, "
                 f"{res['host']['cpus']} CPUs")
        L.append("")
        vers = ", ".join(f"{n}: {r['version'] if r['status'] == 'measured' else r['status']}"
                         for n, r in ph["runtimes"].items())
        L.append(f"Runtimes: {vers}.")
        L.append("")
        L.append("Median latency in ms (p10–p90); ratios of medians (bootstrap 95% CI); "
                 "peak RSS = max ru_maxrss over the RSS probes, KiB. "
                 f"Load average {ph['loadavg_start'][0]} at start, "
                 f"{ph['loadavg_end'][0]} at end.")
        L.append("")
        L.append("| operation | rcrun | runc | crun | rcrun/crun | rcrun/runc "
                 "| RSS rcrun | RSS runc | RSS crun |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for op, d in ph["operations"].items():
            cells = []
            rss = []
            for name in RUNTIME_NAMES:
                s = d.get(name, {})
                if s.get("status") != "measured":
                    cells.append("n/a")
                    rss.append("n/a")
                elif s.get("median_ms") is None:
                    cells.append(f"all failed ({s['failures']})")
                    rss.append(fmt_kib(s.get("rss_max_kib")))
                else:
                    c = f"{s['median_ms']:.2f} ({s['p10_ms']:.2f}–{s['p90_ms']:.2f})"
                    nf = s["failures"] + s["rss_failures"]
                    if nf:
                        c += f" [{nf} failed]"
                    cells.append(c)
                    rss.append(fmt_kib(s.get("rss_max_kib")))
            r = d["ratios"]
            opname = f"list ({list_count})" if op == "list" else op
            rc, rr = fmt(r["rcrun/crun"]), fmt(r["rcrun/runc"])
            if r["rcrun/crun ci95"]:
                rc += " ({:.2f}–{:.2f})".format(*r["rcrun/crun ci95"])
            if r["rcrun/runc ci95"]:
                rr += " ({:.2f}–{:.2f})".format(*r["rcrun/runc ci95"])
            L.append(f"| {opname} | {' | '.join(cells)} | {rc} | {rr} | {' | '.join(rss)} |")
        L.append("")
    return "\n".join(L)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rcrun", default=default_rcrun(),
                   help="rcrun binary (default: the shipping build from scripts/build-release.sh, "
                        "<repo>/target/static/<host>/release/rcrun, else <repo>/target/release/rcrun)")
    p.add_argument("--runc", default=None, help="runc binary (default: from PATH)")
    p.add_argument("--crun", default=None, help="crun binary (default: from PATH)")
    p.add_argument("--runtimes", default="rcrun,runc,crun",
                   help="comma-separated subset of rcrun,runc,crun (default: all)")
    p.add_argument("-n", "--iterations", type=int, default=30, help="timed iterations (30)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warmup iterations (2)")
    p.add_argument("--ops", default=",".join(ALL_OPS),
                   help=f"comma-separated subset of {','.join(ALL_OPS)} (default: all)")
    p.add_argument("--list-count", type=int, default=100,
                   help="containers present while timing `list` (100)")
    p.add_argument("--layout", choices=("private", "hybrid", "both"), default="private",
                   help="private (default): run in a private mount namespace with the "
                        "cgroup2 hybrid mount unmounted (crun 1.8.1 needs it); hybrid: "
                        "untouched host layout (rcrun and runc only); both: hybrid first, "
                        "then private")
    p.add_argument("--hybrid-runtimes", default="rcrun,runc",
                   help="runtimes measured in the hybrid layout (default rcrun,runc; "
                        "crun 1.8.1 refuses that layout)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="per-command timeout in seconds; a timeout counts as a failure (10)")
    p.add_argument("--max-timeouts", type=int, default=3,
                   help="stop measuring a runtime after this many command timeouts; its "
                        "partial figures are still reported (3)")
    p.add_argument("--markdown", action="store_true", help="also print markdown tables")
    p.add_argument("--json", default=None,
                   help="JSON output path (default bench/results/lifecycle-<timestamp>.json)")
    p.add_argument("--stderr-log", default=None,
                   help="append runtimes' stderr of timed commands to this file "
                        "(default: /dev/null)")
    p.add_argument("--nice", type=int, default=0,
                   help="nice value for the benchmark and the runtimes, e.g. -10 to reduce "
                        "noise from background load on a shared machine (default 0: unchanged)")
    p.add_argument("--no-rss", action="store_true",
                   help="skip the peak-RSS probes (halves the run time)")
    p.add_argument("--no-install", action="store_true",
                   help="do not apt-get install missing busybox-static/runc/crun")
    a = p.parse_args(argv)
    a.ops = [o.strip() for o in a.ops.split(",") if o.strip()]
    bad = [o for o in a.ops if o not in ALL_OPS]
    if bad:
        p.error(f"unknown op(s): {bad}")
    a.runtimes = [r.strip() for r in a.runtimes.split(",") if r.strip()]
    a.hybrid_runtimes = [r.strip() for r in a.hybrid_runtimes.split(",") if r.strip()]
    for r in a.runtimes + a.hybrid_runtimes:
        if r not in RUNTIME_NAMES:
            p.error(f"unknown runtime {r!r}")
    if a.iterations < 1:
        p.error("--iterations must be >= 1")
    return a


def host_info() -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"kernel": f"Linux {platform.release()}", "cpus": os.cpu_count(), "cpu_model": cpu,
            "python": platform.python_version(), "cgroups_host": describe_cgroups()}


def main(argv=None) -> int:
    a = parse_args(argv)
    if os.geteuid() != 0:
        log("error: must run as root (creates namespaces, cgroups, mounts)")
        return 2
    ensure_packages(a.no_install)
    if a.nice:
        os.setpriority(os.PRIO_PROCESS, 0, a.nice)
    busybox = find_static_busybox()
    if busybox is None:
        log("error: no static busybox found (apt-get install busybox-static)")
        return 2
    a.busybox = busybox
    global GNU_TIME
    GNU_TIME = find_gnu_time()
    if GNU_TIME is None and not a.no_rss:
        log("warning: GNU time not found (apt-get install time): peak RSS not measured")

    paths = {"rcrun": a.rcrun, "runc": a.runc or shutil.which("runc"),
             "crun": a.crun or shutil.which("crun")}
    spec_tool = next((paths[n] for n in ("runc", "crun")
                      if paths[n] and os.access(paths[n], os.X_OK)), None)
    if spec_tool is None:
        log("error: neither runc nor crun available to generate config.json (`runc spec`)")
        return 2

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    tmp = Path(tempfile.mkdtemp(prefix="rcrun-bench-"))
    runtimes: list[Runtime] = []
    benches: list[Bench] = []

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGALRM, _on_alarm)
    interrupted = False
    result = None
    try:
        bundles = make_bundles(tmp, busybox, spec_tool)
        for name in a.runtimes:
            root = tmp / f"root-{name}"
            root.mkdir()
            runtimes.append(Runtime(name, paths[name], str(root)))
        for rt in runtimes:
            if not rt.available:
                log(f"warning: {rt.name}: {rt.reason} -- reported as missing")

        phases = {"private": ["private"], "hybrid": ["hybrid"],
                  "both": ["hybrid", "private"]}[a.layout]
        result = {"tool": "bench/lifecycle.py", "timestamp": stamp, "host": host_info(),
                  "config": {"iterations": a.iterations, "warmup": a.warmup, "ops": a.ops,
                             "list_count": a.list_count, "layout": a.layout,
                             "timeout_s": a.timeout, "busybox": busybox,
                             "nice": os.getpriority(os.PRIO_PROCESS, 0),
                             "spec_from": spec_tool},
                  "phases": []}
        for ph in phases:
            layout_info = {}
            if ph == "private":
                layout_info = enter_private_layout()
                log(f"[private] entered private mount namespace; unmounted {UNIFIED}: "
                    f"{layout_info['unmounted_unified']}; now: {layout_info['cgroups']}")
            excluded = {}
            if ph == "hybrid":
                excluded = {n: "excluded from hybrid layout (--hybrid-runtimes)"
                            for n in RUNTIME_NAMES if n not in a.hybrid_runtimes}
            b = Bench(a, tmp, bundles, ph, runtimes, excluded)
            benches.append(b)
            out = b.run()
            b.cleanup()  # in this phase's mount namespace (on interrupt: below)
            out.update(layout_info)
            result["phases"].append(out)
    except KeyboardInterrupt:
        interrupted = True
        log("\ninterrupted -- cleaning up")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for b in benches:
            b.cleanup()
        if not benches:
            cleanup_runtimes(runtimes, f"rcb{os.getpid()}", False)
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    if interrupted or result is None or not result["phases"]:
        return 130 if interrupted else 1

    print(text_report(result, a.iterations, a.list_count))
    if a.markdown:
        print("\n----- markdown -----\n")
        print(markdown_report(result, a.list_count))
    out_path = Path(a.json) if a.json else RESULTS_DIR / f"lifecycle-{stamp}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1))
    print(f"\nJSON: {out_path}")
    total_fail = sum(s.get("failures", 0) for ph in result["phases"]
                     for d in ph["operations"].values()
                     for k, s in d.items() if k != "ratios")
    if total_fail:
        print(f"WARNING: {total_fail} failed runtime command(s); see tables / JSON")
    return 0


if __name__ == "__main__":
    sys.exit(main())
