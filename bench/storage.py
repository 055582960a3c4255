#!/usr/bin/env python3
"""Layer store benchmark: image import throughput and overlay mount time.

1. Import: one image with a ~200 MB gzip'ed layer of many small files (default 40 000 files
   of 1-8 KiB, half random and half text, in 400 directories, plus 20 files of 1 MiB),
   unpacked by
     rcrun   `rcrun image --store S import LAYOUT`    (verifies both digests, syncfs, commit)
     umoci   `umoci raw unpack --image LAYOUT:bench DIR` (rootfs only: no mtree, no config)
     tar     `tar -xzf layer.tar.gz -C DIR`           (GNU tar; gzip runs in its own process)
   on a tmpfs and on the disk (/var/tmp), N runs each, interleaved with the order of the
   tools rotating every run. rcrun syncs the layer before it commits it; tar and umoci do not,
   so their `sync -f` of the output is timed separately and reported as "+ sync".
   Throughput: uncompressed tar bytes / s and tar entries / s.

2. Mount (run first): images of 1, 10, 50 and 130 layers (busybox plus one small file per layer) in a
   store on the disk; per layer count, `rcrun bundle create` (store container, overlay mount,
   /etc/passwd lookup, config.json) timed end to end, and `mount::mount` alone for the new
   mount API and for mount(2) (crates/storage-overlay2/examples/mount_bench.rs).

"disk" is, by default, a fresh ext4 (with its journal, mkfs defaults) on a loop device with
direct I/O over a sparse file in --disk-dir: every invocation starts from the same empty
filesystem, writes and syncs reach the real disk, and the outputs go with the file. This VM's
root ext4 is a poor target: it has no journal, so ext4 makes every inode allocation skip inodes
freed in the last 60-360 s one at a time (`recently_deleted()` in fs/ext4/ialloc.c; an unpack
right after an `rm -rf` of the previous run's files took 5-10 times longer, whichever tool), and
it is mounted with `discard`, so deleting 100 000s of files takes half an hour.
`--disk-mode dir` measures in --disk-dir itself (outputs kept until the end, and a run waits
until an earlier run's deletions are 360 s old).

Python 3.11 standard library only. Must run as root. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_DIR = HERE / "results"
TOOLS = ("rcrun", "umoci", "tar")
MOUNT_LAYERS = (1, 10, 50, 130)
# ext4 without a journal skips inodes freed in the last RECENTCY_MIN + RECENTCY_DIRTY seconds
# (60 + 300, fs/ext4/ialloc.c): a run started sooner after the previous one's deletions is slowed.
SETTLE_SECONDS = 360
MEDIA_TAR = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TAR_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, **kw)


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


# --------------------------------------------------------------------------
# image generation
# --------------------------------------------------------------------------


def gen_small_files(root: Path, files: int, big: int, seed: int) -> None:
    """`files` files of 1-8 KiB (half random bytes, half text) in dirs of 100, `big` of 1 MiB."""
    r = random.Random(seed)
    text = b"lorem ipsum dolor sit amet, consectetur adipiscing elit " * 200
    for i in range(files):
        d = root / f"d{i // 100:04}"
        if i % 100 == 0:
            d.mkdir(parents=True)
        size = r.randint(1024, 8192)
        half = size // 2
        (d / f"f{i % 100:03}").write_bytes(r.randbytes(half) + text[: size - half])
    for i in range(big):
        (root / f"big{i:02}").write_bytes(r.randbytes(1 << 20))


def tar_dir(src: Path, out: Path) -> None:
    # Sorted and with fixed times: the same content gives the same digest on every run.
    run(["tar", "-C", str(src), "--numeric-owner", "--sort=name", "--mtime=@1700000000",
         "-cf", str(out), "."])


def write_layout(out: Path, layers: list[tuple[Path, str, str]], name: str,
                 cmd: list[str] | None = None) -> None:
    """OCI image layout at `out`; `layers` are (blob file, media type, diff_id), bottom first.
    Blobs are hard-linked, not copied. index.json names the image `name` (ref.name)."""
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> tuple[str, int]:
        d = hashlib.sha256(data).hexdigest()
        (blobs / d).write_bytes(data)
        return "sha256:" + d, len(data)

    descs = []
    for blob, media, _ in layers:
        d = sha256_file(blob)
        target = blobs / d.removeprefix("sha256:")
        if not target.exists():
            os.link(blob, target)
        descs.append({"mediaType": media, "digest": d, "size": blob.stat().st_size})
    cfg = {
        "architecture": arch(), "os": "linux", "created": "2024-01-02T03:04:05Z",
        "config": {"Cmd": cmd or ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [l[2] for l in layers]},
    }
    cd, cn = put(json.dumps(cfg).encode())
    man = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd,
                   "size": cn},
        "layers": descs,
    }
    md, mn = put(json.dumps(man).encode())
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mn,
        "platform": {"architecture": arch(), "os": "linux"},
        "annotations": {"org.opencontainers.image.ref.name": name},
    }]}
    (out / "index.json").write_text(json.dumps(index))
    (out / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')


def make_import_image(src: Path, files: int, big: int) -> dict:
    content = src / "content"
    log(f"generating {files} small + {big} large files ...")
    gen_small_files(content, files, big, seed=1)
    tar = src / "layer.tar"
    tar_dir(content, tar)
    entries = int(subprocess.run(["sh", "-c", f"tar -tf {tar} | wc -l"], check=True,
                                 capture_output=True, text=True).stdout)
    log("gzip -6 ...")
    run(["gzip", "-6", "-n", "-k", str(tar)])
    gz = src / "layer.tar.gz"
    diff_id = sha256_file(tar)
    layout = src / "layout"
    write_layout(layout, [(gz, MEDIA_TAR_GZ, diff_id)], "bench")
    shutil.rmtree(content)
    return {"layout": layout, "gz": gz, "tar_bytes": tar.stat().st_size,
            "gz_bytes": gz.stat().st_size, "entries": entries}


def make_layered_image(work: Path, n: int, busybox: str) -> Path:
    """busybox (+ sh, true) and /etc/passwd, then n-1 layers of one small file each."""
    base = work / f"l{n}-stage-0"
    (base / "bin").mkdir(parents=True)
    (base / "etc").mkdir()
    shutil.copy(busybox, base / "bin" / "busybox")
    for applet in ("sh", "true", "cat", "ls"):
        os.symlink("busybox", base / "bin" / applet)
    (base / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (base / "etc" / "group").write_text("root:x:0:\n")
    layers = []
    for i in range(n):
        stage = base if i == 0 else work / f"l{n}-stage-{i}"
        if i:
            (stage / "layers").mkdir(parents=True)
            (stage / "layers" / f"{i:03}").write_text(f"{i}\n")
        tar = work / f"l{n}-layer-{i}.tar"
        tar_dir(stage, tar)
        layers.append((tar, MEDIA_TAR, sha256_file(tar)))
    layout = work / f"layout-{n}"
    write_layout(layout, layers, f"layers{n}", cmd=["true"])
    return layout


# --------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------


def timed(argv: list[str], **kw) -> float:
    t = time.perf_counter()
    p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kw)
    dt_ = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip()[-500:]}")
    return dt_


def make_loop_fs(args, cleanup: "Cleanup") -> Path:
    """A fresh ext4 on a loop device (direct I/O) over a sparse file in --disk-dir."""
    d = Path(tempfile.mkdtemp(prefix="rcrun-bench-disk-", dir=args.disk_dir))
    cleanup.dirs.append(d)
    img = d / "ext4.img"
    with open(img, "wb") as f:
        f.truncate(args.disk_size_gb << 30)
    # -i 4096: one inode per 4 KiB, the outputs of every run (40 000 files each) must fit.
    run(["mkfs.ext4", "-q", "-F", "-i", "4096", "-E", "nodiscard", str(img)])
    dev = subprocess.run(["losetup", "--direct-io=on", "--find", "--show", str(img)], check=True,
                         capture_output=True, text=True).stdout.strip()
    cleanup.loops.append(dev)
    mnt = d / "mnt"
    mnt.mkdir()
    run(["mount", dev, str(mnt)])
    cleanup.mounts.append(mnt)
    return mnt


def settle(args) -> None:
    """Wait until the deletions of an earlier run on the disk are SETTLE_SECONDS old."""
    mark = Path(args.disk_dir) / ".rcrun-bench-storage-deleted"
    if args.no_settle or args.disk_mode != "dir" or not mark.exists():
        return
    wait = SETTLE_SECONDS - (time.time() - mark.stat().st_mtime)
    if wait > 0:
        log(f"waiting {wait:.0f} s: an earlier run deleted its outputs on {args.disk_dir} "
            f"(ext4 without a journal skips recently freed inodes; --no-settle to skip)")
        time.sleep(wait)


def mark_deleted(args) -> None:
    (Path(args.disk_dir) / ".rcrun-bench-storage-deleted").touch()


def import_runs(args, img: dict, fs_name: str, base: Path) -> dict:
    """N runs of each tool on one filesystem, order rotating; outputs kept until the end."""
    res = {t: {"seconds": [], "sync_seconds": [], "failures": []} for t in TOOLS}
    order = list(TOOLS)
    for i in range(args.runs):
        for tool in order:
            out = base / f"{tool}-{i}"
            if tool == "rcrun":
                argv = [args.rcrun, "image", "--store", str(out), "import", str(img["layout"])]
            elif tool == "umoci":
                argv = [args.umoci, "raw", "unpack", "--image", f"{img['layout']}:bench", str(out)]
            else:
                out.mkdir()
                argv = ["tar", "-xzf", str(img["gz"]), "-C", str(out)]
            # Start from a quiet disk: no dirty pages of the previous run.
            os.sync()
            try:
                secs = timed(argv)
                sync = 0.0 if tool == "rcrun" else timed(["sync", "-f", str(out)])
            except RuntimeError as e:
                log(f"  {fs_name} run {i + 1}/{args.runs} {tool:5}: FAILED: {e}")
                res[tool]["failures"].append(str(e))
                continue
            res[tool]["seconds"].append(secs)
            res[tool]["sync_seconds"].append(sync)
            log(f"  {fs_name} run {i + 1}/{args.runs} {tool:5}: {secs:6.2f} s"
                + (f" (+ sync {sync:.2f} s)" if tool != "rcrun" else ""))
        order = order[1:] + order[:1]
    for tool, r in res.items():
        if not r["seconds"]:
            raise RuntimeError(f"{fs_name}: every {tool} run failed: {r['failures'][:1]}")
        med = statistics.median(r["seconds"])
        med_sync = statistics.median(a + b for a, b in zip(r["seconds"], r["sync_seconds"]))
        r.update({
            "median_s": med,
            "median_with_sync_s": med_sync,
            "mb_per_s": img["tar_bytes"] / 1e6 / med,
            "files_per_s": img["entries"] / med,
            "mb_per_s_with_sync": img["tar_bytes"] / 1e6 / med_sync,
        })
    return res


def mount_runs(args, store: Path, work: Path) -> dict:
    out = {}
    for n in MOUNT_LAYERS:
        layout = make_layered_image(work, n, args.busybox)
        timed([args.rcrun, "image", "--store", str(store), "import", "--name", f"layers{n}",
               str(layout)])
        creates = []
        for i in range(args.mount_runs):
            d = work / f"bundle-{n}-{i}"
            creates.append(timed([args.rcrun, "bundle", "--store", str(store), "create",
                                  "--image", f"layers{n}", "--name", f"b{n}-{i}", str(d)]) * 1e3)
            timed([args.rcrun, "bundle", "rm", str(d)])
        r = {"bundle_create_ms": creates, "bundle_create_ms_median": statistics.median(creates)}
        if args.mount_bench:
            p = subprocess.run([args.mount_bench, str(store), f"layers{n}", str(args.mount_runs)],
                               check=True, capture_output=True, text=True)
            r["mount"] = json.loads(p.stdout)
        out[str(n)] = r
        mb = r.get("mount", {})
        log(f"  {n:3} layers: bundle create {r['bundle_create_ms_median']:.1f} ms, mount "
            f"new API {fmt_ms(mb.get('new_api', {}).get('mount_ms_median'))}, "
            f"mount(2) {fmt_ms(mb.get('legacy', {}).get('mount_ms_median'))}")
    return out


def fmt_ms(v) -> str:
    return "n/a" if v is None else f"{v:.2f} ms"


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------


def report(results: dict, markdown: bool) -> None:
    if results.get("import"):
        report_import(results, markdown)
    if results.get("mount"):
        report_mount(results, markdown)


def report_import(results: dict, markdown: bool) -> None:
    img = results["image"]
    print(f"\nImport: layer tar {img['tar_bytes'] / 1e6:.1f} MB ({img['entries']} entries), "
          f"gzip {img['gz_bytes'] / 1e6:.1f} MB; median of {results['config']['runs']} runs")
    rows = []
    for fs_name, res in results["import"].items():
        tar_med = res["tar"]["median_s"]
        tar_sync = res["tar"]["median_with_sync_s"]
        for tool in TOOLS:
            r = res[tool]
            rows.append((fs_name, tool, r["median_s"], r["median_with_sync_s"], r["mb_per_s"],
                         r["files_per_s"], tar_med / r["median_s"], tar_sync / r["median_with_sync_s"]))
    hdr = ("fs", "tool", "median s", "+ sync s", "MB/s", "files/s", "speed vs tar", "vs tar (+sync)")
    print(" ".join(f"{h:>14}" for h in hdr))
    for row in rows:
        print(f"{row[0]:>14} {row[1]:>14} {row[2]:14.2f} {row[3]:14.2f} {row[4]:14.1f} "
              f"{row[5]:14.0f} {row[6]:14.2f} {row[7]:14.2f}")
    if markdown:
        print("\n| fs | tool | median s | with sync s | MB/s | files/s | speed vs tar -xzf | vs tar + sync |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for row in rows:
            print(f"| {row[0]} | {row[1]} | {row[2]:.2f} | {row[3]:.2f} | {row[4]:.1f} | "
                  f"{row[5]:.0f} | {row[6]:.2f} | {row[7]:.2f} |")


def report_mount(results: dict, markdown: bool) -> None:
    print("\nMount (store on disk), medians in ms:")
    lines = []
    for n, r in results["mount"].items():
        m = r.get("mount", {})
        na, lg = m.get("new_api", {}), m.get("legacy", {})
        lines.append((n, r["bundle_create_ms_median"], na.get("mount_ms_median"),
                      na.get("unmount_ms_median"), lg.get("mount_ms_median"),
                      lg.get("error")))
    print(f"{'layers':>6} {'bundle create':>14} {'mount new API':>14} {'unmount':>10} "
          f"{'mount(2)':>10}")
    for n, bc, na, un, lg, err in lines:
        print(f"{n:>6} {bc:14.1f} {fmt_ms(na):>14} {fmt_ms(un):>10} {fmt_ms(lg):>10}"
              + (f"  ({err})" if err else ""))
    if markdown:
        print("\n| layers | `bundle create` | mount (new API, `lowerdir+`) | unmount | mount (`mount(2)`) |")
        print("|---:|---:|---:|---:|---:|")
        for n, bc, na, un, lg, _ in lines:
            print(f"| {n} | {bc:.1f} | {fmt_ms(na)} | {fmt_ms(un)} | {fmt_ms(lg)} |")


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


class Cleanup:
    def __init__(self) -> None:
        self.mounts: list[Path] = []
        self.loops: list[str] = []
        self.dirs: list[Path] = []

    def __call__(self) -> None:
        for m in reversed(self.mounts):
            subprocess.run(["umount", str(m)], stderr=subprocess.DEVNULL)
        for dev in self.loops:
            subprocess.run(["losetup", "-d", dev], stderr=subprocess.DEVNULL)
        for d in self.dirs:
            # bundle rm failed somewhere: never delete through a live mount
            live = [l.split()[4] for l in Path("/proc/self/mountinfo").read_text().splitlines()
                    if l.split()[4].startswith(str(d))]
            for m in sorted(live, reverse=True):
                subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)
            shutil.rmtree(d, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rcrun", default=str(REPO / "target" / "release" / "rcrun"))
    ap.add_argument("--umoci", default=shutil.which("umoci") or "umoci")
    ap.add_argument("--mount-bench", default=None,
                    help="the mount_bench example binary (mount::mount timings)")
    ap.add_argument("--busybox", default="/bin/busybox")
    ap.add_argument("-n", "--runs", type=int, default=5)
    ap.add_argument("--mount-runs", type=int, default=20)
    ap.add_argument("--files", type=int, default=40000)
    ap.add_argument("--big-files", type=int, default=20)
    ap.add_argument("--fs", default="tmpfs,disk", help="tmpfs, disk or both")
    ap.add_argument("--disk-dir", default="/var/tmp")
    ap.add_argument("--disk-mode", choices=("loop", "dir"), default="loop",
                    help="loop: a fresh ext4 on a loop device in --disk-dir (default); "
                         "dir: --disk-dir itself")
    ap.add_argument("--disk-size-gb", type=int, default=12)
    ap.add_argument("--no-settle", action="store_true",
                    help="do not wait for an earlier run's deletions on the disk to age")
    ap.add_argument("--skip-import", action="store_true")
    ap.add_argument("--skip-mount", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if os.geteuid() != 0:
        log("must run as root (overlay mounts, owners in the layer)")
        return 2
    for tool in (args.rcrun, args.umoci, "tar", "gzip"):
        if not shutil.which(tool) and not Path(tool).exists():
            log(f"missing: {tool}")
            return 2

    cleanup = Cleanup()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    results: dict = {
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": {"kernel": platform.release(), "cpus": os.cpu_count(),
                 "loadavg_start": os.getloadavg()},
        "config": {"runs": args.runs, "mount_runs": args.mount_runs, "files": args.files,
                   "big_files": args.big_files, "rcrun": args.rcrun,
                   "umoci": subprocess.run([args.umoci, "--version"], capture_output=True,
                                           text=True).stdout.strip(),
                   "tar": subprocess.run(["tar", "--version"], capture_output=True,
                                         text=True).stdout.splitlines()[0]},
    }
    try:
        work = Path(tempfile.mkdtemp(prefix="rcrun-bench-storage-"))
        cleanup.dirs.append(work)
        tmpfs = work / "tmpfs"
        tmpfs.mkdir()
        run(["mount", "-t", "tmpfs", "-o", "size=8g", "tmpfs", str(tmpfs)])
        cleanup.mounts.append(tmpfs)
        src = tmpfs / "src"
        src.mkdir()
        disk_root = make_loop_fs(args, cleanup) if args.disk_mode == "loop" else Path(args.disk_dir)
        results["config"]["disk"] = (f"ext4 on a loop device (direct I/O) in {args.disk_dir}"
                                     if args.disk_mode == "loop" else str(disk_root))
        if not args.skip_mount:
            settle(args)
            disk = Path(tempfile.mkdtemp(prefix="rcrun-bench-mount-", dir=disk_root))
            cleanup.dirs.append(disk)
            log(f"mount time by layer count (store on disk: {disk})")
            results["mount"] = mount_runs(args, disk / "store", disk)
            # Small: a few thousand inodes, no need to let them age before the import runs.
            shutil.rmtree(disk, ignore_errors=True)
        if not args.skip_import:
            img = make_import_image(src, args.files, args.big_files)
            results["image"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in img.items()}
            results["import"] = {}
            for fs_name in args.fs.split(","):
                if fs_name == "tmpfs":
                    base = tmpfs / "out"
                else:
                    settle(args)
                    base = Path(tempfile.mkdtemp(prefix="rcrun-bench-storage-", dir=disk_root))
                    cleanup.dirs.append(base)
                base.mkdir(exist_ok=True)
                log(f"import on {fs_name} ({base})")
                results["import"][fs_name] = import_runs(args, img, fs_name, base)
                if fs_name == "tmpfs":
                    shutil.rmtree(base, ignore_errors=True)
        results["host"]["loadavg_end"] = os.getloadavg()
        report(results, args.markdown)
        RESULTS_DIR.mkdir(exist_ok=True)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = Path(args.json) if args.json else RESULTS_DIR / f"storage-{stamp}.json"
        path.write_text(json.dumps(results, indent=1, default=str))
        log(f"JSON: {path}")
    finally:
        # Last: on a disk mounted with `discard` (this VM's root) every freed extent is
        # discarded synchronously, and removing the disk runs' ~100 000s of files takes minutes.
        log("removing the outputs ...")
        cleanup()
        if args.disk_mode == "dir" and not args.skip_import and "disk" in args.fs.split(","):
            mark_deleted(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
