#!/usr/bin/env python3
"""Container start with and without Docker's seccomp profile: rcrun vs runc vs crun.

Times `run` of a busybox /bin/true container (create+start+wait+delete) for
each runtime, once with the bundle's config.json as `runc spec` makes it (no
`linux.seccomp`) and once with Docker's default profile
(crates/seccomp/tests/data/docker-default.json) as `linux.seccomp`. Reports
median/p10/p90 per runtime and variant, the seccomp cost (median difference)
and the ratios seccomp/plain and rcrun/crun, rcrun/runc.

Same conventions as bench/lifecycle.py, whose functions it uses: every
invocation timed on its own (perf_counter around Popen + wait4, stdio to
/dev/null), iterations interleaved with the runtime order rotating every
iteration (and the plain/seccomp order alternating), a private mount
namespace with /sys/fs/cgroup/unified unmounted (crun 1.8.1 refuses the
hybrid layout). Python 3.11 standard library only. Must run as root.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import lifecycle as lc  # noqa: E402
import subprocess  # noqa: E402

PROFILE = HERE.parent / "crates" / "seccomp" / "tests" / "data" / "docker-default.json"
VARIANTS = ("plain", "seccomp")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rcrun", default=lc.default_rcrun(), help="rcrun binary")
    p.add_argument("--runc", default=None, help="runc binary (default: from PATH)")
    p.add_argument("--crun", default=None, help="crun binary (default: from PATH)")
    p.add_argument("--runtimes", default="rcrun,runc,crun")
    p.add_argument("-n", "--iterations", type=int, default=30)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--json", default=None,
                   help="JSON output (default bench/results/seccomp-<timestamp>.json)")
    p.add_argument("--compile-json", default=None,
                   help="JSON line from the seccomp_bench example, stored with the results")
    p.add_argument("--markdown", action="store_true", help="also print a markdown table")
    p.add_argument("--nice", type=int, default=0,
                   help="nice value for the benchmark and the runtimes (e.g. -10)")
    p.add_argument("--no-install", action="store_true")
    a = p.parse_args(argv)
    a.runtimes = [r.strip() for r in a.runtimes.split(",") if r.strip()]
    return a


def stats(ms: list[float]) -> dict:
    if not ms:
        return {"n_ok": 0}
    s = sorted(ms)
    return {"n_ok": len(s), "median_ms": statistics.median(s), "p10_ms": lc.pct(s, 10),
            "p90_ms": lc.pct(s, 90), "mean_ms": statistics.fmean(s)}


def seccomp_bundle(tmp: Path, plain: str) -> str:
    """A copy of the plain /bin/true bundle with Docker's profile as linux.seccomp."""
    dst = tmp / "bundle-true-seccomp"
    shutil.copytree(plain, dst, symlinks=True)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.setdefault("linux", {})["seccomp"] = json.loads(PROFILE.read_text())
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    return str(dst)


def main(argv=None) -> int:
    a = parse_args(argv)
    if os.geteuid() != 0:
        lc.log("error: must run as root")
        return 2
    lc.ensure_packages(a.no_install)
    if a.nice:
        os.setpriority(os.PRIO_PROCESS, 0, a.nice)
    busybox = lc.find_static_busybox()
    if busybox is None:
        lc.log("error: no static busybox found (apt-get install busybox-static)")
        return 2
    paths = {"rcrun": a.rcrun, "runc": a.runc or shutil.which("runc"),
             "crun": a.crun or shutil.which("crun")}
    spec_tool = next((paths[n] for n in ("runc", "crun")
                      if paths[n] and os.access(paths[n], os.X_OK)), None)
    if spec_tool is None:
        lc.log("error: neither runc nor crun available to generate config.json")
        return 2

    signal.signal(signal.SIGALRM, lc._on_alarm)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    tmp = Path(tempfile.mkdtemp(prefix="rcrun-seccomp-bench-"))
    prefix = f"rcs{os.getpid()}"
    runtimes: list[lc.Runtime] = []
    samples = {(n, v): [] for n in a.runtimes for v in VARIANTS}
    failures = {(n, v): 0 for n in a.runtimes for v in VARIANTS}
    layout = {}
    host = {}
    load = []
    try:
        bundles = lc.make_bundles(tmp, busybox, spec_tool)
        bundles = {"plain": bundles["true"], "seccomp": seccomp_bundle(tmp, bundles["true"])}
        for name in a.runtimes:
            root = tmp / f"root-{name}"
            root.mkdir()
            rt = lc.Runtime(name, paths[name], str(root))
            if not rt.available:
                lc.log(f"warning: {name}: {rt.reason}")
            runtimes.append(rt)
        live = [rt for rt in runtimes if rt.available]
        host = lc.host_info()
        layout = lc.enter_private_layout()
        lc.log(f"private mount namespace; unmounted {lc.UNIFIED}: "
               f"{layout['unmounted_unified']}; now: {layout['cgroups']}")
        load.append(os.getloadavg()[0])

        def one(rt: lc.Runtime, variant: str, it: int, timed: bool) -> None:
            cid = f"{prefix}-{rt.name}-{variant[0]}{it}{'' if timed else 'w'}"
            rt.ids.add(cid)
            ms, rc = lc.timed(rt.argv("run", "-b", bundles[variant], cid), a.timeout,
                              subprocess.DEVNULL)
            r = lc.quiet(rt.argv("state", cid), capture=True)
            left = r is not None and r.returncode == 0
            if left:
                lc.quiet(rt.argv("delete", "--force", cid))
            else:
                rt.ids.discard(cid)
            if not timed:
                return
            if rc == 0 and not left:
                samples[(rt.name, variant)].append(ms)
            else:
                failures[(rt.name, variant)] += 1

        for i in range(a.warmup):
            for rt in live:
                for v in VARIANTS:
                    one(rt, v, i, False)
        for i in range(a.iterations):
            if i % 5 == 0:
                lc.log(f"iteration {i + 1}/{a.iterations}")
            k = i % len(live)
            order = live[k:] + live[:k]
            variants = VARIANTS if i % 2 == 0 else VARIANTS[::-1]
            for rt in order:
                for v in variants:
                    one(rt, v, i, True)
        load.append(os.getloadavg()[0])
    except KeyboardInterrupt:
        lc.log("interrupted")
        return 130
    finally:
        lc.cleanup_runtimes(runtimes, prefix, True)
        shutil.rmtree(tmp, ignore_errors=True)

    res = {"tool": "bench/seccomp.py", "timestamp": stamp, "host": host,
           "iterations": a.iterations, "layout": layout, "loadavg": load,
           "profile": str(PROFILE.relative_to(HERE.parent)), "runtimes": {}}
    if a.compile_json:
        try:
            res["compile_load"] = json.loads(a.compile_json)
        except ValueError:
            pass
    for rt in runtimes:
        d = {"path": rt.path, "version": rt.version, "available": rt.available}
        for v in VARIANTS:
            d[v] = stats(samples[(rt.name, v)])
            d[v]["failures"] = failures[(rt.name, v)]
            d[v]["samples_ms"] = [round(x, 4) for x in samples[(rt.name, v)]]
        p, s = d["plain"].get("median_ms"), d["seccomp"].get("median_ms")
        if p and s:
            d["seccomp_minus_plain_ms"] = round(s - p, 3)
            d["seccomp_over_plain"] = round(s / p, 3)
            d["ci95_seccomp_over_plain"] = lc.bootstrap_ci(samples[(rt.name, "seccomp")],
                                                           samples[(rt.name, "plain")])
        res["runtimes"][rt.name] = d
    rc_ = res["runtimes"].get("rcrun", {})
    for other in ("crun", "runc"):
        o = res["runtimes"].get(other, {})
        for v in VARIANTS:
            m, n = rc_.get(v, {}).get("median_ms"), o.get(v, {}).get("median_ms")
            if m and n:
                res.setdefault("ratios", {})[f"rcrun/{other} {v}"] = round(m / n, 3)

    print(f"\nrun /bin/true, {a.iterations} iterations, load {load[0]:.2f} -> {load[-1]:.2f}, "
          f"{layout.get('cgroups', '?')}")
    for name, d in res["runtimes"].items():
        if not d["available"]:
            print(f"  {name:6} missing")
            continue
        cells = []
        for v in VARIANTS:
            s = d[v]
            if s.get("median_ms") is None:
                cells.append(f"{v}: all failed ({s['failures']})")
            else:
                cells.append(f"{v} {s['median_ms']:.2f} ({s['p10_ms']:.2f}-{s['p90_ms']:.2f})"
                             + (f" [{s['failures']} failed]" if s["failures"] else ""))
        extra = ""
        if "seccomp_minus_plain_ms" in d:
            extra = (f"  seccomp cost {d['seccomp_minus_plain_ms']:+.2f} ms, "
                     f"x{d['seccomp_over_plain']:.3f} {lc.ci(d['ci95_seccomp_over_plain'])}")
        print(f"  {name:6} {d['version'][:24]:24} " + "  ".join(cells) + extra)
    for k, r in res.get("ratios", {}).items():
        print(f"  {k}: {r:.3f}")
    if a.markdown:
        print("\n| runtime | run, no seccomp | run, Docker profile | difference | with/without |")
        print("|---|---:|---:|---:|---:|")
        for name, d in res["runtimes"].items():
            if "seccomp_minus_plain_ms" not in d:
                continue
            pl, se = d["plain"], d["seccomp"]
            ci = d["ci95_seccomp_over_plain"]
            print(f"| {name} | {pl['median_ms']:.2f} ({pl['p10_ms']:.2f}–{pl['p90_ms']:.2f}) "
                  f"| {se['median_ms']:.2f} ({se['p10_ms']:.2f}–{se['p90_ms']:.2f}) "
                  f"| {d['seccomp_minus_plain_ms']:+.2f} | {d['seccomp_over_plain']:.2f}"
                  + (f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci else "") + " |")
    out = Path(a.json) if a.json else lc.RESULTS_DIR / f"seccomp-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"\nJSON: {out}")
    bad = sum(failures.values())
    if bad:
        print(f"WARNING: {bad} failed run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
